package proto

import "time"

// Cluster phases, in [Cluster.Phase].
const (
	// PhasePending: accepted, provisioning has not started.
	PhasePending = "Pending"
	// PhaseProvisioning: nodes are being created, replaced or added.
	PhaseProvisioning = "Provisioning"
	// PhaseReady: every wanted node is running and healthy.
	PhaseReady = "Ready"
	// PhaseDegraded: fewer nodes than Replicas are running and healthy
	// (Reason: "2 of 3 members healthy").
	PhaseDegraded = "Degraded"
	// PhaseFailed: an operation failed; Reason says why.
	PhaseFailed = "Failed"
	// PhaseDeleting: a delete operation is removing the nodes.
	PhaseDeleting = "Deleting"
)

// Cluster is a database cluster (OpenAPI schema Cluster): one element of
// GET /v1/namespaces/{ns}/clusters, or GET …/clusters/{cluster}, which
// also carries Members.
type Cluster struct {
	// ID is the cluster's id ("c-" and 16 hex digits); paths accept it in
	// place of the name.
	ID string `json:"id"`
	// Namespace is the tenant the cluster belongs to.
	Namespace string `json:"namespace"`
	// Project is the project inside the namespace ("default" unless set).
	Project string `json:"project"`
	// Name is unique per project (1-40 of a-z, 0-9 and '-').
	Name string `json:"name"`
	// Engine is the database engine ("postgres").
	Engine string `json:"engine"`
	// Version is the engine's major version ("15").
	Version string `json:"version"`
	// Template is the catalog template the cluster was created from.
	Template string `json:"template"`
	// Plan is the template's resource plan every node gets ("small").
	Plan string `json:"plan"`
	// Provider is the infrastructure provider that runs the nodes
	// ("process", "fleet", …).
	Provider string `json:"provider"`
	// Replicas is the number of nodes wanted (primary included), 1 to 9.
	Replicas int `json:"replicas"`
	// SynchronousMode is "on" (commits wait for a synchronous standby) or
	// "off".
	SynchronousMode string `json:"synchronous_mode"`
	// Phase is one of the Phase* constants.
	Phase string `json:"phase"`
	// Reason explains the phase (why it failed or is degraded); omitted
	// when there is nothing to say.
	Reason string `json:"reason,omitempty"`
	// Primary is the primary according to the newest applied cluster-level
	// event (primary_changed, switchover_completed); omitted before the
	// first.
	Primary string `json:"primary,omitempty"`
	// Term is the leader generation of Primary (0 before the first).
	Term uint64 `json:"term"`
	// StaleEvents counts agent events the projection dropped because they
	// were older than what it already held.
	StaleEvents int64 `json:"stale_events"`
	// Members are the cluster's nodes (GET of one cluster only; omitted in
	// lists and before any node reported).
	Members []Member `json:"members,omitempty"`
	// CreatedAt is when the cluster was requested.
	CreatedAt time.Time `json:"created_at"`
	// LastUpdated is when the server last applied an agent event of the
	// cluster (member or cluster level; backup events excluded); omitted
	// before the first.
	LastUpdated *time.Time `json:"last_updated,omitempty"`
}

