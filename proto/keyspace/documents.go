package keyspace

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Document is implemented by every JSON document of the contract; Kind is
// the key kind that holds it.
type Document interface {
	Kind() Kind
}

// Documents lists one zero value of every document type, for tests and
// tools that walk the contract (docs/keyspace.md is checked against it).
func Documents() []Document {
	return []Document{LeaderRecord{}, Member{}, ClusterDocument{}, SyncState{}, Switchover{}, Spec{},
		HistoryRecord{}, BackupRequest{}}
}

// Encode returns doc as its stored JSON text. The documents are plain
// structs (no channel, func or cycle), so marshalling cannot fail.
func Encode(doc Document) string {
	b, _ := json.Marshal(doc)
	return string(b)
}

// DecodeError is a value under key that does not decode as the key's
// document; Err says why.
type DecodeError struct {
	Key string
	Err error
}

// Error names the key and the cause.
func (e *DecodeError) Error() string { return "etcd key " + e.Key + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *DecodeError) Unwrap() error { return e.Err }

func decodeJSON[T any](key string, b []byte) (T, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return v, &DecodeError{Key: key, Err: fmt.Errorf("value is not JSON of this key's document: %w", err)}
	}
	return v, nil
}

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

// Kind returns KindLeader.
func (LeaderRecord) Kind() Kind { return KindLeader }

