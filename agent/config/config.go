// Package config loads and validates the dbpilot-agent YAML configuration.
//
// Decoding is strict (unknown keys are rejected, yaml.v3 KnownFields) and
// validation collects every problem at once; each problem names the config
// path and the fix, e.g. `ttl: must be larger than health.interval + 2 ×
// etcd.request_timeout (3s); raise ttl or lower the others (got 2s)`.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/handlers"
	"github.com/dbpilot/dbpilot/proto"
)

// Defaults applied by Load before validation. They are the values the
// failover benchmark (docs/benchmarks.md) measures as "default settings".
const (
	DefaultTTL              = 5 * time.Second
	DefaultHealthInterval   = 1 * time.Second
	DefaultDialTimeout      = 2 * time.Second
	DefaultRequestTimeout   = 1 * time.Second
	DefaultMaxLagOnFailover = 1 << 20 // bytes (1 MiB), as Patroni's maximum_lag_on_failover default
	DefaultPriority         = 100
	DefaultPort             = 5432
	DefaultHTTPListen       = "127.0.0.1:8008"
)

// minLeaseTTL is etcd's smallest lease TTL with its default election timeout
// (1 s): the server raises anything smaller to 1.5 × election timeout, rounded up.
const minLeaseTTL = 2 * time.Second

// SynchronousMode selects whether commits on the primary wait for a replica.
type SynchronousMode string

// Synchronous modes.
const (
	// SyncOff: asynchronous replication; failover may lose up to
	// maximum_lag_on_failover bytes of acknowledged writes.
	SyncOff SynchronousMode = "off"
	// SyncOn: once a replica has joined, every commit waits until at least one
	// replica of the synchronous set has flushed it (ANY 1 quorum), and only a
	// member of that set may be promoted automatically.
	SyncOn SynchronousMode = "on"
)

// FenceMargin is how much provable lease a primary must have left to stay
// writable: one etcd request plus 500 ms to stop PostgreSQL immediately.
func FenceMargin(requestTimeout time.Duration) time.Duration {
	return requestTimeout + 500*time.Millisecond
}

// Failsafe reports whether failsafe mode is on (the default).
func (c *Config) Failsafe() bool { return c.FailsafeMode != "off" }

// Config is the whole agent configuration file.
type Config struct {
	Node                 Node            `yaml:"node"`
	Cluster              Cluster         `yaml:"cluster"`
	Etcd                 Etcd            `yaml:"etcd"`
	TTL                  time.Duration   `yaml:"ttl"`
	Health               Health          `yaml:"health"`
	MaximumLagOnFailover int64           `yaml:"maximum_lag_on_failover"`
	SynchronousMode      SynchronousMode `yaml:"synchronous_mode"`
	// FailsafeMode "on" (default) keeps a primary writable through an
	// outage of etcd as a whole, as long as every member of the last known
	// membership confirms it over the agents' HTTP API; "off" fences the
	// primary when its lease can no longer be proven. See
	// docs/architecture.md, "Failsafe mode".
	FailsafeMode string       `yaml:"failsafe_mode"`
	Tags         Tags         `yaml:"tags"`
	StateDir     string       `yaml:"state_dir"`
	Postgres     Postgres     `yaml:"postgres"`
	HTTP         HTTP         `yaml:"http"`
	Events       Events       `yaml:"events"`
	Handlers     handlers.Set `yaml:"handlers"`
	// Backup configures agent-side backups; nil disables them.
	Backup *Backup `yaml:"backup"`
	Log    Log     `yaml:"log"`
}

// Node identifies this member.
type Node struct {
	// Name is unique within the cluster: [a-z0-9][a-z0-9-_.]{0,62}.
	Name string `yaml:"name"`
	// Address is the host name or IP other members and clients reach this
	// node at (primary_conninfo host of the replicas).
	Address string `yaml:"address"`
}

// Cluster is the cluster identity of the whitepaper's cluster document.
type Cluster struct {
	Namespace string `yaml:"namespace"`
	Project   string `yaml:"project"`
	Name      string `yaml:"name"`
}

