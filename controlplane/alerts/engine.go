package alerts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/catalog"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// Event types the engine records with the agents' events (events API,
// SSE, `dbpilot events`: alert_firing, alert_resolved). Like node_repair
// they are recorded, not published (docs/events.md). Payload: AlertEvent.
const (
	TypeAlertFiring   = "io.dbpilot.controlplane.alert_firing.v1"
	TypeAlertResolved = "io.dbpilot.controlplane.alert_resolved.v1"
)

// AlertEvent is the payload of TypeAlertFiring and TypeAlertResolved.
type AlertEvent struct {
	// Namespace, Project and Cluster name the alert's cluster.
	Namespace string `json:"namespace"`
	Project   string `json:"project"`
	Cluster   string `json:"cluster"`
	// Node is the member the alert is about ("" cluster-wide).
	Node string `json:"node,omitempty"`
	// TimestampMS is the transition's time, milliseconds since the epoch.
	TimestampMS int64 `json:"timestamp_ms"`
	// AlertID is the fingerprint (GET …/alerts/{id}).
	AlertID string `json:"alert_id"`
	// Rule and Severity: see RuleSeverity.
	Rule     string `json:"rule"`
	Severity string `json:"severity"`
	// Subject is the backup job or filesystem kind ("" when none).
	Subject string `json:"subject,omitempty"`
	// Summary is the condition's sentence.
	Summary string `json:"summary"`
	// Flapping: the alert fired too often in the flapping window.
	Flapping bool `json:"flapping,omitempty"`
	// Silenced: a silence covers it (nothing was notified).
	Silenced bool `json:"silenced,omitempty"`
}

// Event types of other packages the engine reads (kept as strings: the
// engine does not import the workflow package).
const (
	typeNodeRepair = "io.dbpilot.controlplane.node_repair.v1"
)

// Sender receives the notifications the engine decides to send; it
// must not block (Notifier queues them).
type Sender interface {
	Notify(ctx context.Context, namespace string, n proto.AlertNotification)
}

// Config configures the Engine.
type Config struct {
	// Interval between evaluations; default 1s.
	Interval time.Duration
	// AgentTTL is the agents' lease ttl (default no_primary_for = ttl +
	// 5s); <= 0: DefaultAgentTTL.
	AgentTTL time.Duration
	// Flap is the flapping policy; zero: DefaultFlapPolicy.
	Flap FlapPolicy
	// Record stores alert_firing/alert_resolved events
	// (controlplane.Projection.Record); nil: none.
	Record func(ctx context.Context, ev store.Event) error
	// Notifier sends notifications; nil: none.
	Notifier Sender
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// ReplayEvents is how many of the newest stored events are read at
	// start for the facts events carry (failovers, repairs, backup
	// outcomes); default 10000.
	ReplayEvents int
	// ThresholdsTTL is how often the clusters' threshold overrides and the
	// templates' alerts blocks are read again; default 10s.
	ThresholdsTTL time.Duration
}

type summaryEntry struct {
	s  proto.MemberSummary
	at time.Time
}

// facts are what the events told about a cluster.
type facts struct {
	failoverAt time.Time
	failoverTo string
	repair     map[string]int
	backups    map[string]BackupOutcome
}

// Engine evaluates the alert rules every Config.Interval. Summary is the
// projection's summary sink; Start runs the loop; Tick is one evaluation.
type Engine struct {
	st  *store.Store
	cfg Config
	log *zap.Logger

	mu        sync.Mutex
	summaries map[string]map[string]summaryEntry // cluster id → node → last summary

	// The loop's own state (only the loop goroutine, or Tick's caller).
	tracked    map[string]*Tracked
	saved      map[string]time.Time // fingerprint → when last saved
	acked      map[string]bool      // fingerprint → acknowledged (known this episode)
	facts      map[string]*facts    // "ns/project/cluster" → facts
	readySince map[string]time.Time // cluster id → first seen live
	// Thresholds: the overrides and template blocks read at thresholdsAt;
	// repeat is each cluster's repeat interval as last resolved.
	overrides    map[string]*proto.AlertThresholds
	templates    map[string]*proto.AlertThresholds
	thresholdsAt time.Time
	repeat       map[string]time.Duration
	lastSeq      int64
	loaded       bool
	started      time.Time
	// heldAtStart: the alerts firing when the engine started (loaded from
	// the store); see ClusterState.SilentBefore.
	heldAtStart map[string]bool

	done chan struct{}
}

