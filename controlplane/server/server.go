// Package server wires the control plane together: store, embedded or
// external etcd, the event bus and its consumers, the workflow engine, the
// providers and the REST API, with graceful shutdown.
package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/alerts"
	"github.com/dbpilot/dbpilot/controlplane/api"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/infra/fleet"
	"github.com/dbpilot/dbpilot/internal/embedetcd"
)

// Config is the server configuration (YAML, strict).
type Config struct {
	// Listen is the API address (host:port; port 0 picks one).
	Listen string `yaml:"listen"`
	// DataDir holds the SQLite store, the embedded etcd, the ingest secret
	// and the process provider's nodes.
	DataDir string `yaml:"data_dir"`
	// Store is a SQLite path or a postgres:// URL; default DataDir/dbpilot.db.
	Store string `yaml:"store"`
	// EtcdEndpoints of an external etcd; empty runs an embedded one. A new
	// embedded etcd runs with authentication: its root password is
	// generated at the first start and kept in DataDir/etcd-root.password
	// (0600); one created by an older server without it stays open.
	EtcdEndpoints []string `yaml:"etcd_endpoints"`
	// EtcdUsername is the external etcd user the control plane connects
	// as: root, or a user whose role may manage users and roles and read
	// and write /dbpilot/v1/. When set, every cluster's agents get their
	// own etcd user whose role covers only the cluster's prefix
	// (docs/security.md); empty: no authentication, and agents get no
	// etcd credentials.
	EtcdUsername string `yaml:"etcd_username"`
	// EtcdPasswordFile holds EtcdUsername's password (required with it).
	EtcdPasswordFile string `yaml:"etcd_password_file"`
	// EtcdTLS are the control plane's client TLS files for an external
	// etcd (https:// endpoints).
	EtcdTLS EtcdTLSConfig `yaml:"etcd_tls"`
	// AgentEtcdCAFile, when set, is a PEM CA bundle rendered into every
	// node (etcd.tls.ca_file): the agents verify etcd's certificate with it.
	AgentEtcdCAFile string `yaml:"agent_etcd_ca_file"`
	// AgentBin is the dbpilot-agent binary the process provider runs;
	// default: next to this executable, else on PATH.
	AgentBin string `yaml:"agent_bin"`
	// Instance names this replica; default: hostname-pid.
	Instance string `yaml:"instance"`
	// ReadyTimeout bounds provisioning waits; default 3m.
	ReadyTimeout time.Duration `yaml:"ready_timeout"`
	// BackupTimeout bounds an on-demand backup once an agent runs it;
	// default 12h.
	BackupTimeout time.Duration `yaml:"backup_timeout"`
	// AgentTTL and AgentInterval are passed to generated agent configs.
	AgentTTL      time.Duration `yaml:"agent_ttl"`
	AgentInterval time.Duration `yaml:"agent_interval"`
	AgentLogLevel string        `yaml:"agent_log_level"`
	// Bus selects the event bus; default embedded.
	Bus BusConfig `yaml:"bus"`
	// CloudInit says how rendered user-data installs the agent binary.
	CloudInit CloudInitConfig `yaml:"cloud_init"`
	// EventRetention is how long the event history keeps every event type
	// but member state_changed; default 720h (30 days); a negative value
	// keeps them forever.
	EventRetention time.Duration `yaml:"event_retention"`
	// StateEventRetention is how long member state_changed events (the
	// bulk of the history) are kept; default 48h; negative: forever.
	StateEventRetention time.Duration `yaml:"state_event_retention"`
	// AuditRetention is how long audit log entries are kept; default 2160h
	// (90 days); a negative value keeps them forever.
	AuditRetention time.Duration `yaml:"audit_retention"`
	// FailedAuthRate is how many requests failing authentication (missing,
	// unknown or revoked token) one client IP may make per second before
	// it gets 429; default 1. FailedAuthBurst is how many it may make at
	// once; default 30.
	FailedAuthRate  float64 `yaml:"failed_auth_rate"`
	FailedAuthBurst int     `yaml:"failed_auth_burst"`
	// PruneInterval is how often old events and audit entries are deleted;
	// default 1m.
	PruneInterval time.Duration `yaml:"prune_interval"`
	// RepairInterval is how often the repair reconciler asks the providers
	// whether the nodes of Ready and Degraded clusters run, and restarts
	// those that do not (operation kind repair); nil: DefaultRepairInterval;
	// 0 disables it.
	RepairInterval *time.Duration `yaml:"repair_interval"`
	// Alerts configures the alert engine (docs/api.md, "Alerts").
	Alerts AlertsConfig `yaml:"alerts"`
}