// Etcd is how the agent reaches the coordination store.
type Etcd struct {
	Endpoints      []string      `yaml:"endpoints"`
	TLS            TLS           `yaml:"tls"`
	Username       string        `yaml:"username"`
	PasswordFile   string        `yaml:"password_file"`
	DialTimeout    time.Duration `yaml:"dial_timeout"`
	RequestTimeout time.Duration `yaml:"request_timeout"`
}

// TLS names PEM files for etcd client TLS; all empty means plain TCP.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether any TLS file is configured.
func (t TLS) Enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// Health configures the health loop.
type Health struct {
	// Interval between HA cycles and engine health checks; default 1s.
	Interval time.Duration `yaml:"interval"`
}

// Tags are member properties that steer leader election.
type Tags struct {
	// NoFailover keeps this member from ever being promoted automatically.
	NoFailover bool `yaml:"nofailover"`
	// Priority breaks ties between candidates with the same LSN; higher wins.
	// 0 means "never promote", as nofailover.
	Priority *int `yaml:"priority"`
}

// PriorityValue returns the configured priority or DefaultPriority.
func (t Tags) PriorityValue() int {
	if t.Priority == nil {
		return DefaultPriority
	}
	return *t.Priority
}

// Postgres configures the local PostgreSQL instance.
type Postgres struct {
	BinDir        string            `yaml:"bin_dir"`
	DataDir       string            `yaml:"data_dir"`
	ListenAddress string            `yaml:"listen_address"`
	Port          int               `yaml:"port"`
	OSUser        string            `yaml:"os_user"`
	Parameters    map[string]string `yaml:"parameters"`
	// CredentialsFile is a YAML file (mode 0600 or stricter) holding
	// superuser and replication credentials; see Credentials.
	CredentialsFile string   `yaml:"credentials_file"`
	HBA             []string `yaml:"pg_hba"`
}

// HTTP configures the agent's HTTP endpoint (/health, /primary, /replica, /metrics).
type HTTP struct {
	// Listen is host:port; "" disables the endpoint.
	Listen string `yaml:"listen"`
}

// Events configures the event transport to the control plane. With neither
// set, events are logged and dropped.
type Events struct {
	Dapr *DaprEvents `yaml:"dapr"`
	HTTP *HTTPEvents `yaml:"http"`
}

// DaprEvents publishes through a Dapr sidecar's pub/sub building block,
// with the sidecar's HTTP publish API.
type DaprEvents struct {
	// HTTPAddress is the sidecar's HTTP API as host:port (daprd
	// --dapr-http-port), e.g. 127.0.0.1:3500.
	HTTPAddress string `yaml:"http_address"`
	// GRPCAddress is the removed gRPC address; Validate rejects it and
	// names http_address, rather than the decoder calling it unknown.
	GRPCAddress string `yaml:"grpc_address"`
	PubSub      string `yaml:"pubsub"`
	Topic       string `yaml:"topic"`
}

// validPort reports whether p is a TCP port number 1-65535.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536
}

// HTTPEvents posts structured CloudEvents to a URL.
type HTTPEvents struct {
	URL     string        `yaml:"url"`
	Timeout time.Duration `yaml:"timeout"`
	// MaxBatch is the most waiting events sent in one request as a
	// CloudEvents batch (application/cloudevents-batch+json). Default 1:
	// every event alone, which any CloudEvents HTTP receiver understands;
	// dbpilot-server's ingest accepts batches and the configs it renders
	// set 100. Range 1..1000.
	MaxBatch int `yaml:"max_batch"`
}

// Log configures the zap logger.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error, default info
	Format string `yaml:"format"` // json|console, default json
}

// Load reads, strictly decodes, defaults and validates the file at path. The
// returned error joins every problem found (errors.Join); callers print one
// per line.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(b, filepath.Dir(path))
}

// Parse decodes YAML bytes; relative paths in the config are resolved
// against baseDir.
func Parse(b []byte, baseDir string) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, decodeError(err)
	}
	c.applyDefaults(baseDir)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

var unknownFieldRE = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)