// NewEngine returns an engine over st.
func NewEngine(st *store.Store, cfg Config, log *zap.Logger) *Engine {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Flap == (FlapPolicy{}) {
		cfg.Flap = DefaultFlapPolicy
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReplayEvents <= 0 {
		cfg.ReplayEvents = 10000
	}
	if cfg.ThresholdsTTL <= 0 {
		cfg.ThresholdsTTL = 10 * time.Second
	}
	return &Engine{st: st, cfg: cfg, log: log.Named("alerts"), summaries: map[string]map[string]summaryEntry{},
		tracked: map[string]*Tracked{}, saved: map[string]time.Time{}, acked: map[string]bool{}, facts: map[string]*facts{},
		readySince: map[string]time.Time{}, repeat: map[string]time.Duration{}, heldAtStart: map[string]bool{}}
}

// Summary keeps s as the latest summary of its node in cluster clusterID
// (the store's id). It is the projection's summary sink
// (controlplane.Projection.SetSummarySink) and never blocks on I/O.
func (e *Engine) Summary(_ context.Context, clusterID string, s proto.MemberSummary) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.summaries[clusterID]
	if m == nil {
		m = map[string]summaryEntry{}
		e.summaries[clusterID] = m
	}
	m[s.Node] = summaryEntry{s: s, at: e.cfg.Now()}
}

