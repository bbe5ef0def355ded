// Package store is the control plane's persistent state: tenants, tokens,
// clusters and their projection, events, operations (the resumable
// provisioning workflows), catalog templates, fleet hosts and the audit log.
//
// One implementation over database/sql serves two dialects: SQLite
// (modernc.org/sqlite, the embedded default) and PostgreSQL (pgx/v5, for
// several stateless server replicas). Schemas are versioned goose migrations
// embedded per dialect (migrations/{sqlite,postgres}). Timestamps are stored
// as Unix milliseconds so both dialects compare them the same way.
package store

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/dbpilot/dbpilot/proto"
)

// Sentinel errors. Every store error that means one of these wraps it.
var (
	// ErrNotFound: the row does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a row with the same key exists, or a guarded update lost.
	ErrConflict = errors.New("conflict")
)

// Cluster phases, stored as the API serves them (proto.Phase*).
const (
	PhasePending      = proto.PhasePending
	PhaseProvisioning = proto.PhaseProvisioning
	PhaseReady        = proto.PhaseReady
	PhaseDegraded     = proto.PhaseDegraded
	PhaseFailed       = proto.PhaseFailed
	PhaseDeleting     = proto.PhaseDeleting
)

// Operation states, stored as the API serves them (proto.Op*).
const (
	OpPending   = proto.OpPending
	OpRunning   = proto.OpRunning
	OpSucceeded = proto.OpSucceeded
	OpFailed    = proto.OpFailed
)

// Namespace is a tenant. ID is immutable and never reused: grants,
// templates and audit entries name it, so a namespace deleted and created
// again under the same Name starts empty.
type Namespace struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// Project groups clusters inside a namespace.
type Project struct {
	Namespace string
	Name      string
	CreatedAt time.Time
}

// Grant gives a token a role in a namespace; Namespace "*" means every
// namespace (the platform administrator). NamespaceID is the id of the
// namespace the grant was made for (CreateToken fills it in): a grant
// whose NamespaceID is not the current id of Namespace (the namespace was
// deleted, maybe created again) grants nothing, and TokenByHash drops it.
type Grant struct {
	Namespace   string `json:"namespace"`
	Role        string `json:"role"`
	NamespaceID string `json:"namespace_id,omitempty"`
}

// Token is an API bearer token. Only the SHA-256 hash of the secret is kept.
type Token struct {
	ID        string
	Name      string
	Hash      string
	Grants    []Grant
	CreatedBy string
	CreatedAt time.Time
	RevokedAt time.Time // zero: active
}

// Cluster is one database cluster: the requested spec and the projection of
// its agents' events.
type Cluster struct {
	ID              string
	Namespace       string
	Project         string
	Name            string
	Engine          string
	Version         string
	Template        string
	Plan            string
	Provider        string
	Replicas        int
	SynchronousMode string
	Phase           string
	Reason          string
	// Primary, Term and Revision are the projection's cluster position: the
	// highest (term, revision) of a cluster-scoped event applied.
	Primary     string
	Term        uint64
	Revision    int64
	StaleEvents int64
	// IngestKeyHash is not read: the ingest key is derived from the
	// server's secret (controlplane.IngestKey), and the API stores the
	// marker "hmac" here.
	IngestKeyHash string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	LastEventAt   time.Time
}

// Node is one member of a cluster: what the provider created (State,
// Handle) and the projection of its member events.
type Node struct {
	ClusterID   string
	Name        string
	Host        string
	State       string // provider state: provisioning (recorded before the provider's Create) | created (by a provider) | external (legacy: first seen in an agent event)
	Role        string
	MemberState string
	Healthy     bool
	LSN         string
	LagBytes    int64
	Timeline    uint32
	Term        uint64
	Revision    int64
	Handle      json.RawMessage // provider-specific, opaque
	UpdatedAt   time.Time
}

// Node provider states.
const (
	// NodeProvisioning: recorded by the control plane before the
	// provider's Create (so the new agent's first events are accepted).
	NodeProvisioning = "provisioning"
	// NodeCreated: the provider created the node.
	NodeCreated = "created"
)

// Provisioned reports whether the control plane provisioned (or is
// provisioning) n: only such nodes' events are applied, only they are
// switchover or failover targets and only they reach a provider's Delete.
func (n Node) Provisioned() bool { return n.State == NodeCreated || n.State == NodeProvisioning }