// decodeError rewrites yaml.v3's errors so unknown keys name the key, the
// line and the fix.
func decodeError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("config: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var errs []error
	for _, e := range te.Errors {
		if m := unknownFieldRE.FindStringSubmatch(e); m != nil {
			errs = append(errs, fmt.Errorf("%s: unknown key (line %s); check its spelling and level against docs/agent-config.md", m[2], m[1]))
			continue
		}
		errs = append(errs, fmt.Errorf("config: %s", e))
	}
	return errors.Join(errs...)
}

func abs(base, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}

func (c *Config) applyDefaults(baseDir string) {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Health.Interval == 0 {
		c.Health.Interval = DefaultHealthInterval
	}
	if c.Etcd.DialTimeout == 0 {
		c.Etcd.DialTimeout = DefaultDialTimeout
	}
	if c.Etcd.RequestTimeout == 0 {
		c.Etcd.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaximumLagOnFailover == 0 {
		c.MaximumLagOnFailover = DefaultMaxLagOnFailover
	}
	if c.SynchronousMode == "" {
		c.SynchronousMode = SyncOff
	}
	if c.FailsafeMode == "" {
		c.FailsafeMode = "on"
	}
	if c.Cluster.Project == "" {
		c.Cluster.Project = "default"
	}
	if c.Postgres.Port == 0 {
		c.Postgres.Port = DefaultPort
	}
	if c.Postgres.ListenAddress == "" {
		c.Postgres.ListenAddress = c.Node.Address
	}
	if c.Postgres.OSUser == "" && os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root; Debian's packages create this user.
		c.Postgres.OSUser = "postgres"
	}
	if c.Handlers.User == "" && os.Geteuid() == 0 {
		// Handlers never run as root (handlers.Set.User refuses it): by
		// default they run as PostgreSQL's OS user.
		c.Handlers.User = c.Postgres.OSUser
	}
	if c.Postgres.BinDir == "" {
		c.Postgres.BinDir = DetectBinDir()
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = DefaultHTTPListen
	}
	if c.Events.HTTP != nil && c.Events.HTTP.Timeout == 0 {
		c.Events.HTTP.Timeout = 5 * time.Second
	}
	if c.Events.HTTP != nil && c.Events.HTTP.MaxBatch == 0 {
		c.Events.HTTP.MaxBatch = 1
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	c.StateDir = abs(baseDir, c.StateDir)
	c.Postgres.DataDir = abs(baseDir, c.Postgres.DataDir)
	c.Postgres.CredentialsFile = abs(baseDir, c.Postgres.CredentialsFile)
	c.Etcd.TLS.CAFile = abs(baseDir, c.Etcd.TLS.CAFile)
	c.Etcd.TLS.CertFile = abs(baseDir, c.Etcd.TLS.CertFile)
	c.Etcd.TLS.KeyFile = abs(baseDir, c.Etcd.TLS.KeyFile)
	c.Etcd.PasswordFile = abs(baseDir, c.Etcd.PasswordFile)
	if c.Backup != nil {
		c.Backup.applyDefaults(c, baseDir)
	}
}

// DetectBinDir returns the newest /usr/lib/postgresql/*/bin holding a
// postgres binary (Debian layout), or "" when none is found.
func DetectBinDir() string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	best := ""
	for _, m := range matches {
		if best == "" || versionLess(best, m) {
			best = m
		}
	}
	if best == "" {
		return ""
	}
	return filepath.Dir(best)
}

func versionLess(a, b string) bool {
	va := filepath.Base(filepath.Dir(filepath.Dir(a)))
	vb := filepath.Base(filepath.Dir(filepath.Dir(b)))
	if len(va) != len(vb) {
		return len(va) < len(vb)
	}
	return va < vb
}

// nameRE is the one name rule of dbpilot (proto.NamePattern): the
// control plane, its events contract and the etcd keyspace all hold names
// to it, so an agent refuses a name its events could not carry.
var nameRE = regexp.MustCompile(proto.NamePattern)

