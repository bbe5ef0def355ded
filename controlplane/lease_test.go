package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/controlplane/pgtest"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/internal/embedetcd"
	"github.com/dbpilot/dbpilot/internal/testutil"
)

// slowProvider is a provider whose Delete takes hold (or until its context
// is cancelled: then it fails with a plain error, as a provider whose wait
// was interrupted does). It records every call and how many ran at once.
type slowProvider struct {
	hold time.Duration

	mu               sync.Mutex
	calls, completed int
	inflight, most   int
	interrupted      int
	started          []time.Time
}

func (p *slowProvider) Name() string { return "slow" }

func (p *slowProvider) Create(context.Context, infra.NodeSpec, json.RawMessage) (json.RawMessage, error) {
	return json.RawMessage(`{}`), nil
}

func (p *slowProvider) Delete(ctx context.Context, _ infra.NodeSpec, _ json.RawMessage) error {
	p.mu.Lock()
	p.calls++
	p.inflight++
	p.most = max(p.most, p.inflight)
	p.started = append(p.started, time.Now())
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inflight--
		p.mu.Unlock()
	}()
	select {
	case <-time.After(p.hold):
		p.mu.Lock()
		p.completed++
		p.mu.Unlock()
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		p.interrupted++
		p.mu.Unlock()
		return errors.New("delete interrupted")
	}
}

func (p *slowProvider) Restart(context.Context, infra.NodeSpec, json.RawMessage) (json.RawMessage, error) {
	return json.RawMessage(`{}`), nil
}

func (p *slowProvider) Status(context.Context, json.RawMessage) (infra.Status, error) {
	return infra.Status{Running: true}, nil
}

func (p *slowProvider) DeleteCluster(context.Context, string) error { return nil }

type slowStats struct{ calls, completed, most, interrupted int }

func (p *slowProvider) stats() slowStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slowStats{p.calls, p.completed, p.most, p.interrupted}
}

func (p *slowProvider) startedAt(i int) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started[i]
}

