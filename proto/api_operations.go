package proto

import "time"

// Operation states, in [Operation.State]; succeeded and failed are final.
const (
	// OpPending: accepted, not picked up by the engine yet.
	OpPending = "pending"
	// OpRunning: the engine runs its steps (see Operation.Step).
	OpRunning = "running"
	// OpSucceeded: finished; the cluster shows the outcome.
	OpSucceeded = "succeeded"
	// OpFailed: gave up; Operation.Error says why.
	OpFailed = "failed"
)

// Operation is a long-running operation (OpenAPI schema Operation): the
// 202 answer of every request that changes a cluster or drains a host,
// with a Location header to poll, GET /v1/namespaces/{ns}/operations/{id}
// (GET /v1/infra/operations/{id} for host operations), until State is
// succeeded or failed.
type Operation struct {
	// ID identifies the operation ("op-" and 16 hex digits).
	ID string `json:"id"`
	// Namespace is the cluster's namespace; empty for a host operation.
	Namespace string `json:"namespace"`
	// ClusterID is the cluster the operation acts on; for a drain, the
	// host's id.
	ClusterID string `json:"cluster_id"`
	// Kind is create, delete, scale, update, switchover, failover,
	// restart, backup, restore, repair (started by the repair reconciler),
	// drain (a host's) or move (one node to another host, started by a
	// drain).
	Kind string `json:"kind"`
	// State is one of the Op* constants.
	State string `json:"state"`
	// Step is the workflow step running now or last ("spec", "nodes",
	// "ready", "wait", …); omitted before the first.
	Step string `json:"step,omitempty"`
	// Progress is the engine's sentence on the step ("2 of 3 nodes
	// ready"); omitted when there is none.
	Progress string `json:"progress,omitempty"`
	// Attempts counts the failed step attempts so far, each retried with
	// a backoff (0: none failed).
	Attempts int `json:"attempts"`
	// Error says why the operation failed; omitted unless it did.
	Error string `json:"error,omitempty"`
	// BackupID is the backup a backup operation took, or the one a
	// restore starts from.
	BackupID string `json:"backup_id,omitempty"`
	// Reason is why the operation runs: a switchover's reason, or what
	// the repair reconciler saw ("node node2 not running (provider status:
	// …)").
	Reason string `json:"reason,omitempty"`
	// Nodes are the nodes a repair operation restarts.
	Nodes []string `json:"nodes,omitempty"`
	// CreatedAt is when the operation was requested.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is when its state, step or progress last changed.
	UpdatedAt time.Time `json:"updated_at"`
}

// Done reports whether the operation reached a final state (succeeded or
// failed).
func (o Operation) Done() bool { return o.State == OpSucceeded || o.State == OpFailed }
