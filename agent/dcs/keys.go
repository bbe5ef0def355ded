// Package dcs is the only agent package that talks to etcd: the cluster
// keyspace, the agent's session (one lease), the bootstrap and failover locks
// and the compare-and-swap writes that make leadership safe.
//
// Keyspace (docs/keyspace.md), under Prefix(namespace, project, cluster):
//
//	initialize        system identifier; create-if-absent bootstrap marker (no lease)
//	term              current term, a decimal number (no lease)
//	leader            LeaderRecord bound to the primary's lease
//	optime            last LSN the primary reported (no lease); survives the leader key
//	members/{node}    Member bound to that agent's lease
//	state             the whitepaper's cluster document (no lease)
//	sync              SyncState: who may be promoted in synchronous mode (no lease)
//	switchover        Switchover request / hand-over record (no lease)
//	spec              Spec: the cluster as the control plane wants it (no lease; read only)
//	history/{term}    HistoryRecord, one per primary change (no lease)
//	locks/bootstrap   concurrency.Mutex prefix
//	locks/failover    concurrency.Mutex prefix
//	locks/backup/{job}/{occurrence}  backup occurrence claim (see Client.Claim)
//	backup/requests/{id}             on-demand backup / WAL-switch request (control plane)
//	locks/backup/request/{id}        claim of one on-demand request
package dcs

import (
	"fmt"
	"strconv"
	"strings"
)

// Root is the prefix of every dbpilot key in etcd.
const Root = "/dbpilot/v1/clusters/"

// Keys computes the etcd keys of one cluster.
type Keys struct{ prefix string }

// NewKeys returns the keys of cluster namespace/project/name. The project is
// part of the path so two projects of one namespace may reuse a cluster name.
func NewKeys(namespace, project, cluster string) Keys {
	return Keys{prefix: fmt.Sprintf("%s%s/%s/%s/", Root, namespace, project, cluster)}
}

// Prefix is the cluster prefix, ending in "/".
func (k Keys) Prefix() string { return k.prefix }

// Initialize is the bootstrap marker key.
func (k Keys) Initialize() string { return k.prefix + "initialize" }

// Term is the current-term key.
func (k Keys) Term() string { return k.prefix + "term" }

// Leader is the leader key.
func (k Keys) Leader() string { return k.prefix + "leader" }

// Optime is the key holding the primary's last reported LSN.
func (k Keys) Optime() string { return k.prefix + "optime" }

// Members is the prefix of all member keys.
func (k Keys) Members() string { return k.prefix + "members/" }

// Member is one member's key.
func (k Keys) Member(node string) string { return k.Members() + node }

// State is the cluster document key.
func (k Keys) State() string { return k.prefix + "state" }

// Sync is the synchronous-standby record key.
func (k Keys) Sync() string { return k.prefix + "sync" }

// Switchover is the switchover request key.
func (k Keys) Switchover() string { return k.prefix + "switchover" }

// Spec is the key the control plane writes the desired cluster into (see
// Spec); agents only read it.
func (k Keys) Spec() string { return k.prefix + "spec" }

// History is the key of the history record of term.
func (k Keys) History(term uint64) string {
	return fmt.Sprintf("%shistory/%020d", k.prefix, term)
}

// HistoryPrefix is the prefix of all history records.
func (k Keys) HistoryPrefix() string { return k.prefix + "history/" }

// BootstrapLock is the bootstrap mutex prefix.
func (k Keys) BootstrapLock() string { return k.prefix + "locks/bootstrap" }

// FailoverLock is the failover mutex prefix.
func (k Keys) FailoverLock() string { return k.prefix + "locks/failover" }

// MemberName returns the node name of a member key, or "" if key is not one.
func (k Keys) MemberName(key string) string {
	rest, ok := strings.CutPrefix(key, k.Members())
	if !ok || strings.Contains(rest, "/") {
		return ""
	}
	return rest
}

func parseTerm(b []byte) (uint64, error) {
	if len(b) == 0 {
		return 0, nil
	}
	t, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("term key holds %q: %w", b, err)
	}
	return t, nil
}

// BackupRequests is the prefix of on-demand backup requests the control
// plane writes: backup/requests/{id}.
func (k Keys) BackupRequests() string { return k.prefix + "backup/requests/" }

// BackupRequestClaim is the key that makes one agent run one on-demand
// request: locks/backup/request/{id}.
func (k Keys) BackupRequestClaim(id string) string { return k.prefix + "locks/backup/request/" + id }

// BackupClaim is the key that makes one agent run one occurrence of a
// backup job: locks/backup/{job}/{occurrence as Unix seconds}.
func (k Keys) BackupClaim(job string, occurrenceUnix int64) string {
	return fmt.Sprintf("%slocks/backup/%s/%d", k.prefix, job, occurrenceUnix)
}