// AlertsConfig configures the alert engine.
type AlertsConfig struct {
	// Enabled turns the engine on (nil: on). With several server replicas
	// on one PostgreSQL store, enable it on one replica only: each engine
	// notifies on its own.
	Enabled *bool `yaml:"enabled"`
	// Interval between two evaluations; default 1s.
	Interval time.Duration `yaml:"interval"`
	// AllowPrivateWebhooks lets webhook channels reach loopback and
	// private addresses (dev mode sets it); link-local addresses (cloud
	// metadata) are refused regardless.
	AllowPrivateWebhooks bool `yaml:"allow_private_webhooks"`
}

// EtcdTLSConfig names PEM files for the control plane's etcd client.
type EtcdTLSConfig struct {
	// CAFile verifies etcd's server certificates.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate and its key, for
	// etcd's client-certificate authentication (both or neither).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// DefaultRepairInterval is the repair reconciler's interval when the
// configuration does not set repair_interval.
const DefaultRepairInterval = 30 * time.Second

// CloudInitConfig configures cloud-init rendering.
type CloudInitConfig struct {
	// AgentURL is where machines download dbpilot-agent (empty: the image
	// has it in /usr/local/bin).
	AgentURL string `yaml:"agent_url"`
	// AgentSHA256 is checked after the download.
	AgentSHA256 string `yaml:"agent_sha256"`
}

// BusConfig selects how control-plane services and agents exchange events.
type BusConfig struct {
	// Kind is "embedded" (default: in process, no sidecar) or "dapr".
	Kind string `yaml:"kind"`
	// Dapr configures the Dapr bus (kind: dapr).
	Dapr DaprConfig `yaml:"dapr"`
}

// DaprConfig names the server's sidecar and pub/sub component.
type DaprConfig struct {
	// GRPCAddress is the sidecar's gRPC API; default 127.0.0.1:50001.
	GRPCAddress string `yaml:"grpc_address"`
	// PubSub is the pub/sub component name; default dbpilot-pubsub.
	PubSub string `yaml:"pubsub"`
	// AppListen is where the server serves its topic subscriptions
	// (daprd --app-port); default 127.0.0.1:6002.
	AppListen string `yaml:"app_listen"`
	// AgentHTTPAddress, when set, makes provisioned agents publish through
	// a sidecar whose HTTP API listens at this host:port (daprd
	// --dapr-http-port; events.dapr.http_address in their config) instead
	// of posting to the server's ingest endpoint.
	AgentHTTPAddress string `yaml:"agent_http_address"`
	// AgentGRPCAddress is the removed agent_grpc_address (agents publish
	// over the sidecar's HTTP API now); LoadConfig rejects it, naming
	// agent_http_address.
	AgentGRPCAddress string `yaml:"agent_grpc_address"`
}

// Bus kinds.
const (
	BusEmbedded = "embedded"
	BusDapr     = "dapr"
)

// LoadConfig reads a YAML config strictly.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if c.DataDir == "" {
		return Config{}, fmt.Errorf("config %s: data_dir: required", path)
	}
	if k := c.Bus.Kind; k != "" && k != BusEmbedded && k != BusDapr {
		return Config{}, fmt.Errorf("config %s: bus.kind: must be embedded or dapr (got %q)", path, k)
	}
	if c.Bus.Dapr.AgentGRPCAddress != "" {
		return Config{}, fmt.Errorf("config %s: bus.dapr.agent_grpc_address: no longer supported (agents publish through the sidecar's HTTP API); replace it with bus.dapr.agent_http_address, the agents' daprd --dapr-http-port address, e.g. 127.0.0.1:3500", path)
	}
	for _, r := range []struct {
		name string
		v    time.Duration
	}{{"event_retention", c.EventRetention}, {"state_event_retention", c.StateEventRetention}, {"audit_retention", c.AuditRetention}} {
		if r.v > 0 && r.v < time.Hour {
			return Config{}, fmt.Errorf("config %s: %s: must be at least 1h, or negative to keep forever (got %s)", path, r.name, r.v)
		}
	}
	if c.FailedAuthRate < 0 || c.FailedAuthBurst < 0 {
		return Config{}, fmt.Errorf("config %s: failed_auth_rate, failed_auth_burst: must be > 0 (0: the defaults 1 and 30)", path)
	}
	if c.PruneInterval < 0 {
		return Config{}, fmt.Errorf("config %s: prune_interval: must be > 0, e.g. 1m (got %s)", path, c.PruneInterval)
	}
	if (c.EtcdUsername == "") != (c.EtcdPasswordFile == "") {
		return Config{}, fmt.Errorf("config %s: etcd_username and etcd_password_file go together; set both or neither", path)
	}
	if c.EtcdUsername != "" && len(c.EtcdEndpoints) == 0 {
		return Config{}, fmt.Errorf("config %s: etcd_username: only with etcd_endpoints (the embedded etcd makes its own root password)", path)
	}
	if (c.EtcdTLS.CertFile == "") != (c.EtcdTLS.KeyFile == "") {
		return Config{}, fmt.Errorf("config %s: etcd_tls: cert_file and key_file go together; set both or neither", path)
	}
	if c.Alerts.Interval < 0 || (c.Alerts.Interval > 0 && c.Alerts.Interval < 100*time.Millisecond) {
		return Config{}, fmt.Errorf("config %s: alerts.interval: must be at least 100ms, e.g. 1s (got %s)", path, c.Alerts.Interval)
	}
	if c.RepairInterval != nil && *c.RepairInterval < 0 {
		return Config{}, fmt.Errorf("config %s: repair_interval: must be >= 0 (0 disables repairs; got %s)", path, *c.RepairInterval)
	}
	return c, nil
}

