package controlplane

import (
	"context"
	"fmt"

	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/proto"
	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// Live is one consistent read of a cluster's keyspace as the workflows
// and the API use it: the documents are proto/keyspace's, read through
// agent/dcs/admin. Only valid names reach it: a leader or member key
// naming a node that could not have been provisioned, or whose value does
// not decode, is left out (and listed in Errors when it did not decode).
type Live struct {
	Revision int64
	Leader   *keyspace.LeaderRecord
	// Members by node name; Member.Revision is the etcd revision that last
	// wrote the key: a live agent rewrites it every health interval, a
	// dead agent's key keeps its last revision until its lease expires.
	Members    map[string]keyspace.Member
	Switchover bool
	// Errors are the values that did not decode, each a
	// *keyspace.DecodeError naming its key.
	Errors []error
}

// liveOf keeps what the control plane may act on from a snapshot.
func liveOf(keys keyspace.Keys, s keyspace.Snapshot) Live {
	l := Live{Revision: s.Revision, Members: map[string]keyspace.Member{}, Switchover: s.Switchover != nil, Errors: s.Errors}
	// A leader naming no valid node is no leader: node names from etcd
	// are as untrusted as any agent's input.
	if s.Leader != nil && s.Err(keys.Leader()) == nil && proto.ValidName(s.Leader.Node) {
		l.Leader = s.Leader
	}
	for name, m := range s.Members {
		// Only members whose key and value name the same valid node: a
		// name that could not have been provisioned never reaches the
		// workflow, the API or a provider.
		if s.Err(keys.Member(name)) == nil && proto.ValidName(name) && (m.Node == "" || m.Node == name) {
			l.Members[name] = m
		}
	}
	return l
}

// readLive reads the cluster's keyspace once.
func readLive(ctx context.Context, adm *admin.Admin, keys keyspace.Keys) (Live, error) {
	s, err := adm.Read(ctx, keys)
	if err != nil {
		return Live{}, err
	}
	return liveOf(keys, s), nil
}

// readyProblem returns "" when the cluster runs with a primary holding the
// leader key and every wanted node as a healthy running member, replicas
// streaming; otherwise a sentence saying what is missing.
func (l Live) readyProblem(nodes []string) string {
	if l.Leader == nil {
		return "no primary yet"
	}
	ready := 0
	for _, n := range nodes {
		m, ok := l.Members[n]
		switch {
		case !ok:
		case !m.Healthy || m.State != "running":
		case n != l.Leader.Node && (m.Role != "replica" || !m.Streaming):
		case n == l.Leader.Node && m.Role != "primary":
		default:
			ready++
		}
	}
	if ready < len(nodes) {
		return fmt.Sprintf("%d of %d nodes ready", ready, len(nodes))
	}
	return ""
}

// syncProblem returns "" when the primary reports synchronous_mode mode
// in effect: its member key carries the mode, and with "on" its commits
// wait for a standby of the sync key as soon as one of nodes is a healthy
// replica streaming from it that may be a synchronous standby (the agents'
// rule: not nofailover, priority > 0); with "off" they no longer wait.
// Otherwise a sentence saying what is missing.
func (l Live) syncProblem(mode string, nodes []string) string {
	if l.Leader == nil {
		return "no primary"
	}
	name := l.Leader.Node
	p, ok := l.Members[name]
	switch {
	case !ok:
		return "the primary " + name + " has no member key"
	case p.SynchronousMode != mode:
		return fmt.Sprintf("the primary %s still acts under synchronous_mode %q", name, p.SynchronousMode)
	case mode == "off" && p.Synchronous:
		return "the primary " + name + " still waits for synchronous standbys"
	case mode == "on" && !p.Synchronous:
		for _, n := range nodes {
			if m, ok := l.Members[n]; ok && n != name && m.Role == "replica" && m.Healthy && m.Streaming && !m.NoFailover && m.Priority > 0 {
				return fmt.Sprintf("the primary %s does not wait for a synchronous standby yet (%s streams)", name, n)
			}
		}
	}
	return ""

}

// writtenAfter returns l with only the member keys written after etcd
// revision rev (0: all of them): what agents alive since rev reported.
func (l Live) writtenAfter(rev int64) Live {
	if rev <= 0 {
		return l
	}
	out := l
	out.Members = make(map[string]keyspace.Member, len(l.Members))
	for n, m := range l.Members {
		if m.Revision > rev {
			out.Members[n] = m
		}
	}
	return out
}

// ReadyCount is the number of nodes ready as readyProblem defines it.
func (l Live) ReadyCount(nodes []string) int {
	n := 0
	for _, name := range nodes {
		if (Live{Leader: l.Leader, Members: l.Members}).readyProblem([]string{name}) == "" {
			n++
		}
	}
	return n
}

// ReadLive reads the live keyspace of cluster namespace/project/cluster
// through adm. Errors: the etcd read failed.
func ReadLive(ctx context.Context, adm *admin.Admin, namespace, project, cluster string) (Live, error) {
	return readLive(ctx, adm, keyspace.NewKeys(namespace, project, cluster))
}
