// Package agent wires the dbpilot node agent: configuration, the etcd
// session, the local PostgreSQL, the autopilot handlers, the event reporter
// and the HTTP endpoint, around one HA loop (observe → ha.Decide → apply).
//
// The bootstrap, health-check and failover steps follow the DIY DBaaS
// whitepaper (Op 2), made precise in docs/architecture.md.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/fenceguard"
	"github.com/dbpilot/dbpilot/agent/ha"
	"github.com/dbpilot/dbpilot/agent/httpapi"
	"github.com/dbpilot/dbpilot/agent/pgmetrics"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/agent/report"
	"github.com/dbpilot/dbpilot/handlers"
	"github.com/dbpilot/dbpilot/proto"
)

// ErrPreStart is returned by Run when the preStart handler fails: nothing
// was started.
var ErrPreStart = errors.New("preStart handler failed: nothing started")

// Agent is one node's autopilot. Create it with New, run it with Run.
type Agent struct {
	cfg     *config.Config
	log     *zap.Logger
	dcs     coordinator
	pg      database
	hooks   *handlers.Runner
	rep     *report.Reporter
	reg     *prometheus.Registry
	metrics *httpapi.Metrics
	local   localState
	keys    dcs.Keys
	bk      *backups // nil without a backup: section

	// pgMu serialises operations that change the local PostgreSQL between
	// the HA loop and the fencer.
	pgMu sync.Mutex

	handlerHealthy atomic.Bool
	fenced         atomic.Bool
	isLeader       atomic.Bool // last cycle: we hold the leader key
	// ownTerm is the term at which our PostgreSQL is the writable primary
	// holding (or, during an etcd outage, having held) the leader key; 0
	// when it is not a primary. Failsafe mode keeps it writable on it.
	ownTerm atomic.Uint64
	// electMu orders a campaign against failsafe promises: a member never
	// promises while campaigning, and never campaigns under a promise.
	electMu sync.Mutex
	fs      failsafeState
	// failsafeKey signs failsafe requests between members (the cluster's
	// replication password: every member has it, nobody else needs it).
	failsafeKey string
	httpc       *http.Client
	// guard is the fencing guard process (nil when it could not start:
	// the in-process fencer still runs).
	guard *fenceguard.Guard
	// etcdRev is the newest etcd revision the agent has read (the events'
	// dbpilotrevision: consumers order a member's events by term, then by
	// it). It only grows.
	etcdRev    atomic.Int64
	leaderless atomic.Bool // last cycle: no leader key
	// termKnown: a cycle has recorded the term from an etcd read (events
	// built before carry term 0 and would sort before this process's
	// predecessor's).
	termKnown atomic.Bool
	trigger   chan struct{}
	// fencerWake and failsafeWake make the fencer and the failsafe loop
	// look again at once (cap 1, coalescing): the proof or the role may
	// have moved (wakeWatchers). healthWake: the handlers were reloaded.
	fencerWake, failsafeWake, healthWake chan struct{}

	// Loop state: touched only by the HA loop goroutine.
	leaderRev         int64 // create revision of our leader key, 0 if not leader
	term              uint64
	upstream          string
	notStreamingSince time.Time
	// rewoundNotStreaming: a rejoin for not streaming ran and the replica
	// has not streamed since (ha.View.RewoundNotStreaming).
	rewoundNotStreaming bool
	leaderGoneRev       int64
	leaderGoneAt        time.Time
	lastLeader          string
	lastRole            ha.Role
	lastMemberState     string
	syncAppliedLSN      uint64
	pgSync              []string
	lastDoc             dcs.ClusterDocument // last written, LastUpdated 0
	// memberLease is the HA lease ID our member key was last written on
	// (memberCurrent).
	memberLease int64
	// syncMode is the effective synchronous_mode ("on" | "off") as of the
	// last etcd read: the spec key's, else the local configuration's.
	syncMode string
	// specRev is the spec key revision last reported in the log (0: none).
	specRev int64
	// slots is the primary's replication slot upkeep (slots.go).
	slots slotKeeper

	// pgm reads the local server for metrics, the member summary and the
	// query insight endpoints (nil in unit tests with a fake database).
	pgm pgmetrics.Source
	// statements: pg_stat_statements is installed and preloaded, so the
	// summary loop creates the extension on the primary.
	statements bool
	// extTerm is the term in which CREATE EXTENSION pg_stat_statements
	// last succeeded on this primary, extErr the last failure logged
	// (summary loop only).
	extTerm uint64
	extErr  string

	mu    sync.Mutex
	state httpapi.NodeState
	// replicas are the WAL senders the last cycle saw (a primary's).
	replicas []postgres.ReplicaStat
	// syncModeSeen is syncMode as of the last cycle, for other goroutines.
	syncModeSeen string
}

