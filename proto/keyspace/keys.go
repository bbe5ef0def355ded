// Package keyspace is dbpilot's etcd contract: every key under a cluster's
// prefix, the JSON (or plain text) document each key holds, and the decode
// functions that turn a stored value into a document or into an error
// naming the key. It imports no etcd package: agent/dcs (the agent's
// session side) and agent/dcs/admin (the control plane, the CLI and the
// test bed) read and write etcd with these keys and documents, so the
// contract is declared once. docs/keyspace.md describes it for readers who
// do not read Go; a test checks that every key kind and document type of
// this package appears there.
//
// Keyspace, under Keys.Prefix() = Root + "{namespace}/{project}/{cluster}/":
//
//	initialize        system identifier; create-if-absent bootstrap marker (no lease)
//	term              current term, a decimal number (no lease)
//	leader            LeaderRecord bound to the primary's lease
//	optime            last LSN the primary reported, decimal bytes (no lease)
//	members/{node}    Member bound to that agent's lease
//	state             ClusterDocument kept by the primary (no lease)
//	sync              SyncState: who may be promoted in synchronous mode (no lease)
//	switchover        Switchover request / hand-over record (no lease)
//	spec              Spec: the cluster as the control plane wants it (no lease)
//	history/{term}    HistoryRecord, one per primary change (no lease)
//	locks/bootstrap   concurrency.Mutex prefix
//	locks/failover    concurrency.Mutex prefix
//	locks/backup/{job}/{occurrence}  backup occurrence claim, BackupClaim text
//	backup/requests/{id}             BackupRequest (control plane)
//	locks/backup/request/{id}        claim of one on-demand request, BackupClaim text
package keyspace

import (
	"fmt"
	"strconv"
	"strings"
)

// Root is the prefix of every dbpilot key in etcd.
const Root = "/dbpilot/v1/clusters/"

// Kind is the kind of a key under a cluster prefix (see ParseKey). Its
// String is the key's path pattern as docs/keyspace.md writes it, e.g.
// "members/{node}".
type Kind int

// The key kinds of the contract.
const (
	KindUnknown            Kind = iota // not a key of the contract
	KindInitialize                     // initialize
	KindTerm                           // term
	KindLeader                         // leader
	KindOptime                         // optime
	KindMember                         // members/{node}
	KindState                          // state
	KindSync                           // sync
	KindSwitchover                     // switchover
	KindSpec                           // spec
	KindHistory                        // history/{term}
	KindBootstrapLock                  // locks/bootstrap (and its holders' keys below it)
	KindFailoverLock                   // locks/failover (and its holders' keys below it)
	KindBackupClaim                    // locks/backup/{job}/{occurrence}
	KindBackupRequest                  // backup/requests/{id}
	KindBackupRequestClaim             // locks/backup/request/{id}
)

// Kinds lists every key kind of the contract (KindUnknown excluded), in
// the order of docs/keyspace.md.
var Kinds = []Kind{KindInitialize, KindTerm, KindLeader, KindOptime, KindMember, KindState, KindSync,
	KindSwitchover, KindSpec, KindHistory, KindBootstrapLock, KindFailoverLock, KindBackupClaim,
	KindBackupRequest, KindBackupRequestClaim}

var kindNames = map[Kind]string{
	KindUnknown:            "unknown",
	KindInitialize:         "initialize",
	KindTerm:               "term",
	KindLeader:             "leader",
	KindOptime:             "optime",
	KindMember:             "members/{node}",
	KindState:              "state",
	KindSync:               "sync",
	KindSwitchover:         "switchover",
	KindSpec:               "spec",
	KindHistory:            "history/{term}",
	KindBootstrapLock:      "locks/bootstrap",
	KindFailoverLock:       "locks/failover",
	KindBackupClaim:        "locks/backup/{job}/{occurrence}",
	KindBackupRequest:      "backup/requests/{id}",
	KindBackupRequestClaim: "locks/backup/request/{id}",
}

// String returns the key's path pattern relative to the cluster prefix.
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Keys computes the etcd keys of one cluster. The zero value is not
// usable; build one with NewKeys.
type Keys struct{ prefix string }

// NewKeys returns the keys of cluster namespace/project/name. The project is
// part of the path so two projects of one namespace may reuse a cluster name.
// The names are not checked here: callers validate them (proto.ValidName)
// where they come from configuration or requests.
func NewKeys(namespace, project, cluster string) Keys {
	return Keys{prefix: fmt.Sprintf("%s%s/%s/%s/", Root, namespace, project, cluster)}
}

