package alerts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/alerts"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/internal/testutil"
	"github.com/dbpilot/dbpilot/proto"
)

// receiver is a webhook endpoint that verifies every request's signature
// and keeps the notifications; the first failFirst requests get 503.
type receiver struct {
	t         *testing.T
	secret    string
	failFirst int

	mu       sync.Mutex
	requests int
	got      []proto.AlertNotification
	bad      []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if err := alerts.Verify(r.secret, req.Header, body, time.Now(), 5*time.Minute); err != nil {
		r.bad = append(r.bad, err.Error())
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if r.requests <= r.failFirst {
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	var n proto.AlertNotification
	if err := json.Unmarshal(body, &n); err != nil || n.ID != req.Header.Get(alerts.HeaderDelivery) {
		r.bad = append(r.bad, "body: "+string(body))
	}
	r.got = append(r.got, n)
}

func (r *receiver) notes() []proto.AlertNotification {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		r.t.Errorf("bad webhook requests: %v", r.bad)
	}
	return append([]proto.AlertNotification(nil), r.got...)
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	st    *store.Store
	eng   *alerts.Engine
	c     store.Cluster
	recv  *receiver
	proj  *controlplane.Projection
	nf    *alerts.Notifier
	mu    sync.Mutex
	clock time.Time
}

func (f *fixture) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clock
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.clock = f.clock.Add(d)
	f.mu.Unlock()
}

// tick sends the given members' summaries, then evaluates.
func (f *fixture) tick(sums ...proto.MemberSummary) {
	f.t.Helper()
	for _, s := range sums {
		f.eng.Summary(f.ctx, f.c.ID, s)
	}
	if err := f.eng.Tick(f.ctx); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) alerts(state string) map[string]store.Alert {
	f.t.Helper()
	as, err := f.st.ListAlerts(f.ctx, store.AlertFilter{Namespace: "ns", State: state})
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]store.Alert{}
	for _, a := range as {
		out[a.Rule+"/"+a.Node] = a
	}
	return out
}

func (f *fixture) events() []string {
	evs, err := f.st.ListEvents(f.ctx, store.EventFilter{Namespace: "ns"})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		var d alerts.AlertEvent
		_ = json.Unmarshal(e.Data, &d)
		out = append(out, e.Type[len("io.dbpilot.controlplane."):]+" "+d.Rule+"/"+d.Node)
	}
	return out
}

func sum(node, role string, writable bool) proto.MemberSummary {
	s := proto.MemberSummary{Header: proto.Header{ClusterRef: proto.ClusterRef{Namespace: "ns", Project: "default", Cluster: "db"}, Node: node, TimestampMS: 1},
		IntervalMS: 1000, Role: role, State: proto.StateRunning, Healthy: true, Writable: writable}
	if role == proto.RoleReplica {
		s.Streaming = new(bool)
		*s.Streaming = true
	}
	return s
}