// New builds an agent from a validated configuration. It reads the
// credentials and dials etcd (no request is made yet).
func New(cfg *config.Config, log *zap.Logger) (*Agent, error) {
	creds, err := cfg.LoadCredentials()
	if err != nil {
		return nil, err
	}
	pw, err := dcs.ReadPasswordFile(cfg.Etcd.PasswordFile)
	if err != nil {
		return nil, err
	}
	log = log.With(zap.String("cluster", clusterName(cfg)), zap.String("node", cfg.Node.Name))
	keys := dcs.NewKeys(cfg.Cluster.Namespace, cfg.Cluster.Project, cfg.Cluster.Name)
	d, err := dcs.Dial(dcs.Options{
		Endpoints: cfg.Etcd.Endpoints, CAFile: cfg.Etcd.TLS.CAFile, CertFile: cfg.Etcd.TLS.CertFile, KeyFile: cfg.Etcd.TLS.KeyFile,
		Username: cfg.Etcd.Username, Password: pw,
		DialTimeout: cfg.Etcd.DialTimeout, RequestTimeout: cfg.Etcd.RequestTimeout, TTL: cfg.TTL,
	}, keys, log)
	if err != nil {
		return nil, err
	}
	pgcfg := postgres.Config{
		NodeName: cfg.Node.Name, BinDir: cfg.Postgres.BinDir, DataDir: cfg.Postgres.DataDir,
		ListenAddress: cfg.Postgres.ListenAddress, Port: cfg.Postgres.Port, OSUser: cfg.Postgres.OSUser,
		Parameters:  cfg.Postgres.Parameters,
		Superuser:   postgres.Credentials{Username: creds.Superuser.Username, Password: creds.Superuser.Password.Reveal()},
		Replication: postgres.Credentials{Username: creds.Replication.Username, Password: creds.Replication.Password.Reveal()},
		HBA:         cfg.Postgres.HBA,
	}
	if postgres.LibraryInstalled(cfg.Postgres.BinDir, "pg_stat_statements") {
		// Query statistics for /metrics and /v1/statements; the extension
		// itself is created by the summary loop on the primary.
		pgcfg.PreloadLibraries = []string{"pg_stat_statements"}
	} else {
		log.Warn("pg_stat_statements is not installed next to postgres.bin_dir (install postgresql-contrib): no statement statistics",
			zap.String("bin_dir", cfg.Postgres.BinDir))
	}
	plain := pgcfg
	if err := archiveSettings(cfg, &pgcfg); err != nil {
		return nil, err
	}
	pg, err := postgres.New(pgcfg, log.Named("postgres"))
	if err != nil {
		return nil, err
	}
	var bk *backups
	if cfg.Backup != nil {
		svc, login, err := OpenBackups(context.Background(), cfg, plain, pg, log)
		if err != nil {
			return nil, err
		}
		bk = &backups{cfg: cfg.Backup, svc: svc, pgcfg: plain, login: login}
	}
	reg := prometheus.NewRegistry()
	metrics, err := httpapi.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	// Engine and host metrics, queried on scrape over pg's metrics pool
	// (never the HA loop's connections), within pgmetrics.DefaultBudget.
	if err := reg.Register(pgmetrics.New(pg, log.Named("pgmetrics"))); err != nil {
		return nil, fmt.Errorf("register postgres metrics: %w", err)
	}
	a := &Agent{
		cfg: cfg, log: log, dcs: d, pg: pg, reg: reg, metrics: metrics,
		local: localState{dir: cfg.StateDir}, keys: keys, trigger: make(chan struct{}, 1),
		fencerWake: make(chan struct{}, 1), failsafeWake: make(chan struct{}, 1), healthWake: make(chan struct{}, 1),
		lastRole: ha.RoleStopped, bk: bk, pgm: pg, statements: len(pgcfg.PreloadLibraries) > 0, syncMode: string(cfg.SynchronousMode),
		failsafeKey: creds.Replication.Password.Reveal(),
		httpc:       &http.Client{Transport: &http.Transport{DisableKeepAlives: false, MaxIdleConnsPerHost: 2}},
	}
	a.hooks = handlers.NewRunner(log, cfg.Handlers, handlers.WithOnChangeResult(func(_ handlers.Env, r handlers.Result) { a.handlerResult(r) }))
	tr, err := newTransport(cfg)
	if err != nil {
		return nil, err
	}
	ropts := []report.Option{report.WithDroppedCounter(metrics.EventsDropped)}
	if cfg.Events.HTTP != nil {
		ropts = append(ropts, report.WithMaxBatch(cfg.Events.HTTP.MaxBatch))
	}
	a.rep = report.NewReporter(tr, log.Named("report"), ropts...)
	a.handlerHealthy.Store(true)
	a.state = httpapi.NodeState{Node: cfg.Node.Name, Cluster: clusterName(cfg), Role: "unknown", LagBytes: -1}
	return a, nil
}