// Validate returns every problem joined, each as "path: problem (got …); fix".
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	checkName := func(path, v string) {
		switch {
		case v == "":
			add(path, "required; set a lowercase name like \"db-node-1\"")
		case !nameRE.MatchString(v):
			add(path, "must match %s (got %q); use 1-40 lowercase letters, digits or '-', starting and ending with a letter or digit", nameRE, v)
		}
	}
	checkName("node.name", c.Node.Name)
	if c.Node.Address == "" {
		add("node.address", "required; set the host or IP other members reach this node at")
	}
	checkName("cluster.namespace", c.Cluster.Namespace)
	checkName("cluster.project", c.Cluster.Project)
	checkName("cluster.name", c.Cluster.Name)

	if len(c.Etcd.Endpoints) == 0 {
		add("etcd.endpoints", "required; list at least one URL such as http://127.0.0.1:2379")
	}
	for i, ep := range c.Etcd.Endpoints {
		if !strings.HasPrefix(ep, "http://") && !strings.HasPrefix(ep, "https://") && !strings.HasPrefix(ep, "unix://") {
			add(fmt.Sprintf("etcd.endpoints[%d]", i), "must start with http://, https:// or unix:// (got %q)", ep)
		}
	}
	for path, f := range map[string]string{"etcd.tls.ca_file": c.Etcd.TLS.CAFile, "etcd.tls.cert_file": c.Etcd.TLS.CertFile, "etcd.tls.key_file": c.Etcd.TLS.KeyFile, "etcd.password_file": c.Etcd.PasswordFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				add(path, "cannot read %q: %v; fix the path", f, errors.Unwrap(err))
			}
		}
	}
	if (c.Etcd.TLS.CertFile == "") != (c.Etcd.TLS.KeyFile == "") {
		add("etcd.tls", "cert_file and key_file go together; set both or neither")
	}
	if c.Etcd.DialTimeout < 0 {
		add("etcd.dial_timeout", "must be > 0 (got %q)", c.Etcd.DialTimeout)
	}
	if c.Etcd.RequestTimeout < 0 {
		add("etcd.request_timeout", "must be > 0 (got %q)", c.Etcd.RequestTimeout)
	}
	switch {
	case c.Health.Interval < 100*time.Millisecond:
		add("health.interval", "must be at least 100ms (got %q)", c.Health.Interval)
	}
	switch {
	case c.TTL < minLeaseTTL:
		add("ttl", "must be at least %s, etcd's minimum lease TTL (got %q)", minLeaseTTL, c.TTL)
	case c.TTL%time.Second != 0:
		add("ttl", "must be whole seconds, etcd leases have 1s granularity (got %q); use e.g. 5s", c.TTL)
	}
	if need := c.Health.Interval + 2*c.Etcd.RequestTimeout + FenceMargin(c.Etcd.RequestTimeout); c.TTL <= need {
		add("ttl", "must be larger than health.interval + 2 × etcd.request_timeout + the fencing margin (etcd.request_timeout + 500ms) = %s, or a healthy primary cannot renew its lease before it must fence itself; raise ttl or lower the others (got %s)", need, c.TTL)
	}
	if c.MaximumLagOnFailover < 0 {
		add("maximum_lag_on_failover", "must be >= 0 bytes (got %d)", c.MaximumLagOnFailover)
	}
	switch c.SynchronousMode {
	case SyncOff, SyncOn:
	default:
		add("synchronous_mode", "must be \"off\" or \"on\" (got %q)", c.SynchronousMode)
	}
	if c.FailsafeMode != "on" && c.FailsafeMode != "off" {
		add("failsafe_mode", "must be \"on\" or \"off\" (got %q)", c.FailsafeMode)
	}
	if p := c.Tags.PriorityValue(); p < 0 || p > 1000 {
		add("tags.priority", "must be within 0..1000 (got %d)", p)
	}
	if c.StateDir == "" {
		add("state_dir", "required; set a directory for the bootstrap lock file and local state, e.g. /var/lib/dbpilot")
	}
	errs = append(errs, c.Postgres.validate()...)
	if c.HTTP.Listen != "" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			add("http.listen", "must be host:port (got %q)", c.HTTP.Listen)
		}
	}
	if c.Events.Dapr != nil && c.Events.HTTP != nil {
		add("events", "set only one of dapr or http")
	}
	if d := c.Events.Dapr; d != nil {
		if d.GRPCAddress != "" {
			add("events.dapr.grpc_address", "no longer supported: the agent publishes through the sidecar's HTTP API; replace it with events.dapr.http_address, daprd's --dapr-http-port address (e.g. 127.0.0.1:3500)")
		}
		if d.HTTPAddress == "" && d.GRPCAddress == "" {
			add("events.dapr.http_address", "required; the sidecar's HTTP API as host:port (daprd --dapr-http-port), e.g. 127.0.0.1:3500")
		} else if host, port, err := net.SplitHostPort(d.HTTPAddress); d.HTTPAddress != "" && (err != nil || host == "" || !validPort(port)) {
			add("events.dapr.http_address", "must be host:port with a port 1-65535, e.g. 127.0.0.1:3500 (got %q)", d.HTTPAddress)
		}
		if d.PubSub == "" {
			add("events.dapr.pubsub", "required; the pub/sub component name, e.g. dbpilot-pubsub")
		}
		if d.Topic == "" {
			add("events.dapr.topic", "required; e.g. dbpilot.agent.events")
		}
	}
	if h := c.Events.HTTP; h != nil && !strings.HasPrefix(h.URL, "http://") && !strings.HasPrefix(h.URL, "https://") {
		add("events.http.url", "must be an http:// or https:// URL (got %q)", h.URL)
	}
	if h := c.Events.HTTP; h != nil && (h.MaxBatch < 1 || h.MaxBatch > 1000) {
		add("events.http.max_batch", "must be between 1 and 1000 events (1 sends each event alone; got %d)", h.MaxBatch)
	}
	if c.Backup != nil {
		errs = append(errs, c.Backup.validate()...)
	}
	for _, e := range c.Handlers.Validate("handlers") {
		errs = append(errs, e)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "must be debug, info, warn or error (got %q)", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		add("log.format", "must be json or console (got %q)", c.Log.Format)
	}
	return errors.Join(errs...)
}