func newFixture(t *testing.T, failFirst int) *fixture {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := zaptest.NewLogger(t)
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "dbpilot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.CreateNamespace(ctx, "ns"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	c := store.Cluster{ID: "c-1", Namespace: "ns", Project: "default", Name: "db", Engine: "postgres", Version: "15", Template: "postgres-15", Plan: "small",
		Provider: "process", Replicas: 2, SynchronousMode: "off", Phase: store.PhaseReady, CreatedAt: now, UpdatedAt: now}
	if err := st.CreateCluster(ctx, c, store.Operation{ID: "op-1", Namespace: "ns", ClusterID: c.ID, Kind: "create", State: store.OpSucceeded, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node1", "node2"} {
		if err := st.UpsertNode(ctx, store.Node{ClusterID: c.ID, Name: n, State: store.NodeCreated}); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{t: t, ctx: ctx, st: st, c: c, clock: now, proj: controlplane.NewProjection(st, log)}
	f.recv = &receiver{t: t, secret: "0123456789abcdef-secret", failFirst: failFirst}
	srv := httptest.NewServer(f.recv)
	t.Cleanup(srv.Close)
	if err := st.CreateChannel(ctx, store.Channel{Namespace: "ns", Name: "ops", Kind: proto.ChannelWebhook, URL: srv.URL, Secret: f.recv.secret, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	nf := alerts.NewNotifier(st, alerts.NotifierConfig{AllowPrivate: true, Backoff: func() backoff.BackOff {
		b := backoff.NewExponentialBackOff()
		b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 10*time.Millisecond, 50*time.Millisecond, 10*time.Second
		return b
	}}, log)
	nf.Start(ctx)
	f.nf = nf
	t.Cleanup(nf.Wait)
	t.Cleanup(cancel)
	f.eng = alerts.NewEngine(st, alerts.Config{AgentTTL: 10 * time.Second, Record: f.proj.Record, Notifier: nf, Now: f.Now}, log)
	return f
}

// TestEngine: a primary whose agent goes silent fires agent_silent at
// once and no_writable_primary after ttl + 5 s; both resolve when it
// reports again. Events are recorded, one signed webhook per transition
// arrives (the first attempts refused with 503 and retried), the
// delivery log says so.
func TestEngine(t *testing.T) {
	f := newFixture(t, 2)
	healthy := func() { f.tick(sum("node1", proto.RolePrimary, true), sum("node2", proto.RoleReplica, false)) }
	healthy()
	if a := f.alerts(""); len(a) != 0 {
		t.Fatalf("healthy cluster has alerts %v", a)
	}
	for range 3 {
		f.advance(time.Second)
		healthy()
	}
	// node1 goes quiet; node2 goes on reporting.
	for range 3 {
		f.advance(time.Second)
		f.tick(sum("node2", proto.RoleReplica, false))
	}
	if a := f.alerts(""); len(a) != 0 {
		t.Fatalf("3 intervals is not silent yet, got %v", a)
	}
	f.advance(time.Second)
	f.tick(sum("node2", proto.RoleReplica, false))
	a := f.alerts("")
	if a["agent_silent/node1"].State != proto.AlertFiring || a["no_writable_primary/"].State != proto.AlertPending {
		t.Fatalf("after 4 s: %+v", a)
	}
	for range 14 {
		f.advance(time.Second)
		f.tick(sum("node2", proto.RoleReplica, false))
	}
	if a := f.alerts(""); a["no_writable_primary/"].State != proto.AlertPending {
		t.Fatalf("no primary for 14 s: %+v", a)
	}
	f.advance(time.Second)
	f.tick(sum("node2", proto.RoleReplica, false))
	if a := f.alerts(proto.AlertFiring); a["no_writable_primary/"].State != proto.AlertFiring {
		t.Fatalf("no primary for 15 s: %+v", a)
	}
	f.advance(time.Second)
	healthy()
	if a := f.alerts(proto.AlertResolved); len(a) != 2 {
		t.Fatalf("resolved: %+v", a)
	}
	if got := f.events(); len(got) != 4 || got[0] != "alert_firing.v1 agent_silent/node1" || got[1] != "alert_firing.v1 no_writable_primary/" ||
		got[2] != "alert_resolved.v1 agent_silent/node1" && got[2] != "alert_resolved.v1 no_writable_primary/" {
		t.Fatalf("events: %v", got)
	}
	testutil.Eventually(t, 20*time.Second, 20*time.Millisecond, "4 notifications", func() bool { return len(f.recv.notes()) == 4 })
	time.Sleep(200 * time.Millisecond)
	notes := f.recv.notes()
	count := map[string]int{}
	for _, n := range notes {
		count[n.Transition+" "+n.Alert.Rule]++
		if n.Alert.Namespace != "ns" || n.Alert.Cluster != "db" || n.At.IsZero() {
			t.Errorf("notification %+v", n)
		}
	}
	for _, k := range []string{"firing agent_silent", "firing no_writable_primary", "resolved agent_silent", "resolved no_writable_primary"} {
		if count[k] != 1 {
			t.Errorf("%s: %d notifications, want 1 (all: %v)", k, count[k], count)
		}
	}
	ds, err := f.st.ListDeliveries(f.ctx, "ns", "ops", 0)
	if err != nil || len(ds) != 4 {
		t.Fatalf("deliveries %+v %v", ds, err)
	}
	retried := 0
	for _, d := range ds {
		if d.Status != proto.DeliveryDelivered {
			t.Errorf("delivery %+v", d)
		}
		if d.Attempts > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Errorf("no delivery was retried after the receiver's 503s: %+v", ds)
	}
}

// TestEngineSilenceAckRepeat: a silenced page notifies nothing but is
// recorded; after the silence it is sent; a page repeats every
// repeat_interval until acknowledged.
func TestEngineSilenceAckRepeat(t *testing.T) {
	f := newFixture(t, 0)
	repl := sum("node2", proto.RoleReplica, false)
	prim := sum("node1", proto.RolePrimary, true)
	prim.Filesystems = []proto.FilesystemUsage{{Kind: proto.FilesystemData, Path: "/data", SizeBytes: 100, UsedBytes: 97, UsedPct: 97}}
	id := alerts.Fingerprint(alerts.RuleFilesystemCritical, "ns", "default", "db", "node1", proto.FilesystemData)
	if err := f.st.CreateSilence(f.ctx, store.Silence{ID: "s1", Namespace: "ns", AlertID: id, Until: f.Now().Add(2 * time.Minute), Reason: "resizing", CreatedBy: "me", CreatedAt: f.Now()}); err != nil {
		t.Fatal(err)
	}
	step := func(d time.Duration) {
		f.advance(d)
		prim.TimestampMS++
		f.tick(prim, repl)
	}
	step(0)
	step(time.Minute) // disk_for 1m: fires, silenced
	if a := f.alerts(proto.AlertFiring); a["filesystem_usage_critical/node1"].ID != id {
		t.Fatalf("firing: %+v", a)
	}
	time.Sleep(300 * time.Millisecond)
	if n := f.recv.notes(); len(n) != 0 {
		t.Fatalf("silenced alert notified: %+v", n)
	}
	step(2 * time.Minute) // silence over: sent once
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "the firing notification after the silence", func() bool { return len(f.recv.notes()) == 1 })
	step(time.Hour)
	step(3*time.Hour - time.Second)
	time.Sleep(200 * time.Millisecond)
	if n := f.recv.notes(); len(n) != 1 {
		t.Fatalf("repeated before 4 h: %+v", n)
	}
	step(time.Second)
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "a repeat after 4 h", func() bool {
		n := f.recv.notes()
		return len(n) == 2 && n[1].Transition == proto.TransitionRepeat
	})
	if _, err := f.st.AckAlert(f.ctx, "ns", id, "me", f.Now()); err != nil {
		t.Fatal(err)
	}
	step(5 * time.Hour)
	time.Sleep(200 * time.Millisecond)
	if n := f.recv.notes(); len(n) != 2 {
		t.Fatalf("acknowledged page repeated: %+v", n)
	}
	prim.Filesystems[0].UsedPct = 50
	step(time.Second)
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "the resolution", func() bool {
		n := f.recv.notes()
		return len(n) == 3 && n[2].Transition == proto.TransitionResolved && n[2].Alert.State == proto.AlertResolved
	})
	if a, _ := f.st.GetAlert(f.ctx, "ns", id); a.AckedBy != "" {
		t.Fatalf("resolved alert keeps its ack: %+v", a)
	}
}