func newTransport(cfg *config.Config) (report.Transport, error) {
	switch {
	case cfg.Events.Dapr != nil:
		d := cfg.Events.Dapr
		return report.NewDaprTransport(d.HTTPAddress, d.PubSub, d.Topic)
	case cfg.Events.HTTP != nil:
		return report.NewHTTPTransport(cfg.Events.HTTP.URL, cfg.Events.HTTP.Timeout, nil), nil
	default:
		return report.NewNopTransport(), nil
	}
}

func clusterName(cfg *config.Config) string {
	return cfg.Cluster.Namespace + "/" + cfg.Cluster.Project + "/" + cfg.Cluster.Name
}

// Reload applies a new configuration on SIGHUP: handler settings take effect
// at once; the database is not touched. Other changes are logged as needing a
// restart. A configuration that failed validation never reaches Reload.
func (a *Agent) Reload(cfg *config.Config) {
	a.hooks.Update(cfg.Handlers)
	signal(a.healthWake)
	a.log.Info("configuration reloaded: handler settings applied")
	old := *a.cfg
	old.Handlers = cfg.Handlers
	if !reflect.DeepEqual(old, *cfg) {
		a.log.Warn("configuration changes outside handlers need a restart of the agent to apply")
	}
}

// Run runs the agent until ctx is cancelled, then shuts down gracefully
// (preStop → hand over leadership → stop PostgreSQL → postStop → close the
// session). Errors: ErrPreStart, or a failure to set up the HTTP endpoint.
func (a *Agent) Run(ctx context.Context) error {
	defer a.pg.Close() // pooled connections to PostgreSQL, after shutdown
	var wg sync.WaitGroup
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer func() { stopBG(); wg.Wait() }()
	wg.Add(1)
	go func() { defer wg.Done(); a.rep.Run(bg) }()

	env := a.env("preStart", "agent starting")
	if res := a.hooks.Run(ctx, handlers.PreStart, env); !res.OK() {
		a.handlerResult(res)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = a.rep.Flush(fctx)
		cancel()
		return fmt.Errorf("%w: %v", ErrPreStart, res.Err)
	}

	if a.cfg.HTTP.Listen != "" {
		ln, err := net.Listen("tcp", a.cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http.listen %s: %w", a.cfg.HTTP.Listen, err)
		}
		opts := []httpapi.Option{httpapi.WithFailsafe(failsafeHandler{a})}
		if a.pgm != nil {
			opts = append(opts, httpapi.WithInsight(insight{node: a.cfg.Node.Name, src: a.pgm}))
		}
		srv := &http.Server{Handler: httpapi.NewHandler(a, a.reg, opts...), ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.Serve(ln) }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	if a.bk != nil {
		stopBackups, err := a.startBackups(ctx, bg)
		defer stopBackups() // after shutdown: PostgreSQL archives its last WAL while stopping
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	}
	a.startGuard()
	defer a.stopGuard()
	wg.Add(4)
	go func() { defer wg.Done(); a.summaryLoop(bg) }()
	go func() { defer wg.Done(); a.healthLoop(bg) }()
	go func() { defer wg.Done(); a.fencer(bg) }()
	go func() { defer wg.Done(); a.failsafeLoop(bg) }()
	a.hooks.StartOnChange(bg)
	defer a.hooks.StopOnChange()

	watchCtx, stopWatch := context.WithCancel(bg)
	defer stopWatch()
	if err := a.connect(ctx); err == nil {
		if err := a.ensureData(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("bootstrap failed", zap.Error(err))
		}
	}
	if ctx.Err() == nil {
		a.loop(ctx, a.dcs.Watch(watchCtx, a.relevant))
	}
	return a.shutdown(context.WithoutCancel(ctx))
}

// connect waits until etcd grants our lease, retrying with a bounded backoff.
func (a *Agent) connect(ctx context.Context) error {
	delay := 200 * time.Millisecond
	for {
		_, _, err := a.dcs.Session(ctx)
		if err == nil {
			return nil
		}
		a.log.Error("etcd unreachable; retrying (PostgreSQL is left as it is)", zap.Strings("endpoints", a.cfg.Etcd.Endpoints), zap.Error(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// transitionPoll is the cycle period while the cluster has no leader.
const transitionPoll = 50 * time.Millisecond

// loop is the HA loop: one cycle at a time, every health interval or sooner
// when etcd reports a change under the cluster prefix.
func (a *Agent) loop(ctx context.Context, watch <-chan struct{}) {
	tick := time.NewTicker(a.cfg.Health.Interval)
	defer tick.Stop()
	for {
		var hurry <-chan time.Time
		if a.cycle(ctx) {
			hurry = time.After(transitionPoll)
		}
		select {
		case <-ctx.Done():
			return
		case <-hurry:
		case <-tick.C:
		case <-a.trigger:
		case _, ok := <-watch:
			if !ok {
				watch = nil
			}
			// Coalesce the burst of changes one transition makes.
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// relevant says which etcd changes start a cycle before the next tick: the
// leader key appearing or vanishing, switchover requests, the control
// plane's spec, members joining or leaving, and, while there is no leader,
// every member update (candidates wait for each other's final LSN). Our own
// member writes and the primary's periodic refreshes do not, so an idle
// cluster cycles once per interval.
func (a *Agent) relevant(ev dcs.Event) bool {
	switch {
	case ev.Key == "leader":
		return ev.Create || ev.Delete
	case ev.Key == "switchover" || ev.Key == "initialize" || ev.Key == "spec":
		return true
	case strings.HasPrefix(ev.Key, "members/"):
		if strings.TrimPrefix(ev.Key, "members/") == a.cfg.Node.Name {
			return false
		}
		return ev.Create || ev.Delete || a.leaderless.Load()
	}
	return false
}

func (a *Agent) kick() { signal(a.trigger) }

// signal makes a non-blocking send on a coalescing wake-up channel (cap 1).
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// wakeWatchers makes the fencer and the failsafe loop re-evaluate now:
// called after every lease renewal, at the end of every cycle, and where
// this node becomes the leader, so that they need no polling of their own
// (an idle agent wakes a few times a second, not ten).
func (a *Agent) wakeWatchers() {
	signal(a.fencerWake)
	signal(a.failsafeWake)
}

// healthLoop runs the health handler at its own interval so a slow handler
// never stalls the HA loop; the result feeds the next cycle. Without a
// health handler it sleeps until a reload (SIGHUP) may have added one.
func (a *Agent) healthLoop(ctx context.Context) {
	for {
		interval := a.cfg.Health.Interval
		if sp := a.hooks.Spec(handlers.Health); sp != nil && sp.Interval > 0 {
			interval = sp.Interval
		}
		var next <-chan time.Time
		if a.hooks.Spec(handlers.Health) != nil {
			res, healthy := a.hooks.CheckHealth(ctx, a.env("health", ""))
			if !res.OK() {
				a.handlerResult(res)
			}
			if a.handlerHealthy.Swap(healthy) != healthy {
				a.log.Info("health handler verdict changed", zap.Bool("healthy", healthy))
				a.kick()
			}
			next = time.After(interval)
		}
		select {
		case <-ctx.Done():
			return
		case <-next:
		case <-a.healthWake:
		}
	}
}

// fenceMargin is how much proven lease must be left for a primary to stay
// writable: one etcd request plus time to stop PostgreSQL.
func (a *Agent) fenceMargin() time.Duration { return config.FenceMargin(a.cfg.Etcd.RequestTimeout) }

// fencerMaxWait bounds how long the fencer sleeps without being woken;
// fencerMinWait keeps it from spinning when the proof is at the margin.
const (
	fencerMaxWait = time.Second
	fencerMinWait = 10 * time.Millisecond
)

// fencer is the safety net independent of the HA loop: if the loop is stuck
// (an etcd call hanging up to its timeout, say) while the proven lease runs
// out, it stops PostgreSQL immediately, before etcd can expire the lease and
// another member can be promoted. It also keeps the fencing guard's deadline
// current, which covers the case where this whole process is not scheduled.
//
// It does not poll: its own timer fires when the proof left reaches the
// fencing margin (at most fencerMaxWait ahead), and wakeWatchers wakes it
// whenever the proof or the role may have moved (every renewal, every
// cycle), when it re-arms the guard with the new deadline.
func (a *Agent) fencer(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.fencerWake:
		}
		holds := (a.isLeader.Load() || a.ownTerm.Load() != 0) && !a.fenced.Load()
		left := a.writableLeft(time.Now())
		a.armGuard(holds, left)
		if holds && left <= a.fenceMargin() {
			a.fence(ctx, fmt.Sprintf("fencer: proven lease left %s ≤ margin %s", left.Round(time.Millisecond), a.fenceMargin()))
			holds = false
		}
		t.Reset(fencerWait(holds, left, a.fenceMargin()))
	}
}

// fencerWait is how long the fencer may sleep unless woken: until a held
// proof with left to run reaches margin, within [fencerMinWait,
// fencerMaxWait]; fencerMaxWait when nothing is held.
func fencerWait(holds bool, left, margin time.Duration) time.Duration {
	if !holds {
		return fencerMaxWait
	}
	return min(max(left-margin, fencerMinWait), fencerMaxWait)
}

// guardMargin is how long before the proof runs out the guard kills
// PostgreSQL if the agent has not moved the deadline: after the in-process
// fencer (at the full margin) would have acted, well before etcd can
// expire the lease.
func (a *Agent) guardMargin() time.Duration { return a.fenceMargin() / 2 }

// startGuard starts the fencing guard process (agent/fenceguard). If it
// cannot start, the agent runs without it and says so.
func (a *Agent) startGuard() {
	exe, err := os.Executable()
	if err == nil {
		a.guard, err = fenceguard.Start(exe, a.log.Named("fence-guard"))
	}
	if err != nil {
		a.log.Error("fence guard not started: a frozen agent would not be fenced", zap.Error(err))
	}
}

// stopGuard ends the guard once the database is stopped.
func (a *Agent) stopGuard() {
	if a.guard != nil {
		if err := a.guard.Close(); err != nil {
			a.log.Debug("fence guard close", zap.Error(err))
		}
	}
}

// armGuard hands the guard the deadline of our current proof while we may
// be a writable primary, and disarms it otherwise.
func (a *Agent) armGuard(holds bool, left time.Duration) {
	if a.guard == nil {
		return
	}
	var err error
	if pid, ok := a.pg.PostmasterPID(); holds && ok {
		err = a.guard.Arm(pid, left-a.guardMargin())
	} else {
		err = a.guard.Disarm()
	}
	if err != nil {
		a.log.Error("fence guard unreachable", zap.Error(err))
	}
}

// fence stops accepting writes at once: immediate stop of PostgreSQL (no
// further commit can be acknowledged). The HA loop restarts it read-only.
func (a *Agent) fence(ctx context.Context, reason string) {
	if a.fenced.Swap(true) {
		return
	}
	a.isLeader.Store(false)
	a.ownTerm.Store(0)
	a.clearFailsafe()
	// Not under pgMu: fencing must not wait for an action in progress.
	err := a.pg.Stop(ctx, postgres.StopImmediate)
	left := a.dcs.LeaseLeft(time.Now())
	a.log.Warn("fenced: PostgreSQL stopped, no writes accepted", zap.String("reason", reason), zap.Duration("lease_left", left), zap.Error(err))
	a.publish(proto.TypeFenced, proto.Fenced{Reason: reason, LeaseLeftMS: left.Milliseconds()})
	a.kick()
}

func (a *Agent) env(event, reason string) handlers.Env {
	a.mu.Lock()
	defer a.mu.Unlock()
	return handlers.Env{Event: event, Role: a.state.Role, Cluster: clusterName(a.cfg), Node: a.cfg.Node.Name, Leader: a.state.Leader, Term: a.state.Term, Reason: reason}
}

func (a *Agent) handlerResult(r handlers.Result) {
	a.metrics.HandlerRuns.WithLabelValues(string(r.Phase), r.Status.String()).Inc()
	if r.OK() {
		return
	}
	a.publish(proto.TypeHandlerResult, proto.HandlerResult{Handler: string(r.Phase), Status: r.Status.String(), ExitCode: r.ExitCode, DurationMS: r.Duration.Milliseconds()})
}

// publish queues an event; it never blocks the HA loop.
func (a *Agent) publish(typ string, payload any) {
	if e, ok := a.envelope(typ, payload); ok {
		a.rep.Publish(e)
	}
}

// envelope builds an event of ours with the current term and revision in
// its header; false (logged) if it does not validate.
func (a *Agent) envelope(typ string, payload any) (proto.Envelope, bool) {
	a.mu.Lock()
	h := proto.Header{
		ClusterRef:  proto.ClusterRef{Namespace: a.cfg.Cluster.Namespace, Project: a.cfg.Cluster.Project, Cluster: a.cfg.Cluster.Name},
		Node:        a.cfg.Node.Name,
		Term:        a.state.Term,
		Revision:    a.etcdRev.Load(),
		TimestampMS: time.Now().UnixMilli(),
	}
	a.mu.Unlock()
	e, err := proto.NewEnvelope(typ, proto.AgentSource(a.cfg.Cluster.Namespace, a.cfg.Cluster.Name, a.cfg.Node.Name), h, payload)
	if err != nil {
		a.log.Error("cannot build event", zap.String("type", typ), zap.Error(err))
		return proto.Envelope{}, false
	}
	return e, true
}

// noteRevision raises etcdRev to rev.
func (a *Agent) noteRevision(rev int64) {
	for {
		cur := a.etcdRev.Load()
		if rev <= cur || a.etcdRev.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// Snapshot implements httpapi.Source.
func (a *Agent) Snapshot() httpapi.NodeState {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.state
	s.HoldsLease = (a.isLeader.Load() || a.ownTerm.Load() != 0) && !a.fenced.Load() && a.writableLeft(time.Now()) > a.fenceMargin()
	return s
}

func (a *Agent) apiURL() string {
	if a.cfg.HTTP.Listen == "" {
		return ""
	}
	_, port, _ := net.SplitHostPort(a.cfg.HTTP.Listen)
	return "http://" + net.JoinHostPort(a.cfg.Node.Address, port)
}