// TestOperationLease runs two engines (two server replicas) on one store,
// SQLite file and PostgreSQL, with a 0.8 s lease, on delete operations
// whose provider call takes three leases:
//
//   - both alive: the engine that claimed the operation keeps it through
//     the long step (its lease keeper renews it); the other never takes it
//     over, and the provider's Delete runs exactly once;
//   - the owner's context is cancelled without any cleanup (a crash): the
//     other engine takes the operation over once the lease it last renewed
//     ran out, not before, and finishes it;
//   - the claim is taken from a running workflow (as another replica does
//     once a lease ran out): the workflow's step is cancelled at its next
//     renewal and it writes nothing more: no Failed phase, no deleted
//     cluster, no operation state.
func TestOperationLease(t *testing.T) {
	dir := t.TempDir()
	etcdSrv, etcdURL, err := embedetcd.Start(filepath.Join(dir, "etcd"), "lease-test", 0, zap.NewNop(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer etcdSrv.Close()
	cli, err := admin.Dial(dcs.Options{Endpoints: []string{etcdURL}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	pg := pgtest.Start(t)
	for name, dsn := range map[string]string{"sqlite": filepath.Join(dir, "shared.db"), "postgres": pg} {
		t.Run(name, func(t *testing.T) { testOperationLease(t, dsn, cli) })
	}
}

func testOperationLease(t *testing.T, dsn string, cli *admin.Admin) {
	const lease = 800 * time.Millisecond
	ctx := context.Background()
	open := func() *store.Store {
		st, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	stA, stB := open(), open() // one store, two replicas' connections
	prov := &slowProvider{hold: 3 * lease}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	engine := func(st *store.Store, instance string) (*Engine, context.CancelFunc) {
		e := NewEngine(EngineConfig{Instance: instance, Lease: lease, ReadyTimeout: 10 * time.Second},
			st, cli, map[string]infra.Provider{"slow": prov}, log)
		ectx, cancel := context.WithCancel(ctx)
		e.Start(ectx)
		t.Cleanup(func() { cancel(); e.Wait() })
		return e, cancel
	}
	deleteOp := func(id string) string {
		t.Helper()
		now := time.Now()
		c := store.Cluster{ID: id, Namespace: "ns", Project: "p", Name: id, Engine: "postgres", Version: "15", Template: "postgres-15",
			Plan: "small", Provider: "slow", Replicas: 1, SynchronousMode: "off", Phase: store.PhaseReady, CreatedAt: now, UpdatedAt: now}
		if err := stA.CreateCluster(ctx, c, store.Operation{ID: "create-" + id, Namespace: "ns", ClusterID: id, Kind: KindCreate,
			State: store.OpSucceeded, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if err := stA.UpsertNode(ctx, store.Node{ClusterID: id, Name: "node1", Host: "127.0.0.1", State: "created", Handle: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
		op := store.Operation{ID: "op-del-" + id, Namespace: "ns", ClusterID: id, Kind: KindDelete, State: store.OpPending, CreatedAt: now, UpdatedAt: now}
		if err := stA.CreateOperation(ctx, op, store.PhaseDeleting); err != nil {
			t.Fatal(err)
		}
		return op.ID
	}
	getOp := func(id string) store.Operation {
		t.Helper()
		op, err := stA.GetOperation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	waitFor := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		testutil.Eventually(t, d, 10*time.Millisecond, what, cond)
	}
	calls := func(n int) func() bool { return func() bool { return prov.stats().calls >= n } }

	// 1. Both engines alive: the owner keeps the operation through a step
	// three leases long; the other engine sweeps every half lease and
	// never takes it.
	a, stopA := engine(stA, "replica-a")
	op1 := deleteOp("c1")
	a.Kick(op1)
	waitFor("replica-a in the delete step", 5*time.Second, calls(1))
	b, stopB := engine(stB, "replica-b")
	waitFor("the delete to succeed", 15*time.Second, func() bool {
		op := getOp(op1)
		if op.Owner != "replica-a" {
			t.Fatalf("operation taken over while its owner is alive: %+v", op)
		}
		return op.State != store.OpRunning && op.State != store.OpPending
	})
	if op := getOp(op1); op.State != store.OpSucceeded {
		t.Fatalf("operation %s, error %q; want succeeded", op.State, op.Error)
	}
	if s := prov.stats(); s.calls != 1 || s.completed != 1 || s.most != 1 {
		t.Fatalf("provider Delete: %+v, want exactly one call", s)
	}
	if _, err := stA.GetCluster(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cluster after delete: %v", err)
	}
	if a.Stats().Runs != 1 || b.Stats().Runs != 0 {
		t.Fatalf("runs: replica-a %d, replica-b %d; want 1 and 0", a.Stats().Runs, b.Stats().Runs)
	}
	stopB()
	b.Wait()

	// 2. The owner stops abruptly mid-step (its context is cancelled, it
	// releases nothing): the other engine takes over after the lease, from
	// the saved step, and finishes the operation.
	op2 := deleteOp("c2")
	a.Kick(op2)
	waitFor("replica-a in the delete step", 5*time.Second, calls(2))
	time.Sleep(lease) // at least one renewal
	b, stopB = engine(stB, "replica-b")
	defer stopB()
	stopA()
	a.Wait()
	held := getOp(op2)
	if held.Owner != "replica-a" || held.State != store.OpRunning || held.Step != "nodes" {
		t.Fatalf("after replica-a stopped: %+v", held)
	}
	if time.Until(held.LeaseUntil) < lease/3 {
		t.Fatalf("lease until %s: replica-a did not renew it during the step", held.LeaseUntil)
	}
	waitFor("replica-b to take over", 10*time.Second, calls(3))
	if took := prov.startedAt(2); took.Before(held.LeaseUntil) {
		t.Fatalf("replica-b started the step at %s, before replica-a's lease ran out at %s", took.Format(time.RFC3339Nano), held.LeaseUntil.Format(time.RFC3339Nano))
	}
	waitFor("the delete to succeed", 15*time.Second, func() bool { return getOp(op2).State == store.OpSucceeded })
	if op := getOp(op2); op.Owner != "replica-b" {
		t.Fatalf("finished by %q, want replica-b", op.Owner)
	}
	if s := prov.stats(); s.calls != 3 || s.completed != 2 || s.interrupted != 1 || s.most != 1 {
		t.Fatalf("provider Delete: %+v, want 3 calls (replica-a's second one interrupted), never two at once", s)
	}
	if b.Stats().Runs != 1 {
		t.Fatalf("replica-b runs %d, want 1", b.Stats().Runs)
	}

	// 3. Another replica claims the operation while replica-b runs it: the
	// step is cancelled at replica-b's next renewal, and replica-b writes
	// nothing more.
	op3 := deleteOp("c3")
	b.Kick(op3)
	waitFor("replica-b in the delete step", 5*time.Second, calls(4))
	// What ClaimOperation does for replica-z once a lease ran out.
	if _, err := stA.DB().ExecContext(ctx, rebind(stA, `UPDATE operations SET owner = 'replica-z', lease_until = ? WHERE id = ?`),
		time.Now().Add(time.Hour).UnixMilli(), op3); err != nil {
		t.Fatal(err)
	}
	stolen := time.Now()
	waitFor("replica-b's step to be cancelled", 5*time.Second, func() bool { return prov.stats().interrupted == 2 })
	if d := time.Since(stolen); d > lease {
		t.Fatalf("step cancelled %s after the claim was lost, want within a renewal (%s)", d, lease/3)
	}
	time.Sleep(lease) // room for any write replica-b would wrongly make
	op := getOp(op3)
	if op.Owner != "replica-z" || op.State != store.OpRunning || op.Error != "" || op.Step != "nodes" {
		t.Fatalf("operation after replica-b lost it: %+v", op)
	}
	c, err := stA.GetCluster(ctx, "c3")
	if err != nil || c.Phase != store.PhaseDeleting || c.Reason != "" {
		t.Fatalf("cluster after replica-b lost its operation: %+v %v", c, err)
	}
	if nodes, err := stA.ListNodes(ctx, "c3"); err != nil || len(nodes) != 1 {
		t.Fatalf("nodes after replica-b lost its operation: %+v %v", nodes, err)
	}
	if s := prov.stats(); s.calls != 4 || s.completed != 2 {
		t.Fatalf("provider Delete: %+v, want no further call", s)
	}
}

// rebind rewrites ? placeholders for st's dialect.
func rebind(st *store.Store, q string) string {
	if st.Dialect() != store.Postgres {
		return q
	}
	for n := 1; strings.Contains(q, "?"); n++ {
		q = strings.Replace(q, "?", "$"+strconv.Itoa(n), 1)
	}
	return q
}
