package proto

// Event types. The suffix is the payload's version: a consumer that does not
// know a type (or a version) must not guess at its payload.
const (
	// TypePrimaryChanged: a new primary took the leader key (bootstrap,
	// failover or switchover). Payload: [PrimaryChanged]. Term required.
	TypePrimaryChanged = "io.dbpilot.cluster.primary_changed.v1"
	// TypeMemberState: a member's role or health changed. Payload:
	// [MemberState]. Term may be 0 (no leader observed yet).
	TypeMemberState = "io.dbpilot.member.state_changed.v1"
	// TypeFenced: a primary demoted itself because it could no longer prove
	// its lease. Payload: [Fenced]. Term required.
	TypeFenced = "io.dbpilot.member.fenced.v1"
	// TypeFailoverStarted: a replica found the leader key gone and started a
	// failover attempt. Payload: [FailoverStarted]. Term required.
	TypeFailoverStarted = "io.dbpilot.cluster.failover_started.v1"
	// TypeSwitchover: a planned switchover completed. Payload:
	// [SwitchoverCompleted]. Term required.
	TypeSwitchover = "io.dbpilot.cluster.switchover_completed.v1"
	// TypeHandlerResult: a handler run failed or timed out. Payload:
	// [HandlerResult]. Term may be 0 (handlers run before any leader exists).
	TypeHandlerResult = "io.dbpilot.member.handler_failed.v1"
	// TypeFailsafe: a primary entered or left failsafe mode (etcd
	// unreachable as a whole, every member confirming it), or re-took its
	// lapsed leader key at the same term afterwards. Payload: [Failsafe].
	// Term required.
	TypeFailsafe = "io.dbpilot.member.failsafe.v1"
)

// Failsafe states in [Failsafe.State].
const (
	FailsafeActive    = "active"    // etcd unreachable; every member confirms the primary; writes continue
	FailsafeReclaimed = "reclaimed" // etcd back; the lapsed leader key re-taken at the same term
	FailsafeEnded     = "ended"     // etcd back; the lease proves leadership again
)

// Roles a member reports in [MemberState.Role].
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
	RoleUnknown = "unknown"
)

// States a member reports in [MemberState.State].
const (
	StateRunning   = "running"
	StateStarting  = "starting"
	StateStopped   = "stopped"
	StateFenced    = "fenced"
	StateUnhealthy = "unhealthy"
)

// Reasons a primary changed, in [PrimaryChanged.Reason].
const (
	ReasonBootstrap  = "bootstrap"
	ReasonFailover   = "failover"
	ReasonSwitchover = "switchover"
)

// Handler outcomes reported in [HandlerResult.Status]: the non-OK outcomes
// of a handler run, spelled as the handlers package spells them.
const (
	HandlerFailed      = "failed"       // the command exited non-zero
	HandlerTimedOut    = "timed_out"    // the command was killed after its timeout
	HandlerStartFailed = "start_failed" // the command could not be started
	HandlerCanceled    = "canceled"     // the run was cancelled (agent shutting down)
)

// ClusterRef identifies a cluster as in the whitepaper's cluster document.
// Namespace and Cluster are required; Project is optional (the etcd keyspace
// is keyed by namespace and cluster only).
type ClusterRef struct {
	Namespace string `json:"namespace"`
	Project   string `json:"project,omitempty"`
	Cluster   string `json:"cluster"`
}

// Header holds the fields every payload carries. Its JSON fields are inlined
// into the payload object (no nested "header" key).
type Header struct {
	ClusterRef
	// Node is the name of the member that emitted the event.
	Node string `json:"node"`
	// Term is the cluster term (leader generation) the event belongs to; 0
	// only for types that allow it (no leader observed yet). It must equal
	// the envelope's dbpilotterm attribute.
	Term uint64 `json:"term"`
	// TimestampMS is when the event happened, in milliseconds since the Unix
	// epoch (UTC). It must agree with the envelope's time attribute.
	TimestampMS int64 `json:"timestamp_ms"`
	// Revision is the etcd revision the event was derived from (>= 0; 0 when
	// the event was not derived from an etcd read). It must equal the
	// envelope's dbpilotrevision attribute.
	Revision int64 `json:"revision"`
}

