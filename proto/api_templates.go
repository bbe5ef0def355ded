package proto

// Template is an image template of the Service Catalog (OpenAPI schema
// Template): GET /v1/catalog/templates and …/{ns}/templates answer it,
// POST …/{ns}/templates takes it. The same document, in YAML, is a shipped
// template file (catalog/templates/*.yaml); package catalog validates it.
type Template struct {
	// Name identifies the template (^[a-z0-9][a-z0-9-]{0,62}$; a namespace
	// template cannot take a shipped one's name).
	Name string `yaml:"name" json:"name"`
	// Description is a line for humans.
	Description string `yaml:"description" json:"description,omitempty"`
	// Engine is the database engine ("postgres").
	Engine string `yaml:"engine" json:"engine"`
	// EngineVersion is the engine's major version ("15"). Required.
	EngineVersion string `yaml:"engine_version" json:"engine_version"`
	// AgentVersion is the dbpilot-agent version the image carries.
	// Required.
	AgentVersion string `yaml:"agent_version" json:"agent_version"`
	// BinDir is the folder of the engine's binaries
	// (/usr/lib/postgresql/15/bin).
	BinDir string `yaml:"bin_dir" json:"bin_dir,omitempty"`
	// Packages are the OS packages an image needs (cloud-init installs
	// them).
	Packages []string `yaml:"packages" json:"packages,omitempty"`
	// Parameters are PostgreSQL settings (name → value) of every node.
	Parameters map[string]string `yaml:"parameters" json:"parameters,omitempty"`
	// Handlers is the agent's handlers section (see docs/agent-config.md).
	Handlers map[string]any `yaml:"handlers" json:"handlers,omitempty"`
	// Plans are the resource sizes a cluster may pick, by name ("small").
	// At least one.
	Plans map[string]Plan `yaml:"plans" json:"plans"`
	// HostSelector restricts fleet nodes to hosts carrying all these labels.
	HostSelector map[string]string `yaml:"host_selector" json:"host_selector,omitempty"`
	// AllowColocation lets the fleet provider put two nodes of one cluster
	// on one host (default: never; a host failure would take both).
	AllowColocation bool `yaml:"allow_colocation" json:"allow_colocation,omitempty"`
	// Backup is the default backup policy of clusters created from the
	// template (nil: no backups, no WAL archive).
	Backup *BackupPolicy `yaml:"backup" json:"backup,omitempty"`
	// Alerts overrides the alert rules' default thresholds for clusters of
	// the template (nil: the defaults; a cluster's own overrides win).
	Alerts *AlertThresholds `yaml:"alerts" json:"alerts,omitempty"`
	// Builtin is true for shipped templates (set by the server, not part
	// of the document; ignored in a request).
	Builtin bool `yaml:"-" json:"builtin"`
}

// Plan is a resource size of a [Template]: what each node of a cluster on
// the plan gets.
type Plan struct {
	// CPU is a number of CPUs, 1 to 1024.
	CPU int `yaml:"cpu" json:"cpu"`
	// MemoryMB is memory in MiB (>= 128).
	MemoryMB int `yaml:"memory_mb" json:"memory_mb"`
	// DiskGB is disk in GiB (>= 1).
	DiskGB int `yaml:"disk_gb" json:"disk_gb"`
	// HostSelector adds plan-specific host labels (e.g. disk: nvme) to the
	// template's selector.
	HostSelector map[string]string `yaml:"host_selector" json:"host_selector,omitempty"`
}

// BackupPolicy is a template's default backup policy: where the provider
// supports it (process: a filesystem repository under the server's data
// folder shared by the cluster's nodes), every node gets a backup section
// with these jobs (docs/backups.md).
type BackupPolicy struct {
	// WALArchive turns on continuous WAL archiving (point-in-time recovery).
	WALArchive bool `yaml:"wal_archive" json:"wal_archive"`
	// RunOn is the agents' run_on: prefer-replica, replica, primary or any
	// ("": prefer-replica).
	RunOn string `yaml:"run_on" json:"run_on,omitempty"`
	// Jobs are the scheduled jobs; the first physical job also answers
	// "backup now" requests.
	Jobs []BackupJob `yaml:"jobs" json:"jobs"`
}

// BackupJob is one scheduled job of a [BackupPolicy] (the agent's job
// schema, docs/backups.md, without the repository: the provider's).
type BackupJob struct {
	// Name identifies the job in the template
	// (^[a-z0-9][a-z0-9_.-]{0,62}$, unique).
	Name string `yaml:"name" json:"name"`
	// Description is a line for humans.
	Description string `yaml:"description" json:"description,omitempty"`
	// Schedule is a cron expression or descriptor (@daily).
	Schedule string `yaml:"schedule" json:"schedule"`
	// TimeZone is the IANA zone Schedule is read in ("": UTC).
	TimeZone string `yaml:"time_zone" json:"time_zone,omitempty"`
	// Method is physical, logical or verify.
	Method string `yaml:"method" json:"method"`
	// RetentionCount keeps the newest N good backups (0: no count rule).
	RetentionCount int `yaml:"retention_count" json:"retention_count,omitempty"`
	// RetentionAge keeps backups younger than this (Go duration; "": none).
	RetentionAge string `yaml:"retention_age" json:"retention_age,omitempty"`
}