// DecodeLeader decodes the leader key's value. Errors: *DecodeError naming key.
func DecodeLeader(key string, b []byte) (LeaderRecord, error) {
	return decodeJSON[LeaderRecord](key, b)
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

// Kind returns KindMember.
func (Member) Kind() Kind { return KindMember }

// DecodeMember decodes a member key's value. Errors: *DecodeError naming key.
func DecodeMember(key string, b []byte) (Member, error) { return decodeJSON[Member](key, b) }

// Spec is the value of the spec key: the cluster as the control plane wants
// it. Agents act on two fields: SynchronousMode overrides the local
// synchronous_mode, and a non-empty Nodes list takes every other node out
// of the running as failover candidate, switchover target and synchronous
// standby (it is being removed). The other fields are informational. A
// missing key means no spec: the agents run from their local configuration.
type Spec struct {
	Replicas int `json:"replicas,omitempty"`
	// SynchronousMode is "on", "off", or "" (not set: the local setting applies).
	SynchronousMode string `json:"synchronous_mode,omitempty"`
	Engine          string `json:"engine,omitempty"`
	Version         string `json:"version,omitempty"`
	Template        string `json:"template,omitempty"`
	Plan            string `json:"plan,omitempty"`
	// Nodes are the cluster's wanted nodes; empty: every node may stand.
	Nodes []string `json:"nodes,omitempty"`
	// UpdatedMS is when the control plane wrote it, Unix ms.
	UpdatedMS int64 `json:"updated_ms,omitempty"`
}

// Kind returns KindSpec.
func (Spec) Kind() Kind { return KindSpec }

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

// DecodeSpec decodes and validates the spec key's value. Errors:
// *DecodeError naming key, for JSON that does not decode or a field that
// fails Spec.Validate.
func DecodeSpec(key string, b []byte) (Spec, error) {
	s, err := decodeJSON[Spec](key, b)
	if err != nil {
		return s, err
	}
	if err := s.Validate(); err != nil {
		return s, &DecodeError{Key: key, Err: err}
	}
	return s, nil
}

// History reasons.
const (
	ReasonBootstrap  = "bootstrap"
	ReasonFailover   = "failover"
	ReasonSwitchover = "switchover"
)

// HistoryRecord is written once per term, in the same transaction that
// creates the leader key.
type HistoryRecord struct {
	Term     uint64 `json:"term"`
	Node     string `json:"node"`
	Previous string `json:"previous,omitempty"`
	Reason   string `json:"reason"` // bootstrap | failover | switchover
	LSN      uint64 `json:"lsn"`    // bytes
	Timeline uint32 `json:"timeline"`
	AtMS     int64  `json:"at_ms"` // unix ms
	// Abandoned is set when the claimant could not promote and released the
	// key: the term had no primary.
	Abandoned string `json:"abandoned,omitempty"`
}

// Kind returns KindHistory.
func (HistoryRecord) Kind() Kind { return KindHistory }

// DecodeHistory decodes a history key's value. Errors: *DecodeError naming key.
func DecodeHistory(key string, b []byte) (HistoryRecord, error) {
	return decodeJSON[HistoryRecord](key, b)
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

// Kind returns KindSync.
func (SyncState) Kind() Kind { return KindSync }

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

// DecodeSync decodes the sync key's value. Errors: *DecodeError naming key.
func DecodeSync(key string, b []byte) (SyncState, error) { return decodeJSON[SyncState](key, b) }

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
	FinalLSN    uint64 `json:"final_lsn,omitempty"` // bytes
	RequestedMS int64  `json:"requested_ms"`        // unix ms
	HandoverMS  int64  `json:"handover_ms,omitempty"`
}

// Kind returns KindSwitchover.
func (Switchover) Kind() Kind { return KindSwitchover }

// DecodeSwitchover decodes the switchover key's value. Errors:
// *DecodeError naming key. (The agent treats any value whose state is not
// "handover" as a request, an undecodable one included.)
func DecodeSwitchover(key string, b []byte) (Switchover, error) {
	return decodeJSON[Switchover](key, b)
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

// Kind returns KindState.
func (ClusterDocument) Kind() Kind { return KindState }

// DocumentNode is one node of the cluster document.
type DocumentNode struct {
	Name      string `json:"name"`
	Status    string `json:"status"` // Online | Offline
	IPAddress string `json:"ip_address"`
	Port      int    `json:"port"`
	Role      string `json:"role"` // Primary | Replica
}

// DecodeDocument decodes the state key's value. Errors: *DecodeError naming key.
func DecodeDocument(key string, b []byte) (ClusterDocument, error) {
	return decodeJSON[ClusterDocument](key, b)
}

// Backup request actions.
const (
	ActionBackup    = "backup"     // run a backup job ("" means the same)
	ActionSwitchWAL = "switch-wal" // the primary switches and archives its WAL segment
)

// BackupRequest is the value of backup/requests/{id}: an on-demand request
// from the control plane to the cluster's agents.
type BackupRequest struct {
	// Action is ActionBackup ("" too) or ActionSwitchWAL.
	Action string `json:"action"`
	// Job names the backup job to run ("": the first physical job).
	Job string `json:"job,omitempty"`
	// RequestedMS is when it was requested (ms since the Unix epoch).
	RequestedMS int64 `json:"requested_ms"`
	// ExpiresMS: ignored after this instant (Unix ms; 0: never).
	ExpiresMS int64 `json:"expires_ms,omitempty"`
}

// Kind returns KindBackupRequest.
func (BackupRequest) Kind() Kind { return KindBackupRequest }

// DecodeBackupRequest decodes a backup request. Errors: *DecodeError naming key.
func DecodeBackupRequest(key string, b []byte) (BackupRequest, error) {
	return decodeJSON[BackupRequest](key, b)
}

// BackupClaim is the plain-text value of a claim key (locks/backup/…):
// "node" while the node runs it, "node status" once it finished (status
// succeeded or failed).
type BackupClaim struct {
	Node   string
	Status string // "" while running
}

// String returns the stored text.
func (c BackupClaim) String() string {
	if c.Status == "" {
		return c.Node
	}
	return c.Node + " " + c.Status
}

// DecodeBackupClaim parses a claim value. Errors: *DecodeError naming key
// when the value is empty or has more than two words.
func DecodeBackupClaim(key string, b []byte) (BackupClaim, error) {
	f := strings.Fields(string(b))
	if len(f) == 0 || len(f) > 2 {
		return BackupClaim{}, &DecodeError{Key: key, Err: fmt.Errorf("want \"node\" or \"node status\", got %q", b)}
	}
	c := BackupClaim{Node: f[0]}
	if len(f) == 2 {
		c.Status = f[1]
	}
	return c, nil
}

// EncodeUint returns the decimal text of the term and optime keys.
func EncodeUint(v uint64) string { return strconv.FormatUint(v, 10) }

// DecodeTerm parses the term key's decimal value; an empty value is term 0.
// Errors: *DecodeError naming key.
func DecodeTerm(key string, b []byte) (uint64, error) {
	if len(b) == 0 {
		return 0, nil
	}
	return decodeUint(key, b)
}

// DecodeOptime parses the optime key's decimal LSN (bytes). Errors:
// *DecodeError naming key.
func DecodeOptime(key string, b []byte) (uint64, error) { return decodeUint(key, b) }

func decodeUint(key string, b []byte) (uint64, error) {
	v, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, &DecodeError{Key: key, Err: fmt.Errorf("want a decimal number, got %q", b)}
	}
	return v, nil
}