// Server is a running control plane.
type Server struct {
	cfg   Config
	log   *zap.Logger
	URL   string // API base URL
	Store *store.Store
	// Etcd is the admin side of etcd (agent/dcs/admin) the workflows and
	// the API use.
	Etcd *admin.Admin
	// EtcdURL is the client URL agents use.
	EtcdURL    string
	Projection *controlplane.Projection
	Engine     *controlplane.Engine
	// Repairer restarts nodes whose provider reports them not running.
	Repairer *controlplane.Repairer
	Process  *infra.Process
	// Fleet is the fleet provider (nodes on enrolled hosts).
	Fleet *fleet.Fleet
	// Alerts is the alert engine and Notifier its notification sender
	// (nil when alerts.enabled is false).
	Alerts   *alerts.Engine
	Notifier *alerts.Notifier

	api      *api.API
	daprBus  *controlplane.DaprBus
	daprSub  *controlplane.DaprSubscriber
	embedded *embed.Etcd
	// etcdAuth: the control plane authenticates to etcd, so every
	// cluster's agents get their own etcd user.
	etcdAuth bool
	http     *http.Server
	ln       net.Listener
	cancel   context.CancelFunc
	served   chan error
	pruned   chan struct{} // closed when the event pruner stopped
}

// Start opens everything and serves the API until Close (or ctx ends).
func Start(ctx context.Context, cfg Config, log *zap.Logger) (*Server, error) {
	s := &Server{cfg: cfg, log: log}
	if err := s.start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) start(ctx context.Context) error {
	cfg := &s.cfg
	// Private to the server's user (the process provider adds o+x so that
	// PostgreSQL's OS user can reach its nodes' folders).
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if cfg.Store == "" {
		cfg.Store = filepath.Join(cfg.DataDir, "dbpilot.db")
	}
	if cfg.Instance == "" {
		h, _ := os.Hostname()
		cfg.Instance = h + "-" + strconv.Itoa(os.Getpid()) + "-" + randHex(3)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	var err error
	if s.Store, err = store.Open(ctx, cfg.Store); err != nil {
		return err
	}
	secret, err := ingestSecret(cfg.DataDir)
	if err != nil {
		return err
	}
	if err := s.startEtcd(ctx); err != nil {
		return err
	}
	agentBin := cfg.AgentBin
	if agentBin == "" {
		agentBin = findAgent()
	}
	if s.Process, err = infra.NewProcess(filepath.Join(cfg.DataDir, "nodes"), agentBin, s.log); err != nil {
		return err
	}
	s.Fleet = fleet.New(s.Store, s.log)
	if err := s.Process.SetBackupRoot(filepath.Join(cfg.DataDir, "backups")); err != nil {
		return err
	}
	// Agents keep the ingest URL in their config: a port picked at random
	// (":0") is remembered and reused after a restart.
	listen := cfg.Listen
	apiPortFile := filepath.Join(cfg.DataDir, "api.port")
	if strings.HasSuffix(listen, ":0") {
		if b, err := os.ReadFile(apiPortFile); err == nil {
			listen = strings.TrimSuffix(listen, "0") + strings.TrimSpace(string(b))
		}
	}
	if s.ln, err = net.Listen("tcp", listen); err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	_ = os.WriteFile(apiPortFile, []byte(strconv.Itoa(s.ln.Addr().(*net.TCPAddr).Port)), 0o644)
	s.URL = "http://" + s.ln.Addr().String()

	s.Projection = controlplane.NewProjection(s.Store, s.log)
	base := s.URL
	agent := infra.AgentSettings{EtcdEndpoints: []string{s.EtcdURL}, TTL: cfg.AgentTTL, Interval: cfg.AgentInterval, LogLevel: cfg.AgentLogLevel}
	if cfg.AgentEtcdCAFile != "" {
		ca, err := os.ReadFile(cfg.AgentEtcdCAFile)
		if err != nil {
			return fmt.Errorf("agent_etcd_ca_file: %w", err)
		}
		agent.EtcdCAPEM = string(ca)
	}
	var etcdAuth *controlplane.AgentEtcdAuth
	var agentEtcdPassword func(string) string
	if s.etcdAuth {
		etcdAuth = &controlplane.AgentEtcdAuth{Secret: secret}
		agentEtcdPassword = func(clusterID string) string { return controlplane.AgentEtcdPassword(secret, clusterID) }
	}
	if cfg.Bus.Kind == BusDapr {
		d := &cfg.Bus.Dapr
		if d.GRPCAddress == "" {
			d.GRPCAddress = "127.0.0.1:50001"
		}
		if d.PubSub == "" {
			d.PubSub = "dbpilot-pubsub"
		}
		if d.AppListen == "" {
			d.AppListen = "127.0.0.1:6002"
		}
		if d.AgentHTTPAddress != "" {
			agent.Dapr = &infra.DaprSettings{HTTPAddress: d.AgentHTTPAddress, PubSub: d.PubSub, Topic: controlplane.TopicAgentEvents}
		}
	}
	providers := map[string]infra.Provider{"process": s.Process, "fleet": s.Fleet}
	s.Engine = controlplane.NewEngine(controlplane.EngineConfig{
		Instance: cfg.Instance, ReadyTimeout: cfg.ReadyTimeout, BackupTimeout: cfg.BackupTimeout,
		Agent: agent, EtcdAuth: etcdAuth,
		EventsURL: func(clusterID string) string {
			u, _ := url.Parse(base + "/v1/ingest/events")
			u.User = url.UserPassword(clusterID, controlplane.IngestKey(secret, clusterID))
			return u.String()
		},
		Record: s.Projection.Record,
	}, s.Store, s.Etcd, providers, s.log)
	var bus controlplane.Bus
	if cfg.Bus.Kind == BusDapr {
		d := cfg.Bus.Dapr
		// Serve the subscriptions first: daprd waits for its app before it
		// reads them.
		s.daprSub = controlplane.NewDaprSubscriber(d.AppListen, d.PubSub, s.log)
		if err := s.daprSub.Subscribe(controlplane.TopicAgentEvents, s.Projection.Handle); err != nil {
			return err
		}
		if err := s.daprSub.Subscribe(controlplane.TopicControlPlane, s.Engine.Handle); err != nil {
			return err
		}
		if err := s.daprSub.Start(); err != nil {
			return err
		}
		cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
		s.daprBus, err = controlplane.NewDaprBus(cctx, d.GRPCAddress, d.PubSub)
		ccancel()
		if err != nil {
			return err
		}
		bus = s.daprBus
	} else {
		eb := controlplane.NewEmbeddedBus()
		eb.SubscribeBatch(controlplane.TopicAgentEvents, s.Projection.HandleBatch)
		eb.Subscribe(controlplane.TopicControlPlane, s.Engine.Handle)
		bus = eb
	}

	var binding alerts.BindingFunc
	if s.daprBus != nil {
		binding = s.daprBus.InvokeBinding
	}
	if cfg.Alerts.Enabled == nil || *cfg.Alerts.Enabled {
		s.Notifier = alerts.NewNotifier(s.Store, alerts.NotifierConfig{Binding: binding, AllowPrivate: cfg.Alerts.AllowPrivateWebhooks}, s.log)
		s.Alerts = alerts.NewEngine(s.Store, alerts.Config{Interval: cfg.Alerts.Interval, AgentTTL: cfg.AgentTTL, Record: s.Projection.Record,
			Notifier: s.Notifier}, s.log)
		s.Projection.SetSummarySink(s.Alerts.Summary)
	}

	a := api.New(api.Deps{Store: s.Store, Bus: bus, Projection: s.Projection, Etcd: s.Etcd, Instance: cfg.Instance, DaprBindings: binding != nil,
		IngestSecret: secret, AgentEtcdPassword: agentEtcdPassword, Providers: []string{"process", "fleet"}, Log: s.log.Named("api"),
		AgentAddress: agentAddress(providers), CloudInit: s.cloudInit, FailedAuthRate: cfg.FailedAuthRate, FailedAuthBurst: cfg.FailedAuthBurst})
	s.api = a
	repairEvery := DefaultRepairInterval
	if cfg.RepairInterval != nil {
		repairEvery = *cfg.RepairInterval
	}
	s.Repairer = controlplane.NewRepairer(controlplane.RepairConfig{Interval: repairEvery, Instance: cfg.Instance, Record: s.Projection.Record},
		s.Store, providers, bus, s.log)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.Engine.Start(runCtx)
	s.pruned = make(chan struct{})
	go func() {
		defer close(s.pruned)
		controlplane.RunEventPruner(runCtx, s.Store, retention(*cfg), cmp.Or(cfg.PruneInterval, time.Minute), s.log)
	}()
	s.Repairer.Start(runCtx)
	if s.Alerts != nil {
		s.Notifier.Start(runCtx)
		s.Alerts.Start(runCtx)
	}
	s.http = &http.Server{Handler: a, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return runCtx }}
	s.served = make(chan error, 1)
	go func() { s.served <- s.http.Serve(s.ln) }()
	s.log.Info("control plane serving", zap.String("url", s.URL), zap.String("etcd", s.EtcdURL), zap.String("store", string(s.Store.Dialect())))
	return nil
}