func (p Postgres) validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	if p.BinDir == "" {
		add("postgres.bin_dir", "required and no /usr/lib/postgresql/*/bin found; install PostgreSQL or set the directory holding initdb and postgres")
	} else {
		for _, bin := range []string{"initdb", "postgres", "pg_basebackup", "pg_rewind", "pg_controldata"} {
			if _, err := os.Stat(filepath.Join(p.BinDir, bin)); err != nil {
				add("postgres.bin_dir", "%s not found in %q; point it at the PostgreSQL server binaries", bin, p.BinDir)
			}
		}
	}
	if p.DataDir == "" {
		add("postgres.data_dir", "required; set the PostgreSQL data directory, e.g. /var/lib/dbpilot/data")
	}
	if p.Port < 1 || p.Port > 65535 {
		add("postgres.port", "must be within 1..65535 (got %d)", p.Port)
	}
	if p.ListenAddress == "" {
		add("postgres.listen_address", "required (defaults to node.address)")
	}
	for k := range p.Parameters {
		switch k {
		case "port", "listen_addresses", "primary_conninfo", "synchronous_standby_names", "hot_standby", "wal_level", "data_directory", "hba_file", "unix_socket_directories":
			add("postgres.parameters."+k, "is managed by the agent; remove it (use postgres.port / listen_address / synchronous_mode instead)")
		case "archive_mode", "archive_command", "restore_command":
			add("postgres.parameters."+k, "is managed by the agent; remove it (set backup.wal_archive for continuous WAL archiving)")
		}
	}
	if p.CredentialsFile == "" {
		if os.Getenv(EnvSuperuserPassword) == "" || os.Getenv(EnvReplicationPassword) == "" {
			add("postgres.credentials_file", "required unless %s and %s are set; point it at a 0600 YAML file with superuser and replication credentials", EnvSuperuserPassword, EnvReplicationPassword)
		}
	} else if err := checkSecretFile(p.CredentialsFile); err != nil {
		add("postgres.credentials_file", "%v", err)
	}
	return errs
}