// TestEngineRestart: a control plane restart neither resolves a firing
// page for lack of summaries nor notifies it again; the page resolves
// (notified once) when the node reports.
func TestEngineRestart(t *testing.T) {
	f := newFixture(t, 0)
	healthy := func() { f.tick(sum("node1", proto.RolePrimary, true), sum("node2", proto.RoleReplica, false)) }
	healthy()
	for range 5 {
		f.advance(time.Second)
		f.tick(sum("node1", proto.RolePrimary, true))
	}
	id := alerts.Fingerprint(alerts.RuleAgentSilent, "ns", "default", "db", "node2", "")
	if a, err := f.st.GetAlert(f.ctx, "ns", id); err != nil || a.State != proto.AlertFiring {
		t.Fatalf("node2 silent: %+v %v", a, err)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "the firing notification", func() bool { return len(f.recv.notes()) == 1 })

	// A new engine over the same store: node1 reports at once, node2
	// never does; past the startup grace and the silent span it is still
	// the same firing page, not notified again.
	f.eng = alerts.NewEngine(f.st, alerts.Config{AgentTTL: 10 * time.Second, Record: f.proj.Record, Notifier: f.nf, Now: f.Now}, zaptest.NewLogger(t))
	for range 20 {
		f.advance(time.Second)
		f.tick(sum("node1", proto.RolePrimary, true))
		if a, _ := f.st.GetAlert(f.ctx, "ns", id); a.State != proto.AlertFiring {
			t.Fatalf("after the restart: %+v", a)
		}
	}
	f.advance(time.Second)
	healthy()
	if a, _ := f.st.GetAlert(f.ctx, "ns", id); a.State != proto.AlertResolved {
		t.Fatalf("node2 reports again: %+v", a)
	}
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "the resolution", func() bool { return len(f.recv.notes()) == 2 })
	time.Sleep(200 * time.Millisecond)
	if n := f.recv.notes(); len(n) != 2 || n[0].Transition != proto.TransitionFiring || n[1].Transition != proto.TransitionResolved {
		t.Fatalf("notifications %+v", n)
	}
	if got := f.events(); len(got) != 2 {
		t.Fatalf("events %v, want one firing and one resolved", got)
	}
}