// EtcdRootPasswordFile is where the embedded etcd's root password is kept
// (0600), under the data folder.
const EtcdRootPasswordFile = "etcd-root.password"

// startEtcd connects to the external etcd (as etcd_username over etcd_tls
// when configured), or starts the embedded one and turns its
// authentication on at the first start (root, password in
// DataDir/etcd-root.password), then connects as root. An embedded etcd
// created by an older server without authentication is left open.
func (s *Server) startEtcd(ctx context.Context) error {
	// The agents' dial configuration (dcs.ClientConfig): the same TLS and
	// login handling for the control plane as for every agent.
	ccfg := dcs.Options{DialTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second}
	if len(s.cfg.EtcdEndpoints) > 0 {
		s.EtcdURL = s.cfg.EtcdEndpoints[0]
		ccfg.Endpoints = s.cfg.EtcdEndpoints
		t := s.cfg.EtcdTLS
		ccfg.CAFile, ccfg.CertFile, ccfg.KeyFile = t.CAFile, t.CertFile, t.KeyFile
		if s.cfg.EtcdUsername != "" {
			b, err := os.ReadFile(s.cfg.EtcdPasswordFile)
			if err != nil {
				return fmt.Errorf("etcd_password_file: %w", err)
			}
			ccfg.Username, ccfg.Password = s.cfg.EtcdUsername, strings.TrimSpace(string(b))
		}
	} else {
		// Keep the client port across restarts: agents have it in their config.
		portFile := filepath.Join(s.cfg.DataDir, "etcd.port")
		cp := 0
		if b, err := os.ReadFile(portFile); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				cp = p
			}
		}
		etcdDir := filepath.Join(s.cfg.DataDir, "etcd")
		rootFile := filepath.Join(s.cfg.DataDir, EtcdRootPasswordFile)
		// An etcd made before authentication existed serves agents whose
		// configs have no etcd credentials: turning auth on would cut
		// them off. Only a new etcd, or one we secured, gets it.
		_, statMember := os.Stat(filepath.Join(etcdDir, "member"))
		_, statRoot := os.Stat(rootFile)
		secure := statMember != nil || statRoot == nil
		e, u, err := embedetcd.Start(etcdDir, "dbpilot-server", cp, s.log, 60*time.Second)
		if err != nil {
			return err
		}
		s.embedded = e
		cu, _ := url.Parse(u)
		cp, _ = strconv.Atoi(cu.Port())
		if err := os.WriteFile(portFile, []byte(strconv.Itoa(cp)), 0o644); err != nil {
			return fmt.Errorf("etcd port file: %w", err)
		}
		s.EtcdURL = u
		ccfg.Endpoints = []string{u}
		if secure {
			actx, cancel := context.WithTimeout(ctx, 30*time.Second)
			pw, err := embedetcd.EnableAuth(actx, u, rootFile, s.log)
			cancel()
			if err != nil {
				return err
			}
			ccfg.Username, ccfg.Password = embedetcd.RootUser, pw
		} else {
			s.log.Warn("the embedded etcd predates etcd authentication and stays open (its agents have no etcd credentials); start from a new data_dir to secure it (docs/security.md)",
				zap.String("etcd_dir", etcdDir))
		}
	}
	adm, err := admin.Dial(ccfg, s.log)
	if err != nil {
		return fmt.Errorf("etcd (etcd_endpoints, etcd_tls): %w", err)
	}
	s.Etcd = adm
	s.etcdAuth = ccfg.Username != ""
	if !s.etcdAuth {
		s.log.Warn("etcd without authentication: every agent config grants the whole keyspace; set etcd_username and etcd_password_file (docs/security.md)")
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if on, err := adm.AuthEnabled(sctx); err == nil && !on {
		s.log.Warn("etcd authentication is not enabled on the server: per-cluster agent users are created but not enforced; run `etcdctl auth enable` (docs/security.md)")
	}
	return nil
}

