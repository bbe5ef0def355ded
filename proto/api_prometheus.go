package proto

// PrometheusTargetGroup is one element of the answer of GET
// /v1/prometheus/targets (OpenAPI schema PrometheusTargetGroup), in
// Prometheus's HTTP service discovery format (http_sd_configs): one group
// per agent. The answer is a JSON array, [] when there is no agent.
type PrometheusTargetGroup struct {
	// Targets holds the agent's HTTP address, "host:port", whose /metrics
	// Prometheus scrapes (exactly one element).
	Targets []string `json:"targets"`
	// Labels are attached to every series scraped from the target:
	// namespace, project, cluster, node, role (the node's current role as
	// the control plane last saw it: primary, replica or unknown), engine
	// (postgres) and template (the cluster's image template).
	Labels map[string]string `json:"labels"`
}

// Prometheus target labels of [PrometheusTargetGroup.Labels].
const (
	PromLabelNamespace = "namespace"
	PromLabelProject   = "project"
	PromLabelCluster   = "cluster"
	PromLabelNode      = "node"
	PromLabelRole      = "role"
	PromLabelEngine    = "engine"
	PromLabelTemplate  = "template"
)