// Start runs the evaluation loop until ctx ends (Wait waits for it).
func (e *Engine) Start(ctx context.Context) {
	e.done = make(chan struct{})
	go func() {
		defer close(e.done)
		t := time.NewTicker(e.cfg.Interval)
		defer t.Stop()
		for {
			if err := e.Tick(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("alert evaluation", zap.Error(err))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Wait waits for the loop Start began.
func (e *Engine) Wait() {
	if e.done != nil {
		<-e.done
	}
}

// load reads the active alerts and the recent events at the first tick.
func (e *Engine) load(ctx context.Context) error {
	for _, st := range []string{proto.AlertPending, proto.AlertFiring} {
		as, err := e.st.ListAlerts(ctx, store.AlertFilter{State: st, Limit: 100000})
		if err != nil {
			return err
		}
		for _, a := range as {
			e.tracked[a.ID] = &Tracked{ID: a.ID, State: a.State, FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, FiredAt: a.FiredAt,
				ResolvedAt: a.ResolvedAt, Flapping: a.Flapping, LastNotified: a.LastNotified,
				Condition: Condition{Rule: a.Rule, Severity: a.Severity, ClusterID: a.ClusterID, Namespace: a.Namespace, Project: a.Project,
					Cluster: a.Cluster, Node: a.Node, Subject: a.Subject, Summary: a.Summary}}
			e.saved[a.ID] = a.UpdatedAt
			if a.State == proto.AlertFiring {
				e.heldAtStart[a.ID] = true
			}
		}
	}
	last, err := e.st.LastEventSeq(ctx)
	if err != nil {
		return err
	}
	e.lastSeq = max(0, last-int64(e.cfg.ReplayEvents))
	e.loaded, e.started = true, e.cfg.Now()
	return nil
}

// readEvents applies the events stored since the last tick to the facts.
func (e *Engine) readEvents(ctx context.Context) error {
	for {
		evs, err := e.st.ListEvents(ctx, store.EventFilter{AfterSeq: e.lastSeq, Limit: 1000})
		if err != nil {
			return err
		}
		for _, ev := range evs {
			e.lastSeq = ev.Seq
			e.applyEvent(ev)
		}
		if len(evs) < 1000 {
			return nil
		}
	}
}

func (e *Engine) factsOf(ns, project, cluster string) *facts {
	k := ns + "/" + project + "/" + cluster
	f := e.facts[k]
	if f == nil {
		f = &facts{repair: map[string]int{}, backups: map[string]BackupOutcome{}}
		e.facts[k] = f
	}
	return f
}

func (e *Engine) applyEvent(ev store.Event) {
	switch ev.Type {
	case proto.TypePrimaryChanged:
		var d proto.PrimaryChanged
		if json.Unmarshal(ev.Data, &d) == nil && d.Reason == proto.ReasonFailover {
			f := e.factsOf(ev.Namespace, ev.Project, ev.Cluster)
			if ev.Time.After(f.failoverAt) {
				f.failoverAt, f.failoverTo = ev.Time, d.Primary
			}
		}
	case typeNodeRepair:
		var d struct {
			State   string `json:"state"`
			Attempt int    `json:"attempt"`
		}
		if json.Unmarshal(ev.Data, &d) != nil {
			return
		}
		f := e.factsOf(ev.Namespace, ev.Project, ev.Cluster)
		switch d.State {
		case "failed":
			f.repair[ev.Node] = d.Attempt
		case "succeeded":
			delete(f.repair, ev.Node)
		}
	case proto.TypeBackupFailed, proto.TypeBackupCompleted:
		var d struct {
			Job    string `json:"job"`
			Method string `json:"method"`
		}
		if json.Unmarshal(ev.Data, &d) != nil || d.Job == "" || d.Method == "verify" {
			return
		}
		f := e.factsOf(ev.Namespace, ev.Project, ev.Cluster)
		o := f.backups[d.Job]
		if ev.Type == proto.TypeBackupFailed {
			o.LastFailure = later(o.LastFailure, &ev.Time)
		} else {
			o.LastSuccess = later(o.LastSuccess, &ev.Time)
		}
		f.backups[d.Job] = o
	}
}

// plannedKinds are the operations during which a primary may be briefly
// missing by design.
var plannedKinds = map[string]bool{"switchover": true, "restart": true, "update": true}

// refreshThresholds re-reads, every ThresholdsTTL, the clusters'
// overrides (one query) and the templates' alerts blocks (once per
// template), so thresholdsOf costs no I/O in between.
func (e *Engine) refreshThresholds(ctx context.Context, now time.Time) error {
	if !e.thresholdsAt.IsZero() && now.Sub(e.thresholdsAt) < e.cfg.ThresholdsTTL {
		return nil
	}
	all, err := e.st.AllAlertThresholds(ctx)
	if err != nil {
		return err
	}
	e.overrides = map[string]*proto.AlertThresholds{}
	for id, b := range all {
		var o proto.AlertThresholds
		if json.Unmarshal(b, &o) == nil {
			e.overrides[id] = &o
		}
	}
	e.templates = map[string]*proto.AlertThresholds{}
	e.thresholdsAt = now
	return nil
}

// thresholdsOf resolves a cluster's thresholds: defaults, its template's
// alerts block, its own overrides.
func (e *Engine) thresholdsOf(ctx context.Context, c store.Cluster) Thresholds {
	key := c.Namespace + "/" + c.Template
	tpl, ok := e.templates[key]
	if !ok {
		if t, found := catalog.Lookup(c.Template); found {
			tpl = t.Alerts
		} else if ut, err := e.st.GetTemplate(ctx, c.Namespace, c.Template); err == nil {
			if t, err := catalog.FromJSON(ut.Body); err == nil {
				tpl = t.Alerts
			}
		}
		e.templates[key] = tpl
	}
	th := DefaultThresholds(e.cfg.AgentTTL).With(tpl).With(e.overrides[c.ID])
	e.repeat[c.ID] = th.RepeatInterval
	return th
}

// Tick runs one evaluation: read new events, the clusters and their
// nodes, evaluate, step every fingerprint, save and record transitions
// and queue notifications.
func (e *Engine) Tick(ctx context.Context) error {
	now := e.cfg.Now()
	if !e.loaded {
		if err := e.load(ctx); err != nil {
			return err
		}
	}
	if err := e.readEvents(ctx); err != nil {
		return err
	}
	clusters, err := e.st.ListClusters(ctx, "", store.Page{Limit: 100000})
	if err != nil {
		return err
	}
	ops, err := e.st.UnfinishedOperations(ctx)
	if err != nil {
		return err
	}
	planned := map[string]bool{}
	for _, op := range ops {
		planned[op.ClusterID] = planned[op.ClusterID] || plannedKinds[op.Kind]
	}
	silences, err := e.st.ActiveSilences(ctx, "", now)
	if err != nil {
		return err
	}
	allNodes, err := e.st.NodesByCluster(ctx)
	if err != nil {
		return err
	}
	if err := e.refreshThresholds(ctx, now); err != nil {
		return err
	}
	exists := map[string]bool{} // cluster ids in the store, not being deleted
	frozen := map[string]bool{} // clusters in a phase where nothing is evaluated (alerts keep their state)
	var states []ClusterState
	for _, c := range clusters {
		if c.Phase == store.PhaseDeleting {
			continue
		}
		exists[c.ID] = true
		if c.Phase != store.PhaseReady && c.Phase != store.PhaseDegraded {
			frozen[c.ID] = true
			delete(e.readySince, c.ID)
			continue
		}
		if e.readySince[c.ID].IsZero() {
			e.readySince[c.ID] = now
		}
		nodes := allNodes[c.ID]
		cs := ClusterState{ID: c.ID, Namespace: c.Namespace, Project: c.Project, Name: c.Name, ReadySince: e.readySince[c.ID],
			Planned: planned[c.ID], Thresholds: e.thresholdsOf(ctx, c)}
		for _, t := range e.tracked {
			if t.ClusterID == c.ID && t.Rule == RuleAgentSilent && t.State == proto.AlertFiring && e.heldAtStart[t.ID] {
				if cs.SilentBefore == nil {
					cs.SilentBefore = map[string]bool{}
				}
				cs.SilentBefore[t.Node] = true
			}
		}
		if f := e.facts[c.Namespace+"/"+c.Project+"/"+c.Name]; f != nil {
			cs.LastFailoverAt, cs.FailoverTo, cs.RepairFailed, cs.BackupEvents = f.failoverAt, f.failoverTo, f.repair, f.backups
		}
		e.mu.Lock()
		sums := e.summaries[c.ID]
		for name := range sums { // nodes removed from the cluster
			if !slices.ContainsFunc(nodes, func(n store.Node) bool { return n.Name == name && n.Provisioned() }) {
				delete(sums, name)
			}
		}
		for _, n := range nodes {
			if !n.Provisioned() {
				continue
			}
			ns := NodeState{Name: n.Name, Role: n.Role, Healthy: n.Healthy, MemberState: n.MemberState}
			if se, ok := sums[n.Name]; ok {
				s := se.s
				ns.Summary, ns.SummaryAt = &s, se.at
			}
			cs.Nodes = append(cs.Nodes, ns)
		}
		e.mu.Unlock()
		states = append(states, cs)
	}
	e.forget(exists)

	held := map[string]Condition{}
	for _, c := range Evaluate(states, now) {
		held[c.Fingerprint()] = c
	}
	for fp, c := range held {
		t := e.tracked[fp]
		if t == nil {
			t = &Tracked{ID: fp}
			// Resolved before (maybe before a restart): keep its history.
			if a, err := e.st.GetAlert(ctx, c.Namespace, fp); err == nil {
				t.State, t.FiredAt, t.ResolvedAt, t.LastNotified = a.State, a.FiredAt, a.ResolvedAt, a.LastNotified
			}
			e.tracked[fp] = t
		}
		t.Condition = c
		e.after(ctx, t, Step(t, true, c.For, now, e.cfg.Flap), now, silences)
	}
	// Right after a (re)start the members' summaries have not arrived
	// yet: a firing alert is not resolved for lack of them.
	warming := now.Sub(e.started) < startupGrace
	for fp, t := range e.tracked {
		if _, ok := held[fp]; ok || frozen[t.ClusterID] {
			continue
		}
		if warming && t.State == proto.AlertFiring && exists[t.ClusterID] {
			continue
		}
		if !exists[t.ClusterID] {
			t.Flapping = false // the cluster is gone: nothing to hold down
		}
		e.after(ctx, t, Step(t, false, t.For, now, e.cfg.Flap), now, silences)
	}
	return nil
}

// forget drops the summaries and caches of clusters no longer live.
func (e *Engine) forget(exists map[string]bool) {
	e.mu.Lock()
	for id := range e.summaries {
		if !exists[id] {
			delete(e.summaries, id)
		}
	}
	e.mu.Unlock()
	for id := range e.readySince {
		if !exists[id] {
			delete(e.readySince, id)
		}
	}
	for id := range e.repeat {
		if !exists[id] {
			delete(e.repeat, id)
		}
	}
}

// startupGrace is how long after the engine starts a firing alert whose
// condition does not hold is kept firing (the summaries of 3 × the
// default interval arrive meanwhile).
const startupGrace = 3*DefaultSummaryInterval + time.Second

// saveEvery bounds how stale a holding alert's last_seen may be in the
// store.
const saveEvery = 30 * time.Second

// after persists, records and notifies what one step did.
func (e *Engine) after(ctx context.Context, t *Tracked, tr Transition, now time.Time, silences map[string]store.Silence) {
	sil, silenced := silences[t.ID]
	log := e.log.With(zap.String("alert", t.ID), zap.String("rule", t.Rule), zap.String("cluster", t.Namespace+"/"+t.Project+"/"+t.Cluster),
		zap.String("node", t.Node), zap.String("subject", t.Subject))
	switch tr {
	case Changed:
		if t.State == "" {
			delete(e.tracked, t.ID)
			delete(e.saved, t.ID)
			if err := e.st.DeleteAlert(ctx, t.ID); err != nil {
				log.Warn("delete alert", zap.Error(err))
			}
			return
		}
	case Fired, Resolved:
		delete(e.acked, t.ID)
		delete(e.heldAtStart, t.ID)
		typ := TypeAlertFiring
		if tr == Resolved {
			typ = TypeAlertResolved
			log.Info("alert resolved", zap.String("severity", t.Severity))
		} else {
			log.Info("alert firing", zap.String("severity", t.Severity), zap.String("summary", t.Summary), zap.Bool("flapping", t.Flapping))
		}
		e.record(ctx, t, typ, now, silenced, log)
	}
	if t.State == proto.AlertResolved && tr != Resolved {
		if tr == Changed { // pending abandoned: back to resolved
			e.save(ctx, t, now, log)
		}
		if now.Sub(t.ResolvedAt) > e.cfg.Flap.Window {
			// Past the flapping window: nothing left to remember.
			delete(e.tracked, t.ID)
			delete(e.saved, t.ID)
		}
		return
	}
	in := NotifyInput{Severity: t.Severity, State: t.State, Transition: tr, Silenced: silenced, LastNotified: t.LastNotified,
		Repeat: e.repeatOf(t)}
	kind := NotifyDecision(in, now)
	if kind == proto.TransitionRepeat {
		if !e.acked[t.ID] {
			if a, err := e.st.GetAlert(ctx, t.Namespace, t.ID); err == nil && !a.AckedAt.IsZero() {
				e.acked[t.ID] = true
			}
		}
		if e.acked[t.ID] {
			kind = ""
		}
	}
	if kind != "" {
		if kind != proto.TransitionResolved {
			t.LastNotified = now
		}
		if e.cfg.Notifier != nil {
			a := e.row(t, now)
			var sp *store.Silence
			if silenced {
				sp = &sil
			}
			e.cfg.Notifier.Notify(ctx, t.Namespace, proto.AlertNotification{Transition: kind, At: now, Alert: ToProto(a, sp)})
		}
	}
	if tr != None || kind != "" || now.Sub(e.saved[t.ID]) >= saveEvery {
		e.save(ctx, t, now, log)
	}
}

func (e *Engine) save(ctx context.Context, t *Tracked, now time.Time, log *zap.Logger) {
	if err := e.st.SaveAlert(ctx, e.row(t, now)); err != nil {
		log.Warn("save alert", zap.Error(err))
		return
	}
	e.saved[t.ID] = now
}

func (e *Engine) repeatOf(t *Tracked) time.Duration {
	if r, ok := e.repeat[t.ClusterID]; ok {
		return r
	}
	return DefaultThresholds(e.cfg.AgentTTL).RepeatInterval
}

func (e *Engine) record(ctx context.Context, t *Tracked, typ string, now time.Time, silenced bool, log *zap.Logger) {
	if e.cfg.Record == nil {
		return
	}
	d := AlertEvent{Namespace: t.Namespace, Project: t.Project, Cluster: t.Cluster, Node: t.Node, TimestampMS: now.UnixMilli(), AlertID: t.ID,
		Rule: t.Rule, Severity: t.Severity, Subject: t.Subject, Summary: t.Summary, Flapping: t.Flapping, Silenced: silenced}
	data, _ := json.Marshal(d)
	ev := store.Event{ID: "ev-" + randHex(8), Namespace: t.Namespace, Project: t.Project, Cluster: t.Cluster, Node: t.Node, Type: typ,
		Time: now.UTC(), Data: data}
	if err := e.cfg.Record(ctx, ev); err != nil && !errors.Is(err, store.ErrNotFound) {
		log.Warn("record alert event", zap.String("type", typ), zap.Error(err))
	}
}

// row is t as a store row.
func (e *Engine) row(t *Tracked, now time.Time) store.Alert {
	return store.Alert{ID: t.ID, Namespace: t.Namespace, Project: t.Project, Cluster: t.Cluster, ClusterID: t.ClusterID, Node: t.Node,
		Subject: t.Subject, Rule: t.Rule, Severity: t.Severity, State: t.State, Summary: t.Summary, FirstSeen: t.FirstSeen, LastSeen: t.LastSeen,
		FiredAt: t.FiredAt, ResolvedAt: t.ResolvedAt, Flapping: t.Flapping, LastNotified: t.LastNotified, UpdatedAt: now}
}

// ToProto is a stored alert as the API serves it, with its active
// silence (nil: none).
func ToProto(a store.Alert, sil *store.Silence) proto.Alert {
	ts := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	out := proto.Alert{ID: a.ID, Rule: a.Rule, Severity: a.Severity, State: a.State, Namespace: a.Namespace, Project: a.Project, Cluster: a.Cluster,
		Node: a.Node, Subject: a.Subject, Summary: a.Summary, FirstSeen: ts(a.FirstSeen), LastSeen: ts(a.LastSeen), FiredAt: ts(a.FiredAt),
		Flapping: a.Flapping, AckedAt: ts(a.AckedAt), AckedBy: a.AckedBy}
	if a.State == proto.AlertResolved {
		out.ResolvedAt = ts(a.ResolvedAt)
	}
	if sil != nil {
		out.SilencedUntil, out.SilenceReason, out.SilencedBy = ts(sil.Until), sil.Reason, sil.CreatedBy
	}
	return out
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