// PrimaryChanged is the payload of [TypePrimaryChanged]: Primary took the
// leader key at Header.Term.
type PrimaryChanged struct {
	Header
	// Primary is the node that now holds the leader key. Required.
	Primary string `json:"primary"`
	// PreviousPrimary is the node that held it before; empty on bootstrap.
	PreviousPrimary string `json:"previous_primary,omitempty"`
	// Reason is one of ReasonBootstrap, ReasonFailover, ReasonSwitchover.
	Reason string `json:"reason"`
	// Timeline is the PostgreSQL timeline the new primary writes on.
	Timeline uint32 `json:"timeline"`
	// LSN is the new primary's WAL position at promotion ("16/B374D848").
	LSN string `json:"lsn,omitempty"`
	// DurationMS is how long the change took, in milliseconds: from the
	// leader key's loss (failover) or the request (switchover) to the
	// promoted primary accepting writes; for bootstrap, the initialisation.
	DurationMS int64 `json:"duration_ms"`
}

// MemberState is the payload of [TypeMemberState]: the emitting member's
// role or health changed.
type MemberState struct {
	Header
	// Role is one of RolePrimary, RoleReplica, RoleUnknown.
	Role string `json:"role"`
	// State is one of StateRunning, StateStarting, StateStopped, StateFenced,
	// StateUnhealthy.
	State string `json:"state"`
	// Healthy is the outcome of the last health cycle (handler and engine
	// checks).
	Healthy bool `json:"healthy"`
	// LSN is the member's WAL position: written (primary) or replayed
	// (replica); empty when unknown.
	LSN string `json:"lsn,omitempty"`
	// LagBytes is a replica's lag behind the leader's last reported LSN, in
	// bytes; -1 when unknown, 0 on a primary.
	LagBytes int64 `json:"lag_bytes"`
	// Timeline is the PostgreSQL timeline the member is on; 0 when unknown.
	Timeline uint32 `json:"timeline"`
}

// Fenced is the payload of [TypeFenced]: the emitting primary demoted itself
// at Header.Term because it could no longer prove its lease.
type Fenced struct {
	Header
	// Reason says why, in a sentence ("lease renewal failed past the fencing
	// deadline"). Required.
	Reason string `json:"reason"`
	// LeaseLeftMS is how much of the lease the agent could still prove when
	// it fenced, in milliseconds (may be <= 0 if it was already gone).
	LeaseLeftMS int64 `json:"lease_left_ms"`
}

// Failsafe is the payload of [TypeFailsafe].
type Failsafe struct {
	Header
	// State is FailsafeActive, FailsafeReclaimed or FailsafeEnded.
	State string `json:"state"`
	// Members is how many members confirmed the primary (active only).
	Members int `json:"members"`
}

// FailoverStarted is the payload of [TypeFailoverStarted]: the emitting
// replica found the leader key gone and is trying to take over. Header.Term
// is the term of the primary that failed; a successful failover is followed
// by a [PrimaryChanged] at a higher term.
type FailoverStarted struct {
	Header
	// FailedPrimary is the node that held the leader key at Header.Term.
	// Required.
	FailedPrimary string `json:"failed_primary"`
	// Candidate is the node attempting to take over (normally Header.Node).
	// Required.
	Candidate string `json:"candidate"`
	// Reason says why, in a sentence ("leader key expired"). Required.
	Reason string `json:"reason"`
}

// SwitchoverCompleted is the payload of [TypeSwitchover]: a planned
// switchover handed the leader key From one node To another at Header.Term.
type SwitchoverCompleted struct {
	Header
	// From is the former primary. Required.
	From string `json:"from"`
	// To is the new primary. Required; must differ from From.
	To string `json:"to"`
	// DurationMS is how long the switchover took, in milliseconds, from the
	// request to the new primary accepting writes.
	DurationMS int64 `json:"duration_ms"`
}

// HandlerResult is the payload of [TypeHandlerResult]: a handler run failed
// or timed out on the emitting node.
type HandlerResult struct {
	Header
	// Handler is the handler's phase name (preStart, health, onChange,
	// preStop, postStop). Required.
	Handler string `json:"handler"`
	// Status is HandlerFailed, HandlerTimedOut, HandlerStartFailed or
	// HandlerCanceled.
	Status string `json:"status"`
	// ExitCode is the command's exit code; -1 when it did not exit on its own
	// (killed on timeout, or could not start).
	ExitCode int `json:"exit_code"`
	// DurationMS is how long the run took, in milliseconds.
	DurationMS int64 `json:"duration_ms"`
}
