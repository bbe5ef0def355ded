package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dbpilot/dbpilot/proto"
)

// keyRoot is the agents' keyspace root (docs/keyspace.md). The control
// plane does not import agent/dcs; it reads the documented JSON.
const keyRoot = "/dbpilot/v1/clusters/"

func clusterPrefix(ns, project, cluster string) string {
	return keyRoot + ns + "/" + project + "/" + cluster + "/"
}

// LiveMember is a member key as the control plane reads it.
type LiveMember struct {
	Node      string `json:"node"`
	Role      string `json:"role"`
	State     string `json:"state"`
	Healthy   bool   `json:"healthy"`
	Streaming bool   `json:"streaming"`
	LSN       uint64 `json:"lsn"`
	Timeline  uint32 `json:"timeline"`
	LagBytes  int64  `json:"lag_bytes"`
	// LagSeconds is the replica's replay lag in time; nil from agents that
	// do not report it.
	LagSeconds *float64 `json:"lag_seconds"`
	NoFailover bool     `json:"nofailover"`
	Priority   int      `json:"priority"`
	// SynchronousMode is the synchronous_mode the agent acts under (the
	// spec key's, else its local configuration's); "" from older agents.
	SynchronousMode string `json:"synchronous_mode"`
	// Synchronous: a primary whose commits wait for a standby of the sync key.
	Synchronous bool  `json:"synchronous"`
	UpdatedMS   int64 `json:"updated_ms"`
	// ModRevision is the etcd revision that last wrote the key (not part
	// of the JSON): a live agent rewrites it every health interval, a dead
	// agent's key keeps its last revision until its lease expires.
	ModRevision int64 `json:"-"`
}

// LiveLeader is the leader key as the control plane reads it.
type LiveLeader struct {
	Node     string `json:"node"`
	Term     uint64 `json:"term"`
	Timeline uint32 `json:"timeline"`
	Since    int64  `json:"since_ms"`
}

// Live is one consistent read of a cluster's keyspace.
type Live struct {
	Revision   int64
	Leader     *LiveLeader
	Members    map[string]LiveMember
	Switchover bool
}

// Desired is the spec key the control plane writes (docs/keyspace.md,
// "spec"). The agents act on SynchronousMode (it overrides their local
// synchronous_mode, applied live by the primary) and Nodes (a node not
// listed is being removed: no failover candidate, switchover target or new
// synchronous standby); the other fields are informational.
type Desired struct {
	Replicas        int      `json:"replicas"`
	SynchronousMode string   `json:"synchronous_mode"`
	Engine          string   `json:"engine"`
	Version         string   `json:"version"`
	Template        string   `json:"template"`
	Plan            string   `json:"plan"`
	Nodes           []string `json:"nodes"`
	UpdatedMS       int64    `json:"updated_ms"`
}

// readLive reads the cluster prefix once.
func readLive(ctx context.Context, cli *clientv3.Client, prefix string) (Live, error) {
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return Live{}, fmt.Errorf("read %s: %w", prefix, err)
	}
	l := Live{Revision: resp.Header.Revision, Members: map[string]LiveMember{}}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), prefix)
		switch {
		case rest == "leader":
			var ld LiveLeader
			// A leader naming no valid node is no leader: node names
			// from etcd are as untrusted as any agent's input.
			if json.Unmarshal(kv.Value, &ld) == nil && proto.ValidName(ld.Node) {
				l.Leader = &ld
			}
		case rest == "switchover":
			l.Switchover = true
		case strings.HasPrefix(rest, "members/"):
			var m LiveMember
			name := strings.TrimPrefix(rest, "members/")
			// Only members whose key and value name the same valid node:
			// a name that could not have been provisioned never reaches
			// the workflow, the API or a provider.
			if json.Unmarshal(kv.Value, &m) == nil && proto.ValidName(name) && (m.Node == "" || m.Node == name) {
				m.ModRevision = kv.ModRevision
				l.Members[name] = m
			}
		}
	}
	return l, nil
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
	out.Members = make(map[string]LiveMember, len(l.Members))
	for n, m := range l.Members {
		if m.ModRevision > rev {
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

// writeSpec puts the desired spec key.
func writeSpec(ctx context.Context, cli *clientv3.Client, prefix string, d Desired) error {
	d.UpdatedMS = time.Now().UnixMilli()
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	if _, err := cli.Put(ctx, prefix+"spec", string(b)); err != nil {
		return fmt.Errorf("write spec: %w", err)
	}
	return nil
}

// requestSwitchover writes a switchover request unless one is pending
// (CreateRevision guard, docs/keyspace.md). It reports whether it wrote.
func requestSwitchover(ctx context.Context, cli *clientv3.Client, prefix, from, to, reason string) (bool, error) {
	key := prefix + "switchover"
	b, _ := json.Marshal(map[string]any{"from": from, "to": to, "state": "requested", "reason": reason, "requested_ms": time.Now().UnixMilli()})
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return false, fmt.Errorf("request switchover: %w", err)
	}
	return resp.Succeeded, nil
}

// deletePrefix removes a deleted cluster's keyspace.
func deletePrefix(ctx context.Context, cli *clientv3.Client, prefix string) error {
	if _, err := cli.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
		return fmt.Errorf("delete %s: %w", prefix, err)
	}
	return nil
}

// ReadLive reads the live keyspace of cluster namespace/project/cluster.
func ReadLive(ctx context.Context, cli *clientv3.Client, namespace, project, cluster string) (Live, error) {
	return readLive(ctx, cli, clusterPrefix(namespace, project, cluster))
}
