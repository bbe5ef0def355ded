package proto

import "time"

// Host states, in [Host.State].
const (
	// HostReady: the host takes new nodes.
	HostReady = "ready"
	// HostCordoned: the host keeps its nodes but takes no new one (cordon,
	// or a drain, which cordons first).
	HostCordoned = "cordoned"
)

// Assignment states, in [Assignment.State].
const (
	// AssignmentActive: the host runs the node.
	AssignmentActive = "active"
	// AssignmentReleasing: the host must stop the node, remove its folder
	// and acknowledge (DELETE …/self/assignments/{cluster}/{node}); its
	// capacity stays booked until then.
	AssignmentReleasing = "releasing"
)

// Resources is a quantity of machine resources (OpenAPI schema
// Resources): a host's capacity, or what one node is given.
type Resources struct {
	// CPU is a number of CPUs (>= 1).
	CPU int `json:"cpu"`
	// MemoryMB is memory in MiB (>= 128).
	MemoryMB int `json:"memory_mb"`
	// DiskGB is disk in GiB (>= 1).
	DiskGB int `json:"disk_gb"`
}

// Host is an enrolled fleet host (OpenAPI schema Host), in GET
// /v1/infra/hosts, the enrolment answer and the cordon, uncordon answers.
type Host struct {
	// ID identifies the host ("h-" and 16 hex digits).
	ID string `json:"id"`
	// Name is unique in the fleet (1-40 of a-z, 0-9 and '-').
	Name string `json:"name"`
	// Address is where the control plane and other nodes reach the host.
	Address string `json:"address"`
	// Labels are matched by templates' host selectors (null when none).
	Labels map[string]string `json:"labels"`
	// Capacity is what the host offers to database nodes.
	Capacity Resources `json:"capacity"`
	// State is HostReady or HostCordoned.
	State string `json:"state"`
	// CreatedAt is when the host enrolled.
	CreatedAt time.Time `json:"created_at"`
	// Nodes is the number of nodes allocated on the host, active and
	// releasing (lists and cordon, uncordon answers; 0 in the enrolment
	// answer).
	Nodes int `json:"nodes"`
	// Credential is the host's bearer secret ("dbph_…"), only in the
	// enrolment answer: the server keeps its SHA-256 alone.
	Credential string `json:"credential,omitempty"`
}

// JoinTokenCreate is the body of POST /v1/infra/join-tokens (OpenAPI
// schema JoinTokenCreate; platform admin). The answer is 201 with a
// [JoinToken].
type JoinTokenCreate struct {
	// Labels are given to the hosts that enrol with the token.
	Labels map[string]string `json:"labels"`
	// TTLSeconds is the token's validity in seconds, 60 to 604800
	// (0: 3600).
	TTLSeconds int `json:"ttl_seconds,omitempty"`
}

// JoinToken is a one-time enrolment token, the answer of POST
// /v1/infra/join-tokens.
type JoinToken struct {
	// ExpiresAt is when the token stops being accepted.
	ExpiresAt time.Time `json:"expires_at"`
	// Secret is the join token itself ("dbpj_…"), shown once.
	Secret string `json:"join_token"`
	// Labels are given to the host that enrols with it.
	Labels map[string]string `json:"labels"`
}

// EnrollRequest is the body of POST /v1/infra/hosts/enroll (OpenAPI schema
// Enroll; no bearer token: the join token authenticates). The answer is
// 201 with the [Host], carrying its Credential once.
type EnrollRequest struct {
	// JoinToken is a one-time token from POST /v1/infra/join-tokens.
	// Required.
	JoinToken string `json:"join_token"`
	// Name is the host's name (1-40 of a-z, 0-9 and '-'). Required.
	Name string `json:"name"`
	// Address is where the control plane and other nodes reach the host.
	// Required.
	Address string `json:"address"`
	// Labels are added to the join token's.
	Labels map[string]string `json:"labels,omitempty"`
	// Capacity is what the host offers (cpu >= 1, memory_mb >= 128,
	// disk_gb >= 1). Required.
	Capacity Resources `json:"capacity"`
}

// Assignment is one node a fleet host must run (State AssignmentActive) or
// stop and acknowledge (AssignmentReleasing): one element of GET
// /v1/infra/hosts/self/assignments (host credential), which the host
// runner polls.
type Assignment struct {
	// ClusterID is the node's cluster.
	ClusterID string `json:"cluster_id"`
	// Node is the node's name in the cluster.
	Node string `json:"node"`
	// State is AssignmentActive or AssignmentReleasing.
	State string `json:"state"`
	// Resources are what the node is given (its cluster's plan).
	Resources Resources `json:"resources"`
	// AgentConfig is the node's rendered dbpilot-agent configuration
	// (YAML), before the host applies its own paths and ports.
	AgentConfig string `json:"agent_config"`
	// Credentials is the cluster's credentials file (active nodes only).
	Credentials string `json:"credentials,omitempty"`
	// EtcdPassword is the password of the cluster's own etcd user (named
	// in AgentConfig's etcd.username; active nodes of servers with etcd
	// authentication only). The host writes it to the node's password
	// file (0600), which etcd.password_file names.
	EtcdPassword string `json:"etcd_password,omitempty"`
	// RestartGeneration asks for an agent restart when it is above the
	// generation the host last applied.
	RestartGeneration int64 `json:"restart_generation"`
	// AppliedRestartGeneration is the generation the host last
	// acknowledged (see AssignmentAck); the host acknowledges again when
	// its own state differs from these three fields.
	AppliedRestartGeneration int64 `json:"applied_restart_generation"`
	// AppliedConfigSHA256 is the hex SHA-256 of the AgentConfig the host
	// last acknowledged ("": none yet).
	AppliedConfigSHA256 string `json:"applied_config_sha256"`
	// ConfigError is why the host last refused AgentConfig ("": it did
	// not).
	ConfigError string `json:"config_error"`
}

// AssignmentAck is the body of POST
// /v1/infra/hosts/self/assignments/{cluster}/{node}/ack (OpenAPI schema
// AssignmentAck; host credential): what the host applied for the node.
// The answer is 204.
type AssignmentAck struct {
	// ConfigError is why the host refused the current agent_config (the
	// output of dbpilot-agent validate, cut to 4000 bytes); "" when it
	// did not.
	ConfigError string `json:"config_error"`
	// ConfigSHA256 is the hex SHA-256 of the agent_config the agent runs
	// (at most 64 characters).
	ConfigSHA256 string `json:"config_sha256"`
	// RestartGeneration is the restart generation the host last applied
	// (>= 0).
	RestartGeneration int64 `json:"restart_generation"`
}
