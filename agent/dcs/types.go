package dcs

import (
	"fmt"
	"regexp"
	"time"
)

// LeaderRecord is the value of the leader key. The key is bound to the
// primary's lease: when the primary stops renewing, etcd deletes it after at
// most the lease TTL (etcd docs, "Lease API").
type LeaderRecord struct {
	Node     string `json:"node"`
	Term     uint64 `json:"term"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	APIURL   string `json:"api_url,omitempty"`
	LSN      uint64 `json:"lsn"` // bytes, pg_current_wal_lsn()
	Timeline uint32 `json:"timeline"`
	Since    int64  `json:"since_ms"` // unix ms when the term began
}

// Member is the value of a member key, refreshed every health interval.
type Member struct {
	Node      string `json:"node"`
	Role      string `json:"role"`  // primary | replica | unknown
	State     string `json:"state"` // starting | running | stopped | fenced | bootstrapping | cloning
	Healthy   bool   `json:"healthy"`
	Running   bool   `json:"running"`
	Streaming bool   `json:"streaming"`
	Host      string `json:"host"`
	Port      int    `json:"port"`
	APIURL    string `json:"api_url,omitempty"`
	LSN       uint64 `json:"lsn"` // bytes; replica: max(receive, replay)
	Timeline  uint32 `json:"timeline"`
	LagBytes  int64  `json:"lag_bytes"` // behind the leader's last LSN; -1 unknown
	// LagSeconds is replay lag in time (replica; 0 when caught up, -1 unknown).
	LagSeconds float64 `json:"lag_seconds"`
	NoFailover bool    `json:"nofailover"`
	Priority   int     `json:"priority"`
	Upstream   string  `json:"upstream,omitempty"`
	// SynchronousMode is the synchronous_mode this agent acts under: the
	// spec key's when it sets one, else the local configuration's
	// ("on" | "off"; empty from agents that predate the spec key).
	SynchronousMode string `json:"synchronous_mode,omitempty"`
	// Synchronous is true on a primary whose PostgreSQL waits for a standby
	// on every commit (synchronous_standby_names is not empty). It is set
	// only after the sync key lists those standbys.
	Synchronous bool `json:"synchronous"`
	// FailsafeFor names the primary this member promised, during an etcd
	// outage, to stay out of elections for; FailsafeUntilMS (unix ms) is
	// when that promise ends. Empty/0: no promise in force. Other
	// candidates wait while a member reports one (failsafe mode).
	FailsafeFor     string `json:"failsafe_for,omitempty"`
	FailsafeUntilMS int64  `json:"failsafe_until_ms,omitempty"`
	UpdatedMS       int64  `json:"updated_ms"`
	// Revision is the etcd ModRevision this value was read at (not stored).
	Revision int64 `json:"-"`
}

// Spec is the value of the spec key: the cluster as the control plane wants
// it (controlplane.Desired writes the same JSON). Agents act on two fields:
// SynchronousMode overrides the local synchronous_mode, and a non-empty
// Nodes list takes every other node out of the running as failover
// candidate, switchover target and synchronous standby (it is being
// removed). The other fields are informational. A missing key means no
// spec: the agents run from their local configuration.
type Spec struct {
	Replicas int `json:"replicas,omitempty"`
	// SynchronousMode is "on", "off", or "" (not set: the local setting applies).
	SynchronousMode string `json:"synchronous_mode,omitempty"`
	Engine          string `json:"engine,omitempty"`
	Version         string `json:"version,omitempty"`
	Template        string `json:"template,omitempty"`
	Plan            string `json:"plan,omitempty"`
	// Nodes are the cluster's wanted nodes; empty: every node may stand.
	Nodes     []string `json:"nodes,omitempty"`
	UpdatedMS int64    `json:"updated_ms,omitempty"`
}

// specNodeRE is the node name rule of the agent configuration (node.name).
var specNodeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Validate checks the fields agents act on. Errors name the field and say
// what is accepted; unknown fields are not errors (the control plane may
// add some).
func (s Spec) Validate() error {
	switch s.SynchronousMode {
	case "", "on", "off":
	default:
		return fmt.Errorf("synchronous_mode: must be \"on\", \"off\" or absent (got %q)", s.SynchronousMode)
	}
	for i, n := range s.Nodes {
		if !specNodeRE.MatchString(n) {
			return fmt.Errorf("nodes[%d]: %q is not a node name (must match %s)", i, n, specNodeRE)
		}
	}
	return nil
}

// HistoryRecord is written once per term, in the same transaction that
// creates the leader key.
type HistoryRecord struct {
	Term     uint64 `json:"term"`
	Node     string `json:"node"`
	Previous string `json:"previous,omitempty"`
	Reason   string `json:"reason"` // bootstrap | failover | switchover
	LSN      uint64 `json:"lsn"`
	Timeline uint32 `json:"timeline"`
	AtMS     int64  `json:"at_ms"`
	// Abandoned is set when the claimant could not promote and released the
	// key: the term had no primary.
	Abandoned string `json:"abandoned,omitempty"`
}

// SyncState records which replicas may be promoted in synchronous mode: every
// name in PostgreSQL's synchronous_standby_names is also in Standbys, so an
// acknowledged commit always exists on a member of Standbys.
type SyncState struct {
	Leader   string   `json:"leader"`
	Term     uint64   `json:"term"`
	Standbys []string `json:"standbys"`
	// Revision is the etcd ModRevision this value was read at (not stored).
	Revision int64 `json:"-"`
}

// Has reports whether node is in the synchronous set.
func (s *SyncState) Has(node string) bool {
	if s == nil {
		return false
	}
	for _, n := range s.Standbys {
		if n == node {
			return true
		}
	}
	return false
}

// Switchover states.
const (
	SwitchoverRequested = "requested" // written by an operator or the control plane
	SwitchoverHandover  = "handover"  // written by the old primary after it stopped
)

// Switchover is a planned change of primary. An operator writes
// {from, to, state: requested}; the primary stops, records the final LSN and
// state "handover" and releases the leader key in one transaction; only To may
// then take the leader key, once it has replayed up to FinalLSN.
type Switchover struct {
	From        string `json:"from,omitempty"`
	To          string `json:"to,omitempty"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	FinalLSN    uint64 `json:"final_lsn,omitempty"`
	RequestedMS int64  `json:"requested_ms"`
	HandoverMS  int64  `json:"handover_ms,omitempty"`
}