// cloudInit renders user-data for a node of c: the node's agent config
// (the cluster's etcd and events URL) and the cluster's credentials.
func (s *Server) cloudInit(ctx context.Context, c store.Cluster, node string) ([]byte, error) {
	spec, err := s.Engine.NodeSpec(ctx, c, node)
	if err != nil {
		return nil, err
	}
	// A process cluster keeps its credentials in its folder; every other
	// (and a process cluster not provisioned yet) in the store.
	cred, err := s.Process.Credentials(c.ID)
	if c.Provider != "process" || err != nil {
		cred, err = s.Store.ClusterCredentials(ctx, c.ID, infra.NewCredentials)
	}
	if err != nil {
		return nil, err
	}
	return infra.RenderCloudInit(spec, cred, infra.CloudInitOptions{AgentURL: s.cfg.CloudInit.AgentURL, AgentSHA256: s.cfg.CloudInit.AgentSHA256})
}

// Routes lists the API's "METHOD /path" patterns.
func (s *Server) Routes() []string { return s.api.Routes() }

// Close shuts down gracefully: stop accepting requests, let in-flight
// requests finish (10 s), stop the workflows (they resume on the next
// start), then close etcd and the store. Node processes keep running.
func (s *Server) Close() {
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = s.http.Shutdown(ctx)
		cancel()
		<-s.served
	}
	if s.cancel != nil {
		s.cancel()
	}
	if s.daprSub != nil {
		s.daprSub.Close()
	}
	if s.Repairer != nil {
		s.Repairer.Wait()
	}
	if s.Engine != nil {
		s.Engine.Wait()
	}
	if s.Alerts != nil {
		s.Alerts.Wait()
		s.Notifier.Wait()
	}
	if s.pruned != nil {
		<-s.pruned
	}
	if s.daprBus != nil {
		s.daprBus.Close()
	}
	if s.Etcd != nil {
		_ = s.Etcd.Close()
	}
	if s.embedded != nil {
		s.embedded.Close()
	}
	if s.Store != nil {
		s.Store.Close()
	}
}

