package handlers

import (
	"errors"
	"strconv"
	"time"
)

// Sentinel errors wrapped by Result.Err; test with errors.Is.
var (
	// ErrTimeout is wrapped by the Err of a [StatusTimedOut] result: the run
	// outlived Spec.Timeout and its process group was killed.
	ErrTimeout = errors.New("handler timed out")
	// ErrUnknownPhase is wrapped by the Err of a run asked for a phase that
	// is not one of the five.
	ErrUnknownPhase = errors.New("unknown handler phase")
	// ErrInvalidSpec is wrapped by the Err of a run whose spec does not pass
	// validation (the config loader should have rejected it).
	ErrInvalidSpec = errors.New("invalid handler spec")
)

// Env is what every handler run receives in its environment, as DBPILOT_EVENT,
// DBPILOT_ROLE, DBPILOT_CLUSTER, DBPILOT_NODE, DBPILOT_LEADER, DBPILOT_TERM
// and DBPILOT_REASON, on top of the agent's environment and Spec.Env. Empty
// fields are passed as empty variables, Term as a decimal number.
type Env struct {
	// Event names what triggered the run; empty means the phase name.
	Event string
	// Role is the node's role after the change, e.g. "primary" or "replica".
	Role string
	// Cluster is the cluster name.
	Cluster string
	// Node is this node's name.
	Node string
	// Leader is the name of the node holding the leader key, empty if none.
	Leader string
	// Reason is the HA loop's sentence explaining the change.
	Reason string
	// Term is the leadership term (fencing token) the change belongs to.
	Term uint64
}

// vars returns the DBPILOT_* variables for a run of phase p, as KEY=value.
func (e Env) vars(p Phase) []string {
	event := e.Event
	if event == "" {
		event = string(p)
	}
	return []string{
		"DBPILOT_EVENT=" + event,
		"DBPILOT_ROLE=" + e.Role,
		"DBPILOT_CLUSTER=" + e.Cluster,
		"DBPILOT_NODE=" + e.Node,
		"DBPILOT_LEADER=" + e.Leader,
		"DBPILOT_TERM=" + strconv.FormatUint(e.Term, 10),
		"DBPILOT_REASON=" + e.Reason,
	}
}

// Status is the typed outcome of a run. The zero value is not a valid status.
type Status int

// The outcomes of a run.
const (
	// StatusOK: the handler exited with status 0.
	StatusOK Status = iota + 1
	// StatusFailed: the handler exited with a non-zero status, or was killed
	// by a signal the runner did not send (ExitCode -1).
	StatusFailed
	// StatusTimedOut: the run outlived Spec.Timeout; its process group was
	// killed. Err wraps ErrTimeout.
	StatusTimedOut
	// StatusStartFailed: the handler could not be executed (program not
	// found, not executable, bad dir, invalid spec, unknown phase).
	StatusStartFailed
	// StatusSkipped: the phase is not configured; nothing ran.
	StatusSkipped
	// StatusCanceled: the caller's context ended before the handler did (the
	// agent is exiting or the caller's own deadline passed); its process
	// group was killed, or it was not started. Err wraps the context's cause.
	StatusCanceled
)

// String returns a short lower-case name for logs, e.g. "timed_out".
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusFailed:
		return "failed"
	case StatusTimedOut:
		return "timed_out"
	case StatusStartFailed:
		return "start_failed"
	case StatusSkipped:
		return "skipped"
	case StatusCanceled:
		return "canceled"
	}
	return "unknown(" + strconv.Itoa(int(s)) + ")"
}

// Result is the outcome of one run. It carries no output and no environment.
type Result struct {
	// Phase is the hook that ran.
	Phase Phase
	// Status classifies the outcome.
	Status Status
	// ExitCode is the handler's exit status, -1 when it did not exit
	// normally (killed, not started, skipped).
	ExitCode int
	// Duration is the wall time from start to the end of Wait, 0 if nothing
	// was started.
	Duration time.Duration
	// Err explains any status other than StatusOK and StatusSkipped, for
	// which it is nil.
	Err error
}

// OK reports whether the run needs no attention: true for StatusOK and
// StatusSkipped.
func (r Result) OK() bool {
	return r.Status == StatusOK || r.Status == StatusSkipped
}