// TestNotifierRefusals: a webhook on a loopback address is refused at
// connect time without alerts.allow_private_webhooks, and a 4xx answer is
// not retried: both deliveries end failed after one attempt, with the
// reason in the delivery log.
func TestNotifierRefusals(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "dbpilot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	hits := 0
	var mu sync.Mutex
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		http.Error(w, "no such hook", http.StatusGone)
	}))
	defer gone.Close()
	for _, ns := range []string{"a", "b"} {
		if _, err := st.CreateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateChannel(ctx, store.Channel{Namespace: ns, Name: "hook", Kind: proto.ChannelWebhook, URL: gone.URL, Secret: "0123456789abcdef", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	bo := func() backoff.BackOff { return backoff.NewConstantBackOff(10 * time.Millisecond) }
	strict := alerts.NewNotifier(st, alerts.NotifierConfig{Backoff: bo}, zaptest.NewLogger(t))
	lax := alerts.NewNotifier(st, alerts.NotifierConfig{Backoff: bo, AllowPrivate: true}, zaptest.NewLogger(t))
	strict.Start(ctx)
	lax.Start(ctx)
	defer func() { cancel(); strict.Wait(); lax.Wait() }()
	note := proto.AlertNotification{Transition: proto.TransitionFiring, At: time.Now(), Alert: proto.Alert{ID: "0123456789abcdef"}}
	strict.Notify(ctx, "a", note)
	lax.Notify(ctx, "b", note)
	for ns, want := range map[string]string{"a": "loopback and private addresses", "b": "410 Gone"} {
		testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "namespace "+ns+": delivery failed", func() error {
			ds, err := st.ListDeliveries(ctx, ns, "hook", 0)
			if err != nil || len(ds) != 1 || ds[0].Status != proto.DeliveryFailed || ds[0].Attempts != 1 || !strings.Contains(ds[0].LastError, want) {
				return fmt.Errorf("%+v %v", ds, err)
			}
			return nil
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 1 {
		t.Errorf("the receiver got %d requests, want 1 (the lax notifier's, not retried)", hits)
	}
}

// TestEngineThresholds: a cluster's overrides (PUT …/alert-thresholds)
// change the evaluation: with silent_heartbeats 5, a member quiet for
// 4 intervals is not silent yet, after 6 it is.
func TestEngineThresholds(t *testing.T) {
	f := newFixture(t, 0)
	if err := f.st.PutAlertThresholds(f.ctx, f.c.ID, json.RawMessage(`{"silent_heartbeats":5}`)); err != nil {
		t.Fatal(err)
	}
	f.tick(sum("node1", proto.RolePrimary, true), sum("node2", proto.RoleReplica, false))
	for range 4 {
		f.advance(time.Second)
		f.tick(sum("node1", proto.RolePrimary, true))
	}
	if a := f.alerts(""); len(a) != 0 {
		t.Fatalf("silent after 4 intervals with silent_heartbeats 5: %v", a)
	}
	for range 2 {
		f.advance(time.Second)
		f.tick(sum("node1", proto.RolePrimary, true))
	}
	if a := f.alerts(proto.AlertFiring); a["agent_silent/node2"].State != proto.AlertFiring {
		t.Fatalf("not silent after 6 intervals: %v", a)
	}
}