// Member is one node of a cluster (OpenAPI schema Member), in
// [Cluster.Members] and GET …/clusters/{cluster}/nodes: the projection of
// its agent's events, overlaid with a live etcd read when etcd answers.
type Member struct {
	// Name is the node's name in the cluster ("node1").
	Name string `json:"name"`
	// Role is "primary", "replica", or "unknown" (no member key and not the
	// leader); "" before the agent reported.
	Role string `json:"role"`
	// State is the agent's member state (running, starting, stopped,
	// fenced, unhealthy), or "offline" when its member key expired.
	State string `json:"state"`
	// Healthy is the outcome of the agent's last health cycle.
	Healthy bool `json:"healthy"`
	// Streaming reports whether a replica's WAL receiver streams from the
	// primary (live from etcd; omitted when etcd was not read or the member
	// is offline).
	Streaming *bool `json:"streaming,omitempty"`
	// LSN is the WAL position, written (primary) or replayed (replica), in
	// PostgreSQL's text form ("0/5000000"); omitted when unknown.
	LSN string `json:"lsn,omitempty"`
	// LagBytes is a replica's lag behind the primary, in bytes; -1 when
	// unknown, 0 on the primary.
	LagBytes int64 `json:"lag_bytes"`
	// LagSeconds is a replica's replay lag, in seconds (live from etcd;
	// omitted when unknown).
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
	// Timeline is the PostgreSQL timeline the node is on; 0 when unknown.
	Timeline uint32 `json:"timeline"`
	// Term is the term of the node's last applied member event.
	Term uint64 `json:"term"`
	// ProviderState is the node's provisioning state: "provisioning"
	// (recorded, the provider is creating it) or "created" (by a
	// provider). Only such nodes are members.
	ProviderState string `json:"provider_state"`
	// LastUpdated is when the node's row last changed (provider action or
	// applied member event).
	LastUpdated *time.Time `json:"last_updated,omitempty"`
}

// ClusterCreate is the body of POST /v1/namespaces/{ns}/clusters (OpenAPI
// schema ClusterCreate). Only Name is required; an empty field takes the
// server's default (noted per field). The answer is 202 with an
// [Operation] of kind create.
type ClusterCreate struct {
	// Name is the new cluster's name (1-40 of a-z, 0-9 and '-').
	Name string `json:"name"`
	// Project is the project to create it in (default "default").
	Project string `json:"project,omitempty"`
	// Engine must match the template's (default: the template's).
	Engine string `json:"engine,omitempty"`
	// Version must match the template's engine_version (default: the
	// template's).
	Version string `json:"version,omitempty"`
	// Template is a catalog or namespace template (default "postgres-15").
	Template string `json:"template,omitempty"`
	// Plan is one of the template's plans (default "small").
	Plan string `json:"plan,omitempty"`
	// Replicas is the number of nodes, 1 to 9 (nil: 3).
	Replicas *int `json:"replicas,omitempty"`
	// SynchronousMode is "on" or "off" (default "off").
	SynchronousMode string `json:"synchronous_mode,omitempty"`
	// Provider is one of the server's providers (default: its first).
	Provider string `json:"provider,omitempty"`
}

// ClusterUpdate is the body of PATCH /v1/namespaces/{ns}/clusters/{cluster}
// (OpenAPI schema ClusterUpdate): the settings that can change on a live
// cluster. The answer is 202 with an [Operation] of kind update.
type ClusterUpdate struct {
	// SynchronousMode is "on" or "off". Required (today the only setting).
	SynchronousMode *string `json:"synchronous_mode,omitempty"`
}

// ScaleRequest is the body of POST …/clusters/{cluster}/scale (OpenAPI
// schema Scale). The answer is 202 with an [Operation] of kind scale.
type ScaleRequest struct {
	// Replicas is the number of nodes wanted, 1 to 9. Required.
	Replicas *int `json:"replicas"`
}

// SwitchoverRequest is the body of POST …/clusters/{cluster}/switchover and
// …/failover (OpenAPI schema Switchover). The answer is 202 with an
// [Operation] of kind switchover or failover.
type SwitchoverRequest struct {
	// From is the expected current primary; the request is refused when it
	// is not. Not allowed for a failover.
	From string `json:"from,omitempty"`
	// To is the replica to promote (switchover default: the healthiest).
	// Required for a failover.
	To string `json:"to,omitempty"`
	// Reason is recorded with the operation, at most 200 characters.
	Reason string `json:"reason,omitempty"`
}

// CloudInit is the JSON answer of GET
// …/clusters/{cluster}/nodes/{node}/cloud-init (?format=raw answers
// UserData alone, as text/cloud-config).
type CloudInit struct {
	// Cluster is the cluster's name.
	Cluster string `json:"cluster"`
	// Node is the node's name.
	Node string `json:"node"`
	// UserData is the node's #cloud-config document (it holds the cluster's
	// credentials).
	UserData string `json:"user_data"`
}
