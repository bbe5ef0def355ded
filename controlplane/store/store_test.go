package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/controlplane/pgtest"
	"github.com/dbpilot/dbpilot/controlplane/store"
)

// dialects runs the suite against SQLite and a PostgreSQL server the test
// starts.
func TestStoreSQLite(t *testing.T) {
	t.Parallel()
	suite(t, func(t *testing.T) *store.Store {
		return open(t, filepath.Join(t.TempDir(), "dbpilot.db"))
	})
}

func TestStorePostgres(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Start(t)
	var mu sync.Mutex
	n := 0
	suite(t, func(t *testing.T) *store.Store {
		// Each subtest gets its own schema through search_path.
		mu.Lock()
		n++
		schema := fmt.Sprintf("s%d", n)
		mu.Unlock()
		base := open(t, dsn)
		if _, err := base.DB().ExecContext(context.Background(), "CREATE SCHEMA "+schema); err != nil {
			t.Fatal(err)
		}
		return open(t, dsn+"&search_path="+schema)
	})
}

func open(t *testing.T, dsn string) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func suite(t *testing.T, newStore func(t *testing.T) *store.Store) {
	t.Run("namespaces", func(t *testing.T) { testNamespaces(t, newStore(t)) })
	t.Run("tokens", func(t *testing.T) { testTokens(t, newStore(t)) })
	t.Run("clusters", func(t *testing.T) { testClusters(t, newStore(t)) })
	t.Run("events", func(t *testing.T) { testEvents(t, newStore(t)) })
	t.Run("prune_events", func(t *testing.T) { testPruneEvents(t, newStore(t)) })
	t.Run("operations", func(t *testing.T) { testOperations(t, newStore(t)) })
	t.Run("operation_ownership", func(t *testing.T) { testOperationOwnership(t, newStore(t)) })
	t.Run("fleet", func(t *testing.T) { testFleet(t, newStore(t)) })
	t.Run("templates_audit", func(t *testing.T) { testTemplatesAudit(t, newStore(t)) })
	t.Run("backups", func(t *testing.T) { testBackups(t, newStore(t)) })
	t.Run("tenant_lifecycle", func(t *testing.T) { testTenantLifecycle(t, newStore(t)) })
	t.Run("per_namespace_seq", func(t *testing.T) { testPerNamespaceSeq(t, newStore(t)) })
	t.Run("alerts", func(t *testing.T) { testAlerts(t, newStore(t)) })
	t.Run("migrations_idempotent", func(t *testing.T) {
		s := newStore(t)
		// Opening again re-runs goose Up: nothing to do, no error.
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

func testNamespaces(t *testing.T, s *store.Store) {
	ctx := context.Background()
	for _, n := range []string{"b", "a", "c"} {
		if _, err := s.CreateNamespace(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateNamespace(ctx, "a"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate namespace: got %v, want ErrConflict", err)
	}
	page, err := s.ListNamespaces(ctx, store.Page{Limit: 2}, nil)
	if err != nil || len(page) != 2 || page[0].Name != "a" || page[1].Name != "b" {
		t.Fatalf("first page: %+v %v", page, err)
	}
	page, err = s.ListNamespaces(ctx, store.Page{After: "b", Limit: 2}, nil)
	if err != nil || len(page) != 1 || page[0].Name != "c" {
		t.Fatalf("second page: %+v %v", page, err)
	}
	page, err = s.ListNamespaces(ctx, store.Page{}, []string{"c"})
	if err != nil || len(page) != 1 || page[0].Name != "c" {
		t.Fatalf("restricted: %+v %v", page, err)
	}
	if _, err := s.GetProject(ctx, "a", "default"); err != nil {
		t.Fatalf("default project: %v", err)
	}
	if _, err := s.CreateProject(ctx, "a", "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateProject(ctx, "zz", "web"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("project in missing namespace: %v", err)
	}
	ps, err := s.ListProjects(ctx, "a", store.Page{})
	if err != nil || len(ps) != 2 {
		t.Fatalf("projects: %+v %v", ps, err)
	}
	if err := s.DeleteNamespace(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetNamespace(ctx, "c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted namespace: %v", err)
	}
}

func testTokens(t *testing.T, s *store.Store) {
	ctx := context.Background()
	if _, err := s.CreateNamespace(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	tok := store.Token{ID: "t1", Name: "ci", Hash: "h1", Grants: []store.Grant{{Namespace: "a", Role: "viewer"}}, CreatedBy: "root", CreatedAt: time.Now()}
	if err := s.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	got, err := s.TokenByHash(ctx, "h1")
	if err != nil || got.ID != "t1" || len(got.Grants) != 1 || got.Grants[0].Role != "viewer" {
		t.Fatalf("by hash: %+v %v", got, err)
	}
	if err := s.RevokeToken(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenByHash(ctx, "h1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoked token still valid: %v", err)
	}
	if err := s.RevokeToken(ctx, "t1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("double revoke: %v", err)
	}
}

func newCluster(id, ns, name string) (store.Cluster, store.Operation) {
	now := time.Now()
	return store.Cluster{ID: id, Namespace: ns, Project: "default", Name: name, Engine: "postgres", Version: "15",
			Template: "postgres-15", Plan: "small", Provider: "process", Replicas: 3, SynchronousMode: "off",
			Phase: store.PhasePending, CreatedAt: now, UpdatedAt: now},
		store.Operation{ID: "op-" + id, Namespace: ns, ClusterID: id, Kind: "create", State: store.OpPending, CreatedAt: now, UpdatedAt: now}
}

func testClusters(t *testing.T, s *store.Store) {
	ctx := context.Background()
	c, op := newCluster("c1", "a", "billing")
	if err := s.CreateCluster(ctx, c, op); err != nil {
		t.Fatal(err)
	}
	c2, op2 := newCluster("c2", "a", "billing")
	op2.ID = "op-c2"
	if err := s.CreateCluster(ctx, c2, op2); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := s.GetOperation(ctx, "op-c2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("operation of the refused cluster was kept: %v", err)
	}
	got, err := s.GetCluster(ctx, "c1")
	if err != nil || got.Name != "billing" || got.Replicas != 3 {
		t.Fatalf("get: %+v %v", got, err)
	}
	found, err := s.FindClusters(ctx, "a", "", "billing")
	if err != nil || len(found) != 1 {
		t.Fatalf("find: %+v %v", found, err)
	}
	if err := s.UpsertNode(ctx, store.Node{ClusterID: "c1", Name: "node1", State: "created", Handle: json.RawMessage(`{"pid":1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetClusterPhase(ctx, "c1", store.PhaseFailed, "no capacity", 5); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetCluster(ctx, "c1")
	if got.Phase != store.PhaseFailed || got.Reason != "no capacity" || got.Replicas != 5 {
		t.Fatalf("phase: %+v", got)
	}
	if err := s.SetClusterSynchronousMode(ctx, "c1", "on"); err != nil {
		t.Fatal(err)
	}
	if got, _ = s.GetCluster(ctx, "c1"); got.SynchronousMode != "on" || got.Phase != store.PhaseFailed {
		t.Fatalf("synchronous_mode: %+v", got)
	}
	if err := s.SetClusterSynchronousMode(ctx, "c-none", "on"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("synchronous_mode of a missing cluster: %v", err)
	}
	if err := s.DeleteCluster(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCluster(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
	if ns, _ := s.ListNodes(ctx, "c1"); len(ns) != 0 {
		t.Fatalf("nodes left: %+v", ns)
	}
}

// recordNodes records names as created nodes of cluster clusterID.
func recordNodes(t *testing.T, s *store.Store, clusterID string, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := s.UpsertNode(context.Background(), store.Node{ClusterID: clusterID, Name: n, State: store.NodeCreated}); err != nil {
			t.Fatal(err)
		}
	}
}

func testEvents(t *testing.T, s *store.Store) {
	ctx := context.Background()
	c, op := newCluster("c1", "a", "billing")
	if err := s.CreateCluster(ctx, c, op); err != nil {
		t.Fatal(err)
	}
	// Only provisioned nodes' events apply: record node1-3 (node9 is
	// not, node8 is a legacy "external" row).
	recordNodes(t, s, "c1", "node1", "node2", "node3")
	if err := s.UpsertNode(ctx, store.Node{ClusterID: "c1", Name: "node8", State: "external"}); err != nil {
		t.Fatal(err)
	}
	ev := func(id string, term uint64, rev int64, node string) store.Event {
		return store.Event{ID: id, Namespace: "a", Project: "default", Cluster: "billing", Node: node, Type: "t", Term: term, Revision: rev, Time: time.Now(), Data: json.RawMessage(`{}`)}
	}
	member := func(role string) store.Projection {
		return store.Projection{Scope: store.ScopeMember, Member: &store.MemberUpdate{Role: role, MemberState: "running", Healthy: true, LagBytes: 0, Timeline: 1}}
	}
	steps := []struct {
		ev   store.Event
		p    store.Projection
		want store.ApplyResult
	}{
		{ev("e1", 1, 10, "node1"), store.Projection{Scope: store.ScopeCluster, Primary: "node1"}, store.Applied},
		{ev("e1", 1, 10, "node1"), store.Projection{Scope: store.ScopeCluster, Primary: "node1"}, store.Duplicate},
		{ev("e2", 2, 20, "node2"), store.Projection{Scope: store.ScopeCluster, Primary: "node2"}, store.Applied},
		{ev("e3", 1, 30, "node1"), store.Projection{Scope: store.ScopeCluster, Primary: "node1"}, store.Stale}, // lower term
		{ev("e4", 2, 15, "node1"), store.Projection{Scope: store.ScopeCluster, Primary: "node1"}, store.Stale}, // lower revision
		{ev("e5", 2, 20, "node3"), store.Projection{Scope: store.ScopeCluster}, store.Applied},                 // same position
		{ev("m1", 2, 21, "node2"), member("primary"), store.Applied},
		{ev("m2", 2, 19, "node2"), member("replica"), store.Stale},
		{ev("m3", 1, 5, "node1"), member("replica"), store.Applied}, // its own subject
		{store.Event{ID: "x", Namespace: "a", Project: "default", Cluster: "nope", Time: time.Now(), Data: json.RawMessage(`{}`)}, store.Projection{}, store.UnknownCluster},
		// Never provisioned: refused whatever the scope; nothing recorded.
		{ev("u1", 3, 1, "node9"), member("primary"), store.UnknownNode},
		{ev("u2", 3, 1, "node9"), store.Projection{Scope: store.ScopeCluster, Primary: "node9"}, store.UnknownNode},
		{ev("u3", 3, 1, "node9"), store.Projection{Scope: store.ScopeUnordered}, store.UnknownNode},
		{ev("u4", 3, 1, "node8"), member("primary"), store.UnknownNode},
		{ev("u5", 3, 1, ".."), member("primary"), store.UnknownNode},
		// The control plane's own events need no node.
		{ev("cp1", 0, 0, ""), store.Projection{Scope: store.ScopeUnordered, AnyNode: true}, store.Applied},
	}
	for i, st := range steps {
		got, err := s.ApplyEvent(ctx, st.ev, st.p)
		if err != nil || got != st.want {
			t.Fatalf("step %d (%s): got %v %v, want %v", i, st.ev.ID, got, err, st.want)
		}
	}
	cl, _ := s.GetCluster(ctx, "c1")
	if cl.Primary != "node2" || cl.Term != 2 || cl.Revision != 20 || cl.StaleEvents != 3 {
		t.Fatalf("projection: primary=%s term=%d rev=%d stale=%d", cl.Primary, cl.Term, cl.Revision, cl.StaleEvents)
	}
	nodes, _ := s.ListNodes(ctx, "c1")
	if len(nodes) != 4 || nodes[0].Name != "node1" || nodes[0].Role != "replica" || nodes[1].Role != "primary" || !nodes[1].Healthy || nodes[3].Role != "" {
		t.Fatalf("nodes: %+v", nodes)
	}
	all, err := s.ListEvents(ctx, store.EventFilter{Namespace: "a"})
	if err != nil || len(all) != 9 {
		t.Fatalf("events: %d %v", len(all), err)
	}
	page, _ := s.ListEvents(ctx, store.EventFilter{Namespace: "a", AfterSeq: all[2].Seq, Node: "node2"})
	if len(page) != 2 || page[0].ID != "m1" {
		t.Fatalf("filtered page: %+v", page)
	}
	if other, _ := s.ListEvents(ctx, store.EventFilter{Namespace: "b"}); len(other) != 0 {
		t.Fatalf("other namespace sees %d events", len(other))
	}

	// Concurrent duplicate deliveries: exactly one applies.
	var wg sync.WaitGroup
	results := make(chan store.ApplyResult, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.ApplyEvent(ctx, ev("dup", 3, 40, "node1"), store.Projection{Scope: store.ScopeCluster, Primary: "node1"})
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
	}
	wg.Wait()
	close(results)
	applied := 0
	for r := range results {
		if r == store.Applied {
			applied++
		}
	}
	if applied != 1 {
		t.Fatalf("concurrent duplicates: %d applied, want 1", applied)
	}
}

func testOperations(t *testing.T, s *store.Store) {
	ctx := context.Background()
	c, op := newCluster("c1", "a", "billing")
	if err := s.CreateCluster(ctx, c, op); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s.CreateOperation(ctx, store.Operation{ID: "op2", Namespace: "a", ClusterID: "c1", Kind: "scale", State: store.OpPending, CreatedAt: now, UpdatedAt: now}, store.PhaseProvisioning); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second operation while one runs: %v", err)
	}
	un, err := s.UnfinishedOperations(ctx)
	if err != nil || len(un) != 1 || un[0].ID != "op-c1" {
		t.Fatalf("unfinished: %+v %v", un, err)
	}
	got, err := s.ClaimOperation(ctx, "op-c1", "server-a", now.Add(time.Minute))
	if err != nil || got.Owner != "server-a" || got.State != store.OpRunning {
		t.Fatalf("claim: %+v %v", got, err)
	}
	if _, err := s.ClaimOperation(ctx, "op-c1", "server-b", now.Add(time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("claim held by another: %v", err)
	}
	got.Step, got.Attempts = "create_nodes", 2
	if err := s.UpdateOperation(ctx, got); err != nil {
		t.Fatal(err)
	}
	stolen := got
	stolen.Owner = "server-b"
	if err := s.UpdateOperation(ctx, stolen); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("update by non-owner: %v", err)
	}
	// An expired lease may be taken over.
	got.LeaseUntil = now.Add(-time.Second)
	if err := s.UpdateOperation(ctx, got); err != nil {
		t.Fatal(err)
	}
	b, err := s.ClaimOperation(ctx, "op-c1", "server-b", now.Add(time.Minute))
	if err != nil || b.Step != "create_nodes" || b.Attempts != 2 {
		t.Fatalf("takeover: %+v %v", b, err)
	}
	b.State = store.OpSucceeded
	if err := s.UpdateOperation(ctx, b); err != nil {
		t.Fatal(err)
	}
	if un, _ := s.UnfinishedOperations(ctx); len(un) != 0 {
		t.Fatalf("still unfinished: %+v", un)
	}
	ops, err := s.ListOperations(ctx, "a", "c1", store.Page{})
	if err != nil || len(ops) != 1 {
		t.Fatalf("list ops: %+v %v", ops, err)
	}
	// Newest first, filtered by kind.
	for i, kind := range []string{"repair", "restart", "repair"} {
		at := now.Add(time.Duration(i+1) * time.Second)
		o := store.Operation{ID: fmt.Sprintf("op-z%d", i), Namespace: "a", ClusterID: "c1", Kind: kind, State: store.OpFailed, CreatedAt: at, UpdatedAt: at}
		if err := s.CreateOperation(ctx, o, ""); err != nil {
			t.Fatal(err)
		}
	}
	latest, err := s.LatestOperations(ctx, "c1", "repair", 10)
	if err != nil || len(latest) != 2 || latest[0].ID != "op-z2" || latest[1].ID != "op-z0" {
		t.Fatalf("latest repair operations: %+v %v", latest, err)
	}
	if all, err := s.LatestOperations(ctx, "c1", "", 2); err != nil || len(all) != 2 || all[0].ID != "op-z2" || all[1].ID != "op-z1" {
		t.Fatalf("latest 2 operations: %+v %v", all, err)
	}
}

// testOperationOwnership: only the runner holding an operation's claim
// can renew it, end it (succeeded or failed) or change the cluster's phase
// under it; the previous owner of an operation taken over after its lease
// cannot, not even to fail it; a finished operation never changes again.
func testOperationOwnership(t *testing.T, s *store.Store) {
	ctx := context.Background()
	c, op := newCluster("c1", "a", "billing")
	if err := s.CreateCluster(ctx, c, op); err != nil {
		t.Fatal(err)
	}
	phase := func(want, reason string) {
		t.Helper()
		got, err := s.GetCluster(ctx, "c1")
		if err != nil || got.Phase != want || got.Reason != reason {
			t.Fatalf("cluster phase %q reason %q (%v), want %q %q", got.Phase, got.Reason, err, want, reason)
		}
	}
	opState := func(id, state, owner string) store.Operation {
		t.Helper()
		got, err := s.GetOperation(ctx, id)
		if err != nil || got.State != state || got.Owner != owner {
			t.Fatalf("operation %s: state %q owner %q (%v), want %q %q", id, got.State, got.Owner, err, state, owner)
		}
		return got
	}
	conflict := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("%s: %v, want ErrConflict", what, err)
		}
	}
	now := time.Now()
	a, err := s.ClaimOperation(ctx, "op-c1", "server-a", now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	claimA := store.Claim{OperationID: "op-c1", Owner: "server-a"}
	claimB := store.Claim{OperationID: "op-c1", Owner: "server-b"}

	// server-b never claimed it: every write under its name is refused.
	conflict("renew by non-owner", s.RenewOperation(ctx, claimB, now.Add(time.Hour)))
	conflict("phase by non-owner", s.SetClusterPhaseAs(ctx, claimB, "c1", store.PhaseFailed, "b was here", 0))
	conflict("synchronous_mode by non-owner", s.SetClusterSynchronousModeAs(ctx, claimB, "c1", "on"))
	conflict("delete cluster by non-owner", s.DeleteClusterAs(ctx, claimB, "c1"))
	fakeB := a
	fakeB.Owner, fakeB.State, fakeB.Error = "server-b", store.OpFailed, "b failed it"
	conflict("fail by non-owner", s.FinishOperation(ctx, fakeB, &store.ClusterChange{Phase: store.PhaseFailed, Reason: "b failed it"}))
	fakeB.State = store.OpSucceeded
	conflict("succeed by non-owner", s.FinishOperation(ctx, fakeB, nil))
	conflict("update by non-owner", s.UpdateOperation(ctx, fakeB))
	phase(store.PhasePending, "")
	opState("op-c1", store.OpRunning, "server-a")
	if got, _ := s.GetCluster(ctx, "c1"); got.SynchronousMode != "off" {
		t.Fatalf("synchronous_mode changed by a non-owner: %q", got.SynchronousMode)
	}

	// The owner renews and sets the phase.
	lease := now.Add(2 * time.Minute).Truncate(time.Millisecond)
	if err := s.RenewOperation(ctx, claimA, lease); err != nil {
		t.Fatal(err)
	}
	if got := opState("op-c1", store.OpRunning, "server-a"); !got.LeaseUntil.Equal(lease) {
		t.Fatalf("lease until %s, want %s", got.LeaseUntil, lease)
	}
	if err := s.SetClusterPhaseAs(ctx, claimA, "c1", store.PhaseProvisioning, "", 0); err != nil {
		t.Fatal(err)
	}
	phase(store.PhaseProvisioning, "")
	if _, err := s.ClaimOperation(ctx, "op-c1", "server-b", time.Now().Add(time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("claim of a renewed lease: %v", err)
	}

	// server-a's lease runs out and server-b takes over: server-a can no
	// longer renew, re-phase, fail or finish it.
	if err := s.RenewOperation(ctx, claimA, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	b, err := s.ClaimOperation(ctx, "op-c1", "server-b", time.Now().Add(time.Minute))
	if err != nil {
		t.Fatalf("takeover after the lease: %v", err)
	}
	conflict("renew by the previous owner", s.RenewOperation(ctx, claimA, time.Now().Add(time.Hour)))
	conflict("phase by the previous owner", s.SetClusterPhaseAs(ctx, claimA, "c1", store.PhaseFailed, "a was here", 0))
	a.State, a.Error = store.OpFailed, "step nodes: a gave up"
	conflict("fail by the previous owner", s.FinishOperation(ctx, a, &store.ClusterChange{Phase: store.PhaseFailed, Reason: a.Error}))
	a.State, a.Error = store.OpSucceeded, ""
	conflict("succeed by the previous owner", s.FinishOperation(ctx, a, &store.ClusterChange{Phase: store.PhaseReady}))
	conflict("update by the previous owner", s.UpdateOperation(ctx, a))
	phase(store.PhaseProvisioning, "")
	opState("op-c1", store.OpRunning, "server-b")

	// The new owner fails it: operation and cluster in one write.
	b.State, b.Error = store.OpRunning, ""
	if err := s.FinishOperation(ctx, b, nil); err == nil {
		t.Fatal("FinishOperation accepted a state that is not final")
	}
	b.State, b.Error = store.OpFailed, "step ready: not ready after 3m0s"
	if err := s.FinishOperation(ctx, b, &store.ClusterChange{Phase: store.PhaseFailed, Reason: b.Error}); err != nil {
		t.Fatal(err)
	}
	if got := opState("op-c1", store.OpFailed, "server-b"); got.Error != b.Error {
		t.Fatalf("error %q, want %q", got.Error, b.Error)
	}
	phase(store.PhaseFailed, b.Error)
	failure := b.Error
	// Finished: nobody changes it again, its owner included.
	b.State, b.Error = store.OpSucceeded, ""
	conflict("finish twice", s.FinishOperation(ctx, b, &store.ClusterChange{Phase: store.PhaseReady}))
	conflict("update a finished operation", s.UpdateOperation(ctx, b))
	conflict("renew a finished operation", s.RenewOperation(ctx, claimB, time.Now().Add(time.Hour)))
	conflict("phase under a finished operation", s.SetClusterPhaseAs(ctx, claimB, "c1", store.PhaseReady, "", 0))
	if _, err := s.ClaimOperation(ctx, "op-c1", "server-a", time.Now().Add(time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("claim of a finished operation: %v", err)
	}
	phase(store.PhaseFailed, failure)

	// IfPhase: a failed repair re-phases only a Ready or Degraded cluster.
	now = time.Now()
	if err := s.CreateOperation(ctx, store.Operation{ID: "op-r", Namespace: "a", ClusterID: "c1", Kind: "repair", State: store.OpPending,
		CreatedAt: now, UpdatedAt: now}, ""); err != nil {
		t.Fatal(err)
	}
	r, err := s.ClaimOperation(ctx, "op-r", "server-a", now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	r.State, r.Error = store.OpFailed, "node1 not ready"
	if err := s.FinishOperation(ctx, r, &store.ClusterChange{Phase: store.PhaseDegraded, Reason: r.Error,
		IfPhase: []string{store.PhaseReady, store.PhaseDegraded}}); err != nil {
		t.Fatal(err)
	}
	opState("op-r", store.OpFailed, "server-a")
	phase(store.PhaseFailed, failure)

	// A delete: the owner removes the cluster, then fails (the cluster is
	// gone: the change is skipped, the operation still ends).
	now = time.Now()
	if err := s.CreateOperation(ctx, store.Operation{ID: "op-d", Namespace: "a", ClusterID: "c1", Kind: "delete", State: store.OpPending,
		CreatedAt: now, UpdatedAt: now}, store.PhaseDeleting); err != nil {
		t.Fatal(err)
	}
	d, err := s.ClaimOperation(ctx, "op-d", "server-a", now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteClusterAs(ctx, store.Claim{OperationID: "op-d", Owner: "server-a"}, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCluster(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cluster after DeleteClusterAs: %v", err)
	}
	d.State, d.Error = store.OpFailed, "late failure"
	if err := s.FinishOperation(ctx, d, &store.ClusterChange{Phase: store.PhaseFailed, Reason: d.Error}); err != nil {
		t.Fatal(err)
	}
	opState("op-d", store.OpFailed, "server-a")
}

func testFleet(t *testing.T, s *store.Store) {
	ctx := context.Background()
	if err := s.CreateJoinToken(ctx, store.JoinToken{Hash: "j1", Labels: map[string]string{"zone": "a"}, ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateJoinToken(ctx, store.JoinToken{Hash: "j2", ExpiresAt: time.Now().Add(-time.Second), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h, err := s.EnrollHost(ctx, "j1", store.Host{ID: "h1", Name: "db1", Address: "10.0.0.1", Labels: map[string]string{"disk": "ssd"},
		Capacity: store.Resources{CPU: 4, MemoryMB: 8192, DiskGB: 100}, CredentialHash: "c1"})
	if err != nil || h.Labels["zone"] != "a" || h.Labels["disk"] != "ssd" {
		t.Fatalf("enroll: %+v %v", h, err)
	}
	if _, err := s.EnrollHost(ctx, "j1", store.Host{ID: "h2", Name: "db2"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("join token reused: %v", err)
	}
	if _, err := s.EnrollHost(ctx, "j2", store.Host{ID: "h3", Name: "db3"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired join token accepted: %v", err)
	}
	need := store.Resources{CPU: 2, MemoryMB: 4096, DiskGB: 40}
	a, err := s.Allocate(ctx, []string{"h1"}, store.Allocation{ClusterID: "c1", Node: "node1", Resources: need})
	if err != nil || a.HostID != "h1" {
		t.Fatalf("allocate: %+v %v", a, err)
	}
	if _, err := s.Allocate(ctx, []string{"h1"}, store.Allocation{ClusterID: "c1", Node: "node2", Resources: need}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("two nodes of one cluster on one host: %v", err)
	}
	if _, err := s.Allocate(ctx, []string{"h1"}, store.Allocation{ClusterID: "c2", Node: "node1", Resources: need}); err != nil {
		t.Fatalf("second cluster: %v", err)
	}
	if _, err := s.Allocate(ctx, []string{"h1"}, store.Allocation{ClusterID: "c3", Node: "node1", Resources: need}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("overbooked: %v", err)
	}
	if err := s.Release(ctx, "c2", "node1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Allocate(ctx, []string{"h1"}, store.Allocation{ClusterID: "c3", Node: "node1", Resources: need}); err != nil {
		t.Fatalf("after release: %v", err)
	}
	byCred, err := s.HostByCredential(ctx, "c1")
	if err != nil || byCred.ID != "h1" {
		t.Fatalf("by credential: %+v %v", byCred, err)
	}

	// Restart generations: raised once until the host acknowledges.
	for i, want := range []int64{1, 1} {
		if gen, err := s.RequestRestart(ctx, "c1", "node1"); err != nil || gen != want {
			t.Fatalf("restart request %d: %d %v, want %d", i, gen, err, want)
		}
	}
	if err := s.AckAllocation(ctx, "h2", "c1", "node1", 1, "", ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another host acknowledged: %v", err)
	}
	if err := s.AckAllocation(ctx, "h1", "c1", "node1", 1, "abc", "bad key"); err != nil {
		t.Fatal(err)
	}
	if gen, err := s.RequestRestart(ctx, "c1", "node1"); err != nil || gen != 2 {
		t.Fatalf("restart after acknowledgement: %d %v, want 2", gen, err)
	}
	if _, err := s.RequestRestart(ctx, "c1", "node9"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("restart of an unplaced node: %v", err)
	}
	// Config updates report whether anything changed.
	if changed, err := s.UpdateAllocationConfig(ctx, "c1", "node1", "v2"); err != nil || !changed {
		t.Fatalf("config update: %v %v", changed, err)
	}
	if changed, err := s.UpdateAllocationConfig(ctx, "c1", "node1", "v2"); err != nil || changed {
		t.Fatalf("same config again: %v %v", changed, err)
	}
	if _, err := s.UpdateAllocationConfig(ctx, "c1", "node9", "v2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("config of an unplaced node: %v", err)
	}
	got, err := s.GetAllocation(ctx, "c1", "node1")
	if err != nil || got.Config != "v2" || got.RestartGeneration != 2 || got.RestartApplied != 1 || got.ConfigApplied != "abc" || got.ConfigError != "bad key" {
		t.Fatalf("allocation: %+v %v", got, err)
	}
	// Cordon: no new allocation on the host; uncordon lifts it.
	if err := s.SetHostState(ctx, "h1", store.HostCordoned); err != nil {
		t.Fatal(err)
	}
	if h, err := s.GetHost(ctx, "db1"); err != nil || h.ID != "h1" || h.State != store.HostCordoned {
		t.Fatalf("host by name: %+v %v", h, err)
	}
	if err := s.Release(ctx, "c3", "node1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Allocate(ctx, []string{"h1"}, store.Allocation{ClusterID: "c4", Node: "node1", Resources: need}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("allocated on a cordoned host: %v", err)
	}
	if err := s.SetHostState(ctx, "h1", store.HostReady); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Allocate(ctx, []string{"h1"}, store.Allocation{ClusterID: "c4", Node: "node1", Resources: need}); err != nil {
		t.Fatalf("after uncordon: %v", err)
	}
	if err := s.SetHostState(ctx, "h9", store.HostCordoned); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cordon of an unknown host: %v", err)
	}
	if _, err := s.GetHost(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown host: %v", err)
	}
}

func testTemplatesAudit(t *testing.T, s *store.Store) {
	ctx := context.Background()
	if _, err := s.CreateNamespace(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTemplate(ctx, store.Template{Namespace: "a", Name: "pg", Body: json.RawMessage(`{"engine":"postgres"}`), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTemplate(ctx, store.Template{Namespace: "a", Name: "pg", Body: json.RawMessage(`{}`)}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate template: %v", err)
	}
	if ts, _ := s.ListTemplates(ctx, "b"); len(ts) != 0 {
		t.Fatalf("other namespace sees templates")
	}
	got, err := s.GetTemplate(ctx, "a", "pg")
	if err != nil || string(got.Body) != `{"engine":"postgres"}` {
		t.Fatalf("get template: %+v %v", got, err)
	}
	for i := range 3 {
		if err := s.Audit(ctx, store.AuditEntry{At: time.Now(), Actor: "t1", Namespace: "a", Action: "POST", Resource: fmt.Sprint(i), Status: 201, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	es, err := s.ListAudit(ctx, "a", 0, 2)
	if err != nil || len(es) != 2 || es[0].Resource != "0" {
		t.Fatalf("audit: %+v %v", es, err)
	}
}

func testBackups(t *testing.T, s *store.Store) {
	ctx := context.Background()
	c, op := newCluster("c1", "a", "billing")
	if err := s.CreateCluster(ctx, c, op); err != nil {
		t.Fatal(err)
	}
	recordNodes(t, s, "c1", "node2")
	// Member events put the node at a high term: backup events (term 0)
	// must still apply.
	if _, err := s.ApplyEvent(ctx, store.Event{ID: "m1", Namespace: "a", Project: "default", Cluster: "billing", Node: "node2", Type: "t",
		Term: 5, Revision: 50, Time: time.Now(), Data: json.RawMessage(`{}`)}, store.Projection{Scope: store.ScopeMember}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	apply := func(id string, kind store.BackupEventKind, b store.Backup) store.ApplyResult {
		t.Helper()
		r, err := s.ApplyEvent(ctx, store.Event{ID: id, Namespace: "a", Project: "default", Cluster: "billing", Node: "node2", Type: "backup",
			Time: time.Now(), Data: json.RawMessage(`{}`)}, store.Projection{Scope: store.ScopeUnordered, Backup: &store.BackupUpdate{Kind: kind, Record: b}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for i, id := range []string{"20260101T000000Z-node2-aaaaaa", "20260102T000000Z-node2-bbbbbb", "20260103T000000Z-node2-cccccc"} {
		if r := apply("s"+id, store.BackupEventStarted, store.Backup{ID: id, Job: "daily", Method: "physical", Repository: "default", RequestID: fmt.Sprint("op-", i), StartedAt: t0}); r != store.Applied {
			t.Fatalf("started %s: %s", id, r)
		}
	}
	done := store.Backup{ID: "20260102T000000Z-node2-bbbbbb", Job: "daily", Method: "physical", Repository: "default", Status: store.BackupSucceeded,
		StartedAt: t0, FinishedAt: t0.Add(time.Second), SizeBytes: 42, Checksum: "sha256:x", StartLSN: "0/2000028", StopLSN: "0/2000100", Timeline: 2, Path: "a/default/billing/base/b/"}
	if r := apply("f1", store.BackupEventFinished, done); r != store.Applied {
		t.Fatal(r)
	}
	if r := apply("f1", store.BackupEventFinished, done); r != store.Duplicate {
		t.Fatal(r)
	}
	// A late started event never moves a finished backup back.
	if r := apply("s-late", store.BackupEventStarted, store.Backup{ID: done.ID, Job: "daily", Method: "physical", Repository: "default", StartedAt: t0}); r != store.Applied {
		t.Fatal(r)
	}
	if r := apply("v1", store.BackupEventVerified, store.Backup{Path: done.Path, VerifiedAt: t0.Add(time.Minute)}); r != store.Applied {
		t.Fatal(r)
	}
	got, err := s.GetBackup(ctx, "c1", done.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.BackupSucceeded || got.SizeBytes != 42 || got.StopLSN != "0/2000100" || got.Timeline != 2 || got.Node != "node2" ||
		got.RequestID != "op-1" || !got.VerifiedAt.Equal(t0.Add(time.Minute)) || !got.FinishedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("backup record: %+v", got)
	}
	page1, err := s.ListBackups(ctx, "c1", store.Page{Limit: 2})
	if err != nil || len(page1) != 2 || page1[0].ID != "20260103T000000Z-node2-cccccc" {
		t.Fatalf("page 1: %v %+v", err, page1)
	}
	page2, err := s.ListBackups(ctx, "c1", store.Page{Limit: 2, After: page1[1].ID})
	if err != nil || len(page2) != 1 || page2[0].ID != "20260101T000000Z-node2-aaaaaa" {
		t.Fatalf("page 2: %v %+v", err, page2)
	}
	if bs, err := s.BackupsByRequest(ctx, "c1", "op-2"); err != nil || len(bs) != 1 || bs[0].Status != store.BackupRunning {
		t.Fatalf("by request: %v %+v", err, bs)
	}
	if err := s.DeleteCluster(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if bs, err := s.ListBackups(ctx, "c1", store.Page{}); err != nil || len(bs) != 0 {
		t.Fatalf("after delete: %v %+v", err, bs)
	}
}

// testPruneEvents: PruneEvents deletes only events before the cut-off, of
// the chosen types (or all but the kept ones), oldest first, at most limit
// per call; the projection is untouched.
func testPruneEvents(t *testing.T, s *store.Store) {
	ctx := context.Background()
	c, op := newCluster("c1", "a", "billing")
	if err := s.CreateCluster(ctx, c, op); err != nil {
		t.Fatal(err)
	}
	recordNodes(t, s, "c1", "node1")
	now := time.Now()
	var evs []store.EventApply
	for i := range 10 {
		typ := "state"
		if i%5 == 0 {
			typ = "primary"
		}
		evs = append(evs, store.EventApply{Event: store.Event{ID: fmt.Sprintf("e%02d", i), Namespace: "a", Project: "default", Cluster: "billing", Node: "node1",
			Type: typ, Term: 1, Revision: int64(i + 1), Time: now.Add(time.Duration(i-10) * time.Hour), Data: json.RawMessage(`{}`)},
			Projection: store.Projection{Scope: store.ScopeUnordered}})
	}
	if _, err := s.ApplyEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	ids := func() []string {
		all, err := s.ListEvents(ctx, store.EventFilter{Namespace: "a", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range all {
			out = append(out, e.ID)
		}
		return out
	}
	// State events older than 4.5 h ago (e00..e05 are older; e00 and e05
	// are "primary"), two per call.
	cut := now.Add(-4*time.Hour - 30*time.Minute)
	if n, err := s.PruneEvents(ctx, cut, []string{"state"}, nil, 2); err != nil || n != 2 {
		t.Fatalf("first chunk: %d %v, want 2", n, err)
	}
	if got := ids(); strings.Join(got, ",") != "e00,e03,e04,e05,e06,e07,e08,e09" {
		t.Fatalf("after one chunk: %v, want the two oldest state events gone", got)
	}
	if n, err := s.PruneEvents(ctx, cut, []string{"state"}, nil, 2); err != nil || n != 2 {
		t.Fatalf("second chunk: %d %v, want 2", n, err)
	}
	if n, err := s.PruneEvents(ctx, cut, []string{"state"}, nil, 2); err != nil || n != 0 {
		t.Fatalf("third chunk: %d %v, want 0 (nothing old left)", n, err)
	}
	// Everything but state events older than 7 h ago: e00 only.
	if n, err := s.PruneEvents(ctx, now.Add(-7*time.Hour), nil, []string{"state"}, 100); err != nil || n != 1 {
		t.Fatalf("other types: %d %v, want 1", n, err)
	}
	if got := ids(); strings.Join(got, ",") != "e05,e06,e07,e08,e09" {
		t.Fatalf("after pruning: %v", got)
	}
	if cl, err := s.GetCluster(ctx, "c1"); err != nil || cl.Name != "billing" {
		t.Fatalf("cluster after pruning: %+v %v", cl, err)
	}
}
