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
	"maps"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/agent/postgres"
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
	// DefaultOSUser is postgres.os_user when the agent runs as root and the
	// key is unset: the user Debian's PostgreSQL packages create.
	DefaultOSUser = "postgres"
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
	Report       Report       `yaml:"report"`
	Handlers     handlers.Set `yaml:"handlers"`
	// Backup configures agent-side backups; nil disables them.
	Backup *Backup `yaml:"backup"`
	Log    Log     `yaml:"log"`

	// handlersUserIsOSUser: handlers.user was unset and took
	// postgres.os_user, so a problem with that user is reported once, on
	// postgres.os_user.
	handlersUserIsOSUser bool
}

// DefaultSummaryInterval is the default of report.summary_interval.
const DefaultSummaryInterval = 3 * time.Second

// Report configures what the agent reports on its own, besides the events
// of changes.
type Report struct {
	// SummaryInterval is how often the agent publishes its member summary
	// (io.dbpilot.member.summary.v1, the heartbeat the control plane's
	// alerts read) through the events transport; at least 1s, default
	// DefaultSummaryInterval. Nothing is sent without events.dapr or
	// events.http.
	SummaryInterval time.Duration `yaml:"summary_interval"`
}

// Node identifies this member.
type Node struct {
	// Name is unique within the cluster and matches proto.NamePattern
	// (1-40 lowercase letters, digits or '-').
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
	// BinDir is the absolute directory of initdb, postgres, pg_basebackup,
	// pg_rewind and pg_controldata; default DetectBinDir().
	BinDir string `yaml:"bin_dir"`
	// DataDir is the data directory (PGDATA), not "/".
	DataDir string `yaml:"data_dir"`
	// ListenAddress is rendered as listen_addresses; default node.address.
	ListenAddress string `yaml:"listen_address"`
	// Port is PostgreSQL's TCP port; default DefaultPort.
	Port int `yaml:"port"`
	// OSUser is the OS user PostgreSQL runs as when the agent runs as root
	// (default DefaultOSUser; it must exist and not be root). Ignored when
	// the agent is not root: PostgreSQL then runs as the agent's user.
	OSUser string `yaml:"os_user"`
	// Parameters are extra postgresql.conf settings; those the agent
	// manages are refused (see refusedParameters).
	Parameters map[string]string `yaml:"parameters"`
	// CredentialsFile is a YAML file (mode 0600 or stricter) holding
	// superuser and replication credentials; see Credentials.
	CredentialsFile string `yaml:"credentials_file"`
	// HBA lines go verbatim into pg_hba.conf, between the agent's loopback
	// and catch-all rules.
	HBA []string `yaml:"pg_hba"`
}

// HTTP configures the agent's HTTP endpoint (/health, /primary, /replica, /metrics).
type HTTP struct {
	// Listen is host:port; "" selects DefaultHTTPListen (the endpoint
	// cannot be switched off).
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

// Load reads, strictly decodes, defaults and validates the file at path.
// Relative paths in the file are resolved against the file's directory,
// made absolute, so a path given relative to the working directory works
// too. The returned error joins every problem found (errors.Join); callers
// print one per line.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(b, dir)
}

// RequiredKeys are the keys a configuration must set (no default covers
// them), in file order. postgres.credentials_file may be replaced by the
// password environment variables, and postgres.bin_dir is needed only where
// no /usr/lib/postgresql/*/bin holds the server binaries.
var RequiredKeys = []string{
	"node.name", "node.address", "cluster.namespace", "cluster.name",
	"etcd.endpoints", "state_dir", "postgres.data_dir", "postgres.credentials_file",
}

// errEmpty is the one problem reported for a file with no settings, instead
// of one "required" per key.
var errEmpty = fmt.Errorf("config: the file has no settings; set at least %s (postgres.credentials_file may be replaced by %s and %s; see deploy/agent.example.yaml and docs/agent-config.md)",
	strings.Join(RequiredKeys, ", "), EnvSuperuserPassword, EnvReplicationPassword)

// Parse decodes YAML bytes; relative paths in the config are resolved
// against baseDir, which should be absolute. A document with no settings
// (an empty file, only comments, null or {}) is reported as such, with
// the keys it needs, rather than as one problem per missing key.
func Parse(b []byte, baseDir string) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err == nil && emptyDocument(&doc) {
		return nil, errEmpty
	}
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

