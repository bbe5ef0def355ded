package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// TestProjectionThroughEmbeddedBus publishes real agent envelopes through
// the embedded bus: duplicates are applied once, older (term, revision)
// events are dropped and counted, malformed events are refused.
func TestProjectionThroughEmbeddedBus(t *testing.T) {
	ctx := context.Background()
	st := storeWithCluster(t, 2)
	recordNodes(t, st, "n1", "n2")
	p := NewProjection(st, zaptest.NewLogger(t))
	bus := NewEmbeddedBus()
	bus.Subscribe(TopicAgentEvents, p.Handle)
	env := func(typ string, node string, term uint64, rev int64, data any) []byte {
		h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: "ns", Project: "p", Cluster: "db"}, Node: node, Term: term, Revision: rev, TimestampMS: time.Now().UnixMilli()}
		e, err := proto.NewEnvelope(typ, proto.AgentSource("ns", "db", node), h, data)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(e)
		return b
	}
	first := env(proto.TypePrimaryChanged, "n1", 1, 10, proto.PrimaryChanged{Primary: "n1", Reason: proto.ReasonBootstrap})
	for _, b := range [][]byte{
		first, first, // duplicate
		env(proto.TypePrimaryChanged, "n2", 2, 20, proto.PrimaryChanged{Primary: "n2", PreviousPrimary: "n1", Reason: proto.ReasonFailover}),
		env(proto.TypePrimaryChanged, "n1", 1, 30, proto.PrimaryChanged{Primary: "n1", Reason: proto.ReasonBootstrap}), // stale: lower term
		env(proto.TypeMemberState, "n2", 2, 21, proto.MemberState{Role: proto.RolePrimary, State: proto.StateRunning, Healthy: true, LagBytes: 0}),
		env(proto.TypeMemberState, "n1", 2, 22, proto.MemberState{Role: proto.RoleReplica, State: proto.StateUnhealthy, Healthy: false, LagBytes: -1}),
	} {
		if err := bus.Publish(ctx, TopicAgentEvents, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := bus.Publish(ctx, TopicAgentEvents, []byte(`{"specversion":"1.0"}`)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("malformed event: %v", err)
	}
	stats := p.Stats()
	if stats.Applied != 4 || stats.Duplicate != 1 || stats.Stale != 1 || stats.Malformed != 1 {
		t.Fatalf("stats %+v", stats)
	}
	c, _ := st.GetCluster(ctx, "c1")
	if c.Primary != "n2" || c.Term != 2 || c.StaleEvents != 1 || c.Phase != store.PhaseDegraded {
		t.Fatalf("cluster %+v", c)
	}
}

// TestProjectionGroupCommitConcurrent delivers events from many goroutines
// at once, each twice: the group commit must apply every event exactly once
// and answer every delivery.
func TestProjectionGroupCommitConcurrent(t *testing.T) {
	ctx := context.Background()
	st := storeWithCluster(t, 3)
	recordNodes(t, st, "n0", "n1", "n2")
	now := time.Now()
	p := NewProjection(st, zaptest.NewLogger(t))
	const nodes, perNode = 3, 100
	var events [][]byte
	for n := range nodes {
		node := fmt.Sprintf("n%d", n)
		for rev := 1; rev <= perNode; rev++ {
			h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: "ns", Project: "p", Cluster: "db"}, Node: node, Term: 1, Revision: int64(rev), TimestampMS: now.UnixMilli()}
			e, err := proto.NewEnvelope(proto.TypeMemberState, proto.AgentSource("ns", "db", node), h,
				proto.MemberState{Role: proto.RoleReplica, State: proto.StateRunning, Healthy: true, LagBytes: int64(rev)})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(e)
			events = append(events, b)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(events))
	for _, b := range append(slices.Clone(events), events...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Handle(ctx, b); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s := p.Stats()
	if s.Applied+s.Stale != nodes*perNode || s.Duplicate != nodes*perNode {
		t.Fatalf("stats %+v: want applied+stale %d, duplicate %d", s, nodes*perNode, nodes*perNode)
	}
	ns, err := st.ListNodes(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.Revision != perNode {
			t.Fatalf("node %s at revision %d, want %d", n.Name, n.Revision, perNode)
		}
	}
}

// TestProjectionBatchKeepsOrder hands batches to the projection through
// EmbeddedBus.PublishBatch while single events arrive concurrently: a
// batch's events are applied in their order (none counted stale), a
// malformed event in a batch is refused alone, and a batch in reverse
// revision order makes all but its first event stale (so the order really
// is the batch's).
func TestProjectionBatchKeepsOrder(t *testing.T) {
	ctx := context.Background()
	st := storeWithCluster(t, 3)
	recordNodes(t, st, "n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "r")
	p := NewProjection(st, zaptest.NewLogger(t))
	bus := NewEmbeddedBus()
	bus.SubscribeBatch(TopicAgentEvents, p.HandleBatch)
	state := func(node string, rev int64) []byte {
		h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: "ns", Project: "p", Cluster: "db"}, Node: node, Term: 1, Revision: rev, TimestampMS: time.Now().UnixMilli()}
		e, err := proto.NewEnvelope(proto.TypeMemberState, proto.AgentSource("ns", "db", node), h,
			proto.MemberState{Role: proto.RoleReplica, State: proto.StateRunning, Healthy: true, LagBytes: rev})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(e)
		return b
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("n%d", w)
			for k := range 10 {
				batch := make([][]byte, 0, 20)
				for i := range 20 {
					batch = append(batch, state(node, int64(k*20+i+1)))
				}
				if w == 0 && k == 0 {
					batch[7] = []byte(`{"specversion":"1.0","id":"bad"}`)
				}
				for i, err := range bus.PublishBatch(ctx, TopicAgentEvents, batch) {
					if w == 0 && k == 0 && i == 7 {
						if !errors.Is(err, ErrMalformed) {
							t.Errorf("malformed event in a batch: %v, want ErrMalformed", err)
						}
					} else if err != nil {
						t.Errorf("%s batch %d event %d: %v", node, k, i, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if s := p.Stats(); s.Applied != 8*200-1 || s.Stale != 0 || s.Malformed != 1 || s.Duplicate != 0 {
		t.Fatalf("stats %+v, want 1599 applied, none stale, 1 malformed", s)
	}
	reversed := [][]byte{state("r", 3), state("r", 2), state("r", 1)}
	for _, err := range bus.PublishBatch(ctx, TopicAgentEvents, reversed) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if s := p.Stats(); s.Stale != 2 {
		t.Fatalf("reverse-ordered batch: %d stale, want 2 (applied in the order given)", s.Stale)
	}
}

func TestEventBelongsTo(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want bool
	}{
		{`{"id":"1","source":"dbpilot-agent/ns/db/n1","data":{"source":"x","project":"p"}}`, true},
		{`{"data":{"project":"p","source":"dbpilot-agent/ns/db/n1"},"source":"dbpilot-agent/ns/other/n1"}`, false},
		{`{"source":"dbpilot-agent/ns/db/n1","data":{"project":"other"}}`, false}, // same cluster name, another project
		{`{"source":"dbpilot-agent/ns/db/n1","data":{"node":"n1"}}`, false},       // no project: "default", not p
		{`{"source":"dbpilot-agent/ns/db/","data":{"project":"p"}}`, false},
		{`{"source":"dbpilot-agent/ns/dbx/n1","data":{"project":"p"}}`, false},
		{`{"id":"1","data":{"project":"p"}}`, false},
		{`{"source":7}`, true}, // malformed: left to the consumer
		{`not json`, true},     // malformed: left to the consumer
		{`{"source":"dbpilot-agent/ns/db/n1","data":[1]}`, true},            // malformed: left to the consumer
		{`{"source":"dbpilot-agent/ns/db/n1","data":{"project":"p"}`, true}, // truncated: left to the consumer
	} {
		if got := EventBelongsTo([]byte(tc.raw), "ns", "p", "db"); got != tc.want {
			t.Errorf("EventBelongsTo(%s) = %t, want %t", tc.raw, got, tc.want)
		}
	}
	// A cluster of the default project accepts events without data.project.
	if !EventBelongsTo([]byte(`{"source":"dbpilot-agent/ns/db/n1","data":{"node":"n1"}}`), "ns", "default", "db") {
		t.Error("event without data.project refused for the default project")
	}
}

// TestPruneEventsPolicy: member state_changed events go after
// StateEvents, the rest after Events, a zero duration keeps them, and more
// than one chunk is deleted in one call.
func TestPruneEventsPolicy(t *testing.T) {
	ctx := context.Background()
	st := storeWithCluster(t, 3)
	recordNodes(t, st, "n1")
	now := time.Now()
	var evs []store.EventApply
	add := func(n int, typ string, age time.Duration) {
		for i := range n {
			evs = append(evs, store.EventApply{Event: store.Event{ID: fmt.Sprintf("%s-%s-%d", typ, age, i), Namespace: "ns", Project: "p", Cluster: "db", Node: "n1",
				Type: typ, Term: 1, Time: now.Add(-age), Data: json.RawMessage(`{}`)}, Projection: store.Projection{Scope: store.ScopeUnordered}})
		}
	}
	add(pruneChunk+10, proto.TypeMemberState, 72*time.Hour) // older than 48 h: go
	add(5, proto.TypeMemberState, time.Hour)                // kept
	add(3, proto.TypePrimaryChanged, 72*time.Hour)          // kept: younger than 30 days
	add(2, proto.TypeFenced, 40*24*time.Hour)               // older than 30 days: go
	if _, err := st.ApplyEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	n, err := PruneEvents(ctx, st, EventRetention{Events: DefaultEventRetention, StateEvents: DefaultStateEventRetention}, now)
	if err != nil || n != pruneChunk+10+2 {
		t.Fatalf("pruned %d (%v), want %d", n, err, pruneChunk+12)
	}
	left, err := st.ListEvents(ctx, store.EventFilter{Namespace: "ns", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	byType := map[string]int{}
	for _, e := range left {
		byType[e.Type]++
	}
	if byType[proto.TypeMemberState] != 5 || byType[proto.TypePrimaryChanged] != 3 || len(byType) != 2 {
		t.Fatalf("left %v, want 5 recent state events and 3 primary_changed", byType)
	}
	// Zero durations keep everything.
	if n, err := PruneEvents(ctx, st, EventRetention{}, now.Add(1000*time.Hour)); err != nil || n != 0 {
		t.Fatalf("with zero retention pruned %d (%v), want 0", n, err)
	}
}

// storeWithCluster opens a SQLite store in a temporary folder holding one
// Ready cluster ns/p/db (id c1) of replicas nodes; it is closed at the end
// of the test.
func storeWithCluster(t *testing.T, replicas int) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now()
	if err := st.CreateCluster(ctx, store.Cluster{ID: "c1", Namespace: "ns", Project: "p", Name: "db", Replicas: replicas, Phase: store.PhaseReady, CreatedAt: now, UpdatedAt: now},
		store.Operation{ID: "o1", Namespace: "ns", ClusterID: "c1", Kind: KindCreate, State: store.OpSucceeded}); err != nil {
		t.Fatal(err)
	}
	return st
}

// recordNodes records names as provisioned nodes of c1: the projection
// applies events only of such nodes.
func recordNodes(t *testing.T, st *store.Store, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := st.UpsertNode(context.Background(), store.Node{ClusterID: "c1", Name: n, State: store.NodeCreated}); err != nil {
			t.Fatal(err)
		}
	}
}

// memberEvent is a member_state event of ns/p/db whose node (in source
// and data) is node, written as raw JSON so that invalid names get through
// to the consumer.
func memberEvent(t *testing.T, node string) []byte {
	t.Helper()
	const ph = "placeholder0node"
	h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: "ns", Project: "p", Cluster: "db"}, Node: ph, Term: 1, Revision: 1, TimestampMS: time.Now().UnixMilli()}
	e, err := proto.NewEnvelope(proto.TypeMemberState, proto.AgentSource("ns", "db", ph), h, proto.MemberState{Role: proto.RolePrimary, State: proto.StateRunning, Healthy: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(e)
	q, _ := json.Marshal(node)
	return bytes.ReplaceAll(b, []byte(ph), q[1:len(q)-1])
}

// TestProjectionRefusesUnprovisionedNodes: an event of a node the control
// plane never provisioned for the cluster (what a leaked ingest key would
// send) is refused for good (ErrUnknownNode, an ErrMalformed), records
// nothing and creates no node row; a name that is not a valid name never
// gets that far (the strict decoding refuses it).
func TestProjectionRefusesUnprovisionedNodes(t *testing.T) {
	ctx := context.Background()
	st := storeWithCluster(t, 3)
	p := NewProjection(st, zaptest.NewLogger(t))
	for _, node := range []string{"n99", "intruder"} {
		raw := memberEvent(t, node)
		if err := p.Handle(ctx, raw); !errors.Is(err, ErrUnknownNode) || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrUnknownNode (malformed: never retried)", node, err)
		}
	}
	for _, node := range []string{"..", "../../x", "/etc", "%2e%2e", "a\nb", "N1", ""} {
		raw := memberEvent(t, node)
		if err := p.Handle(ctx, raw); !errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnknownNode) {
			t.Errorf("%q: %v, want a malformed-event error from validation", node, err)
		}
	}
	nodes, _ := st.ListNodes(ctx, "c1")
	for _, n := range nodes {
		if !n.Provisioned() {
			t.Errorf("node row %+v created by an event", n)
		}
	}
	if evs, _ := st.ListEvents(ctx, store.EventFilter{Namespace: "ns", Limit: 100}); len(evs) != 0 {
		t.Errorf("%d events recorded, want none", len(evs))
	}
	if s := p.Stats(); s.UnknownNode != 2 || s.Applied != 0 {
		t.Errorf("stats %+v, want 2 unknown-node events, none applied", s)
	}
}

// TestProjectionMemberSummaries: a member summary of a provisioned node is
// handed to the sink with the store's cluster id and never stored; one of
// an unprovisioned node is refused (ErrUnknownNode) and not handed over;
// one of an unknown cluster is dropped; a malformed one is refused by the
// strict decoding. Summaries in a batch do not disturb the other events.
func TestProjectionMemberSummaries(t *testing.T) {
	ctx := context.Background()
	st := storeWithCluster(t, 2)
	recordNodes(t, st, "n1", "n2")
	p := NewProjection(st, zaptest.NewLogger(t))
	type got struct {
		clusterID string
		s         proto.MemberSummary
	}
	var mu sync.Mutex
	var sunk []got
	p.SetSummarySink(func(_ context.Context, clusterID string, s proto.MemberSummary) {
		mu.Lock()
		defer mu.Unlock()
		sunk = append(sunk, got{clusterID, s})
	})
	streaming := true
	summary := func(cluster, node string, lag int64) []byte {
		h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: "ns", Project: "p", Cluster: cluster}, Node: node, Term: 2, Revision: 7, TimestampMS: time.Now().UnixMilli()}
		e, err := proto.NewEnvelope(proto.TypeMemberSummary, proto.AgentSource("ns", cluster, node), h,
			proto.MemberSummary{IntervalMS: 3000, Role: proto.RoleReplica, State: proto.StateRunning, Healthy: true, Streaming: &streaming, LagBytes: lag})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(e)
		return b
	}
	errs := p.HandleBatch(ctx, [][]byte{summary("db", "n2", 100), memberEvent(t, "n1"), summary("db", "n2", 200)})
	for i, err := range errs {
		if err != nil {
			t.Errorf("event %d: %v", i, err)
		}
	}
	if err := p.Handle(ctx, summary("db", "n99", 1)); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("summary of an unprovisioned node: %v, want ErrUnknownNode", err)
	}
	if err := p.Handle(ctx, summary("nosuch", "n1", 1)); err != nil {
		t.Errorf("summary of an unknown cluster: %v, want nil (dropped)", err)
	}
	bad := bytes.Replace(summary("db", "n1", 1), []byte(`"interval_ms":3000`), []byte(`"interval_ms":10`), 1)
	if err := p.Handle(ctx, bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("summary with interval_ms 10: %v, want ErrMalformed", err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(sunk) != 2 || sunk[0].clusterID != "c1" || sunk[0].s.Node != "n2" || sunk[0].s.LagBytes != 100 || sunk[1].s.LagBytes != 200 ||
		sunk[0].s.Term != 2 || sunk[0].s.Streaming == nil || !*sunk[0].s.Streaming {
		t.Fatalf("sink got %+v, want n2's two summaries of cluster c1 in order", sunk)
	}
	evs, err := st.ListEvents(ctx, store.EventFilter{Namespace: "ns", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Type != proto.TypeMemberState {
		t.Errorf("events stored %+v, want only the member_state (summaries are not stored)", evs)
	}
	if s := p.Stats(); s.Summaries != 2 || s.Applied != 1 || s.UnknownNode != 1 || s.UnknownCluster != 1 || s.Malformed != 1 {
		t.Errorf("stats %+v", s)
	}

	// Without a sink, summaries are checked and dropped.
	p.SetSummarySink(nil)
	if err := p.Handle(ctx, summary("db", "n1", 5)); err != nil {
		t.Errorf("summary without a sink: %v", err)
	}
	if len(sunk) != 2 {
		t.Errorf("a cleared sink still received a summary")
	}
}