// ClusterDocument is the whitepaper's cluster document (Op 2, "cluster
// state examples"), kept under the state key by the primary.
type ClusterDocument struct {
	Namespace   string         `json:"namespace"`
	Project     string         `json:"project"`
	ClusterName string         `json:"cluster_name"`
	Term        uint64         `json:"term"`
	Leader      string         `json:"leader"`
	LastUpdated int64          `json:"last_updated"` // unix seconds
	TTLSeconds  int64          `json:"ttlseconds"`
	Nodes       []DocumentNode `json:"nodes"`
}

// DocumentNode is one node of the cluster document.
type DocumentNode struct {
	Name      string `json:"name"`
	Status    string `json:"status"` // Online | Offline
	IPAddress string `json:"ip_address"`
	Port      int    `json:"port"`
	Role      string `json:"role"` // Primary | Replica
}

// Snapshot is one consistent read of the whole cluster prefix.
type Snapshot struct {
	Revision    int64
	Initialized bool
	SystemID    string
	Term        uint64
	TermRev     int64 // ModRevision of the term key, 0 if absent
	Leader      *LeaderRecord
	LeaderLease int64 // lease ID the leader key is bound to
	LeaderRev   int64 // CreateRevision of the leader key
	OptimeLSN   uint64
	Members     map[string]Member
	Sync        *SyncState
	Switchover  *Switchover
	SwitchRev   int64
	// Spec is the control plane's spec key; nil when it is absent or
	// malformed (SpecErr says why).
	Spec *Spec
	// SpecRev is the spec key's ModRevision, 0 if absent: it changes with
	// every write, so a malformed value can be reported once per change.
	SpecRev int64
	// SpecErr is why a present spec key was ignored (bad JSON or a field
	// that fails Spec.Validate); nil otherwise.
	SpecErr  error
	Document *ClusterDocument
	DocRev   int64
}

func nowMS() int64 { return time.Now().UnixMilli() }