// ParseClusterID splits "namespace/project/cluster" and returns its keys.
// Errors: the string does not have exactly three non-empty parts separated
// by "/" (the error says what is expected).
func ParseClusterID(id string) (Keys, error) {
	parts := strings.Split(id, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return Keys{}, fmt.Errorf("cluster id %q: want namespace/project/cluster, three non-empty names", id)
	}
	return NewKeys(parts[0], parts[1], parts[2]), nil
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

// History is the key of the history record of term, zero-padded to 20
// digits so that a range read returns terms in order.
func (k Keys) History(term uint64) string {
	return fmt.Sprintf("%shistory/%020d", k.prefix, term)
}

// HistoryPrefix is the prefix of all history records.
func (k Keys) HistoryPrefix() string { return k.prefix + "history/" }

// BootstrapLock is the bootstrap mutex prefix.
func (k Keys) BootstrapLock() string { return k.prefix + "locks/bootstrap" }

// FailoverLock is the failover mutex prefix.
func (k Keys) FailoverLock() string { return k.prefix + "locks/failover" }

// BackupRequests is the prefix of on-demand backup requests the control
// plane writes: backup/requests/{id}.
func (k Keys) BackupRequests() string { return k.prefix + "backup/requests/" }

// BackupRequest is the key of on-demand request id.
func (k Keys) BackupRequest(id string) string { return k.BackupRequests() + id }

// BackupRequestClaim is the key that makes one agent run one on-demand
// request: locks/backup/request/{id}.
func (k Keys) BackupRequestClaim(id string) string { return k.prefix + "locks/backup/request/" + id }

// BackupClaim is the key that makes one agent run one occurrence of a
// backup job: locks/backup/{job}/{occurrence as Unix seconds}.
func (k Keys) BackupClaim(job string, occurrenceUnix int64) string {
	return fmt.Sprintf("%slocks/backup/%s/%d", k.prefix, job, occurrenceUnix)
}

// MemberName returns the node name of a member key, or "" if key is not one.
func (k Keys) MemberName(key string) string {
	rest, ok := strings.CutPrefix(key, k.Members())
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return ""
	}
	return rest
}

// ParseKey tells which key of the contract key is and returns its
// variable parts: the node of a member key, the term of a history key (as
// decimal text), the id of a backup request or its claim, "job/occurrence"
// of a backup claim, the holder's lease id (hex) below a lock prefix ("" for
// the prefix itself). It returns KindUnknown for a key outside the prefix or
// not in the contract.
func (k Keys) ParseKey(key string) (Kind, string) {
	rest, ok := strings.CutPrefix(key, k.prefix)
	if !ok || k.prefix == "" {
		return KindUnknown, ""
	}
	switch rest {
	case "initialize":
		return KindInitialize, ""
	case "term":
		return KindTerm, ""
	case "leader":
		return KindLeader, ""
	case "optime":
		return KindOptime, ""
	case "state":
		return KindState, ""
	case "sync":
		return KindSync, ""
	case "switchover":
		return KindSwitchover, ""
	case "spec":
		return KindSpec, ""
	case "locks/bootstrap":
		return KindBootstrapLock, ""
	case "locks/failover":
		return KindFailoverLock, ""
	}
	single := func(p string) (string, bool) {
		v, ok := strings.CutPrefix(rest, p)
		return v, ok && v != "" && !strings.Contains(v, "/")
	}
	if v, ok := single("members/"); ok {
		return KindMember, v
	}
	if v, ok := single("history/"); ok {
		if _, err := strconv.ParseUint(v, 10, 64); err == nil {
			return KindHistory, v
		}
		return KindUnknown, ""
	}
	if v, ok := single("backup/requests/"); ok {
		return KindBackupRequest, v
	}
	if v, ok := single("locks/backup/request/"); ok {
		return KindBackupRequestClaim, v
	}
	if v, ok := single("locks/bootstrap/"); ok {
		return KindBootstrapLock, v
	}
	if v, ok := single("locks/failover/"); ok {
		return KindFailoverLock, v
	}
	if v, ok := strings.CutPrefix(rest, "locks/backup/"); ok {
		job, occ, found := strings.Cut(v, "/")
		if _, err := strconv.ParseInt(occ, 10, 64); found && job != "" && err == nil {
			return KindBackupClaim, v
		}
	}
	return KindUnknown, ""
}