// CreateToken issues a token with grants and returns its secret (used by
// `dev` to print an admin token, and by tests).
func (s *Server) CreateToken(ctx context.Context, name string, grants ...store.Grant) (string, error) {
	secret := controlplane.NewSecret("dbp_")
	err := s.Store.CreateToken(ctx, store.Token{ID: "tok-" + randHex(8), Name: name, Hash: controlplane.HashSecret(secret), Grants: grants,
		CreatedBy: "server", CreatedAt: time.Now().UTC()})
	if err != nil {
		return "", err
	}
	return secret, nil
}

// IssueToken opens the store cfg names (default DataDir/dbpilot.db,
// applying pending migrations) and creates an API token with grants,
// without a running server: how the first admin token of a `serve`
// deployment is made. It returns the token's secret (shown once; only its
// hash is stored). Errors: the store's (store.ErrNotFound for a grant of a
// namespace that does not exist), or a grant with an unknown role (admin,
// operator, viewer, metrics) or an empty namespace.
func IssueToken(ctx context.Context, cfg Config, name string, grants []store.Grant) (string, error) {
	if name == "" {
		return "", errors.New("name: required, e.g. --name ops-admin")
	}
	if len(grants) == 0 {
		return "", errors.New("grant: at least one NAMESPACE=ROLE, e.g. --grant '*=admin'")
	}
	for _, g := range grants {
		if g.Namespace == "" || (g.Role != api.RoleAdmin && g.Role != api.RoleOperator && g.Role != api.RoleViewer && g.Role != api.RoleMetrics) {
			return "", fmt.Errorf("grant %s=%s: want NAMESPACE=ROLE with ROLE admin, operator, viewer or metrics ('*' is every namespace)", g.Namespace, g.Role)
		}
	}
	dsn := cfg.Store
	if dsn == "" {
		dsn = filepath.Join(cfg.DataDir, "dbpilot.db")
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer st.Close()
	secret := controlplane.NewSecret("dbp_")
	if err := st.CreateToken(ctx, store.Token{ID: "tok-" + randHex(8), Name: name, Hash: controlplane.HashSecret(secret), Grants: grants,
		CreatedBy: "dbpilot-server token create", CreatedAt: time.Now().UTC()}); err != nil {
		return "", err
	}
	return secret, nil
}

// agentAddress returns the api.Deps.AgentAddress over providers: the
// provider the cluster names answers when it implements
// infra.AgentAddresser.
func agentAddress(providers map[string]infra.Provider) func(string, json.RawMessage) string {
	return func(provider string, handle json.RawMessage) string {
		if aa, ok := providers[provider].(infra.AgentAddresser); ok && len(handle) > 0 {
			return aa.AgentHTTPAddress(handle)
		}
		return ""
	}
}

// retention is the event retention cfg asks for (defaults filled in;
// negative: keep forever, which EventRetention spells 0).
func retention(cfg Config) controlplane.EventRetention {
	pick := func(v, def time.Duration) time.Duration {
		switch {
		case v < 0:
			return 0
		case v == 0:
			return def
		}
		return v
	}
	return controlplane.EventRetention{Events: pick(cfg.EventRetention, controlplane.DefaultEventRetention),
		StateEvents: pick(cfg.StateEventRetention, controlplane.DefaultStateEventRetention),
		Audit:       pick(cfg.AuditRetention, controlplane.DefaultAuditRetention)}
}

// ingestSecret loads or creates DataDir/ingest.key (0600).
func ingestSecret(dir string) ([]byte, error) {
	p := filepath.Join(dir, "ingest.key")
	if b, err := os.ReadFile(p); err == nil && len(b) >= 32 {
		return b, nil
	}
	b := []byte(randHex(32))
	if err := os.WriteFile(p, b, 0o600); err != nil {
		return nil, fmt.Errorf("ingest secret: %w", err)
	}
	return b, nil
}

func findAgent() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "dbpilot-agent")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "dbpilot-agent"
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