// Event is one received CloudEvent, kept for the events API.
type Event struct {
	// Seq is the event's number in its namespace (1, 2, …, in arrival
	// order; ListEvents with a namespace) or, listed across namespaces,
	// the store-wide arrival number.
	Seq       int64
	ID        string
	Namespace string
	Project   string
	Cluster   string
	Node      string
	Type      string
	Term      uint64
	Revision  int64
	Time      time.Time
	Stale     bool
	Data      json.RawMessage
}

// EventFilter selects events; zero fields match everything. AfterSeq is a
// per-namespace Seq when Namespace is set, else a store-wide one.
type EventFilter struct {
	Namespace string
	Cluster   string
	Node      string
	Type      string
	AfterSeq  int64
	Limit     int
}

// Operation is a long-running request (create, delete, scale, switchover,
// failover, restart, backup, restore) and its persisted workflow position.
type Operation struct {
	ID         string
	Namespace  string
	ClusterID  string
	Kind       string
	State      string
	Step       string
	Attempts   int
	Error      string
	Params     json.RawMessage
	Owner      string
	LeaseUntil time.Time
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Claim names a workflow runner's hold on an operation (ClaimOperation:
// Owner is the runner's instance name). A write made under a claim
// (RenewOperation, FinishOperation, SetClusterPhaseAs, …) is applied only
// while the operation is unfinished and still owned by Owner, and fails
// with ErrConflict otherwise: a runner whose operation was taken over by
// another server replica (its lease ran out) cannot act on it any more.
type Claim struct {
	OperationID string
	Owner       string
}

// ClusterChange is the cluster phase FinishOperation sets together with an
// operation's final state.
type ClusterChange struct {
	Phase  string
	Reason string
	// Replicas, when > 0, is the cluster's new target node count.
	Replicas int
	// IfPhase, when not empty, applies the change only to a cluster in one
	// of these phases.
	IfPhase []string
}

// Template is a user catalog template (Body is the validated document as
// JSON). Namespace scopes it to one tenant.
type Template struct {
	Namespace string
	Name      string
	Body      json.RawMessage
	CreatedAt time.Time
}

// Host is a fleet machine that enrolled with a join token.
type Host struct {
	ID             string
	Name           string
	Address        string
	Labels         map[string]string
	Capacity       Resources
	State          string
	CredentialHash string
	CreatedAt      time.Time
	// LastSeen is when the host last polled its assignments.
	LastSeen time.Time
}

// Resources is a quantity of machine resources.
type Resources struct {
	CPU      int `json:"cpu"`
	MemoryMB int `json:"memory_mb"`
	DiskGB   int `json:"disk_gb"`
}

// Allocation places one cluster node on a fleet host.
type Allocation struct {
	HostID    string
	ClusterID string
	Node      string
	Resources Resources
	Config    string // the rendered agent configuration
	CreatedAt time.Time
	// State is AllocActive (the host runs the node) or AllocReleasing (the
	// host must stop it and acknowledge; capacity stays booked until then).
	State string
	// RestartGeneration is raised by RequestRestart; the host restarts the
	// node's agent when it is above the generation it last applied.
	RestartGeneration int64
	// RestartApplied is the generation the host acknowledged (AckAllocation).
	RestartApplied int64
	// ConfigApplied is the SHA-256 (hex, ConfigSHA256) of the rendered
	// agent config the host runs ("": not acknowledged yet).
	ConfigApplied string
	// ConfigError is why the host refused the current Config ("": none).
	ConfigError string
}

// Host states, stored as the API serves them (proto.Host*).
const (
	// HostReady: the host takes new allocations.
	HostReady = proto.HostReady
	// HostCordoned: the host keeps its nodes but takes no new allocation
	// (SetHostState; a drain cordons first).
	HostCordoned = proto.HostCordoned
)

// Allocation states, stored as the API serves them in a host's
// assignments (proto.Assignment*).
const (
	AllocActive    = proto.AssignmentActive
	AllocReleasing = proto.AssignmentReleasing
)

// AllocateOptions tune Store.AllocateWith.
type AllocateOptions struct {
	// AllowColocation lets two nodes of one cluster share a host.
	AllowColocation bool
}

// JoinToken is a one-time fleet enrolment token (hash only).
type JoinToken struct {
	Hash      string
	Labels    map[string]string
	ExpiresAt time.Time
	UsedAt    time.Time
	CreatedAt time.Time
}

// AuditEntry records one mutation or refused request: who, what, when,
// result.
type AuditEntry struct {
	// Seq is the entry's number in its namespace (ListAudit with a
	// namespace) or the store-wide number (ListAudit of every namespace).
	Seq       int64
	At        time.Time
	Actor     string
	Namespace string
	Action    string
	Resource  string
	Status    int
	Result    string
}

// Page is a keyset-pagination request: items after After (exclusive, by
// the list's key), at most Limit.
type Page struct {
	After string
	Limit int
}

// Scope says which position an event is ordered against.
type Scope int

// Event scopes.
const (
	// ScopeCluster orders against the cluster's (term, revision).
	ScopeCluster Scope = iota
	// ScopeMember orders against the node's (term, revision).
	ScopeMember
	// ScopeUnordered is not ordered (backup events carry no term; each
	// agent's outbox delivers them in order, and the projection only moves
	// a backup forward).
	ScopeUnordered
)

// Backup statuses in the projection.
const (
	BackupRunning   = "running"
	BackupSucceeded = "succeeded"
	BackupFailed    = "failed"
)

// Backup is the projection of one backup run (the agents' backup.* events).
type Backup struct {
	ClusterID  string
	ID         string // the agent's run id
	Node       string
	Job        string
	Method     string
	Repository string
	// Status is running, succeeded or failed.
	Status string
	// RequestID is the on-demand request the run answered ("" scheduled).
	RequestID  string
	StartedAt  time.Time
	FinishedAt time.Time
	SizeBytes  int64
	Checksum   string
	StartLSN   string
	StopLSN    string
	Timeline   uint32
	// Path is the backup's location in the repository.
	Path        string
	Error       string
	VerifiedAt  time.Time
	VerifyError string
}

// BackupEventKind says how a backup event changes its record.
type BackupEventKind int

// Backup event kinds.
const (
	// BackupEventStarted inserts a running record (never overwrites).
	BackupEventStarted BackupEventKind = iota
	// BackupEventFinished records the outcome (status, sizes, LSNs).
	BackupEventFinished
	// BackupEventVerified sets verified_at / verify_error of the record
	// whose Path matches.
	BackupEventVerified
)

// BackupUpdate is the backup part of a projection change.
type BackupUpdate struct {
	Kind   BackupEventKind
	Record Backup
}

// Projection is the change an agent event makes to the projection.
type Projection struct {
	Scope Scope
	// Primary, when non-empty, becomes the cluster's primary.
	Primary string
	// Member, when set, replaces the node's member fields.
	Member *MemberUpdate
	// Backup, when set (ScopeUnordered), changes a backup record.
	Backup *BackupUpdate
	// AnyNode skips the node check: for the control plane's own events
	// (Projection.Record). Without it an event whose node is not a
	// provisioned node of its cluster (Node.Provisioned) is refused
	// (UnknownNode): a leaked ingest key cannot invent nodes.
	AnyNode bool
}

// MemberUpdate is the member part of a projection change.
type MemberUpdate struct {
	Role        string
	MemberState string
	Healthy     bool
	LSN         string
	LagBytes    int64
	Timeline    uint32
}

// ApplyResult is what ApplyEvent did.
type ApplyResult int

// ApplyEvent outcomes.
const (
	// Applied: recorded and projected.
	Applied ApplyResult = iota
	// Duplicate: an event with this id was already recorded; nothing changed.
	Duplicate
	// Stale: recorded (flagged stale) but not projected: its position is
	// below the subject's; the cluster's stale counter was incremented.
	Stale
	// UnknownCluster: no such cluster; nothing recorded.
	UnknownCluster
	// UnknownNode: the event's node is not a node the control plane
	// provisioned for the cluster; nothing recorded.
	UnknownNode
)

func (r ApplyResult) String() string {
	switch r {
	case Applied:
		return "applied"
	case Duplicate:
		return "duplicate"
	case Stale:
		return "stale"
	case UnknownCluster:
		return "unknown_cluster"
	case UnknownNode:
		return "unknown_node"
	}
	return "invalid"
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}