// emptyDocument reports whether doc (as yaml.Unmarshal fills a Node) holds
// no settings: no document, a null, or an empty mapping.
func emptyDocument(doc *yaml.Node) bool {
	if doc.Kind == 0 {
		return true
	}
	if doc.Kind != yaml.DocumentNode {
		return false
	}
	if len(doc.Content) == 0 {
		return true
	}
	n := doc.Content[0]
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Tag == "!!null"
	case yaml.MappingNode:
		return len(n.Content) == 0
	}
	return false
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
		c.Postgres.OSUser = DefaultOSUser
	}
	if c.Handlers.User == "" && os.Geteuid() == 0 {
		// Handlers never run as root (handlers.Set.User refuses it): by
		// default they run as PostgreSQL's OS user.
		c.Handlers.User = c.Postgres.OSUser
		c.handlersUserIsOSUser = true
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
	if c.Report.SummaryInterval == 0 {
		c.Report.SummaryInterval = DefaultSummaryInterval
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
// It checks everything the agent would refuse to start with, on the host it
// runs on: the files the configuration names (PostgreSQL binaries, TLS and
// password files, the credentials file and the logins in it), the OS users
// (postgres.os_user when the agent runs as root, handlers.user) and the
// postgres.parameters agent/postgres refuses. It contacts neither etcd nor
// PostgreSQL.
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
	if c.Report.SummaryInterval < time.Second {
		add("report.summary_interval", "must be at least 1s: the control plane counts a member silent after three missed summaries (got %q); use e.g. 3s", c.Report.SummaryInterval)
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
	if c.credentialsReadable() {
		// The logins themselves, as the agent reads them at start-up.
		if _, err := c.LoadCredentials(); err != nil {
			errs = append(errs, unjoin(err)...)
		}
	}
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
	osUserBad := checkOSUser(c.Postgres.OSUser, os.Geteuid() == 0) != ""
	for _, e := range c.Handlers.Validate("handlers") {
		var fe *handlers.FieldError
		if c.handlersUserIsOSUser && osUserBad && errors.As(e, &fe) && fe.Path == "handlers.user" {
			continue // the same user, reported on postgres.os_user
		}
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
	switch {
	case p.BinDir == "":
		add("postgres.bin_dir", "required and no /usr/lib/postgresql/*/bin found; install PostgreSQL or set the directory holding initdb and postgres")
	case !filepath.IsAbs(p.BinDir):
		add("postgres.bin_dir", "must be an absolute path (got %q); write it out in full, e.g. /usr/lib/postgresql/15/bin", p.BinDir)
	default:
		for _, bin := range []string{"initdb", "postgres", "pg_basebackup", "pg_rewind", "pg_controldata"} {
			if st, err := os.Stat(filepath.Join(p.BinDir, bin)); err != nil || st.IsDir() {
				add("postgres.bin_dir", "%s not found in %q; point it at the PostgreSQL server binaries", bin, p.BinDir)
			}
		}
	}
	switch {
	case p.DataDir == "":
		add("postgres.data_dir", "required; set the PostgreSQL data directory, e.g. /var/lib/dbpilot/data")
	case filepath.Clean(p.DataDir) == "/":
		add("postgres.data_dir", "must not be / (got %q); set a directory of its own, e.g. /var/lib/dbpilot/data", p.DataDir)
	}
	if p.Port < 1 || p.Port > 65535 {
		add("postgres.port", "must be within 1..65535 (got %d)", p.Port)
	}
	// An empty listen_address means node.address is empty too (it is the
	// default), which node.address already reports.
	if p.ListenAddress != "" && (strings.TrimSpace(p.ListenAddress) == "" || hasControl(p.ListenAddress) || strings.ContainsAny(p.ListenAddress, `'"\`)) {
		add("postgres.listen_address", "must be an address or a comma-separated list of addresses, without quotes (got %q)", p.ListenAddress)
	}
	if msg := checkOSUser(p.OSUser, os.Geteuid() == 0); msg != "" {
		add("postgres.os_user", "%s", msg)
	}
	errs = append(errs, checkParameters(p.Parameters)...)
	for i, line := range p.HBA {
		if hasControl(line) {
			add(fmt.Sprintf("postgres.pg_hba[%d]", i), "contains control characters; put one rule per list entry")
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

// credentialsReadable reports whether postgres.validate found nothing wrong
// with where the credentials come from, so LoadCredentials may check them.
func (c *Config) credentialsReadable() bool {
	if f := c.Postgres.CredentialsFile; f != "" {
		return checkSecretFile(f) == nil
	}
	return os.Getenv(EnvSuperuserPassword) != "" && os.Getenv(EnvReplicationPassword) != ""
}

// unjoin returns the errors joined in err (errors.Join), or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// checkOSUser returns what is wrong with postgres.os_user, or "". Only an
// agent running as root switches PostgreSQL to that user (it defaults to
// DefaultOSUser then); otherwise PostgreSQL runs as the agent's own user
// and the key is ignored, as agent/postgres does at start-up.
func checkOSUser(name string, root bool) string {
	if !root {
		return ""
	}
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Sprintf("no OS user %q (%v); the agent runs as root and starts PostgreSQL as this user: create it (Debian's postgresql packages create postgres) or name an existing unprivileged user", name, err)
	}
	if u.Uid == "0" {
		return fmt.Sprintf("%q is root (uid 0), and PostgreSQL refuses to run as root; name an unprivileged OS user such as postgres", name)
	}
	for _, id := range []string{u.Uid, u.Gid} {
		if _, err := strconv.ParseUint(id, 10, 32); err != nil {
			return fmt.Sprintf("OS user %q has a non-numeric uid or gid %q; name another user", name, id)
		}
	}
	return ""
}

// refusedParameters are postgresql.conf settings postgres.parameters may not
// hold, with the way to get what they set. It covers everything agent/postgres
// manages (postgres.CheckParameters) plus wal_level and
// unix_socket_directories, which the agent fixes itself.
var refusedParameters = map[string]string{
	"port":                      "use postgres.port instead",
	"listen_addresses":          "use postgres.listen_address instead",
	"cluster_name":              "the agent sets it to node.name",
	"synchronous_standby_names": "use synchronous_mode instead",
	"hot_standby":               "the agent sets it from the node's role",
	"primary_conninfo":          "the agent points replicas at the leader in etcd",
	"primary_slot_name":         "the agent points replicas at the leader in etcd",
	"recovery_target_timeline":  "the agent points replicas at the leader in etcd",
	"wal_level":                 "the agent sets replica, which every member needs",
	"unix_socket_directories":   "the agent serves TCP only",
	"data_directory":            "use postgres.data_dir instead",
	"config_file":               "the agent writes postgresql.conf itself",
	"hba_file":                  "use postgres.pg_hba instead",
	"ident_file":                "the agent writes the files in postgres.data_dir itself",
	"include":                   "put the settings in postgres.parameters instead",
	"include_if_exists":         "put the settings in postgres.parameters instead",
	"include_dir":               "put the settings in postgres.parameters instead",
	"archive_mode":              "set backup.wal_archive for continuous WAL archiving",
	"archive_command":           "set backup.wal_archive for continuous WAL archiving",
	"restore_command":           "set backup.wal_archive for continuous WAL archiving",
}

// checkParameters returns every problem of postgres.parameters, sorted by
// name: those agent/postgres would refuse at start-up, and the parameters
// of refusedParameters. Names compare case-insensitively, as PostgreSQL's.
func checkParameters(params map[string]string) []error {
	var errs []error
	reported := map[string]bool{}
	for _, p := range postgres.CheckParameters(params) {
		path := "postgres.parameters." + p.Name
		if fix, ok := refusedParameters[strings.ToLower(p.Name)]; ok {
			errs = append(errs, fmt.Errorf("%s: is managed by the agent; remove it (%s)", path, fix))
		} else if p.Managed {
			errs = append(errs, fmt.Errorf("%s: is managed by the agent; remove it", path))
		} else {
			errs = append(errs, fmt.Errorf("%s: %s", path, p.Msg))
		}
		reported[p.Name] = true
	}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if fix, ok := refusedParameters[strings.ToLower(k)]; ok && !reported[k] {
			errs = append(errs, fmt.Errorf("postgres.parameters.%s: is managed by the agent; remove it (%s)", k, fix))
		}
	}
	return errs
}

// hasControl reports whether s contains a control character (newline, NUL,
// ...), which would break the rendered PostgreSQL files.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}
