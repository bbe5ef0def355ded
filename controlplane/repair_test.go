package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/infra/fleet"
	"github.com/dbpilot/dbpilot/internal/embedetcd"
	"github.com/dbpilot/dbpilot/internal/testutil"
)

func TestRepairDelay(t *testing.T) {
	base, capAt := 30*time.Second, 5*time.Minute
	for _, tc := range []struct {
		failed int
		want   time.Duration
	}{{0, 0}, {1, 30 * time.Second}, {2, time.Minute}, {3, 2 * time.Minute}, {4, 4 * time.Minute}, {5, 5 * time.Minute}, {40, 5 * time.Minute}} {
		if got := RepairDelay(tc.failed, base, capAt); got != tc.want {
			t.Errorf("RepairDelay(%d) = %s, want %s", tc.failed, got, tc.want)
		}
	}
}

// TestRepairerDecisions drives the reconciler with the real store, the
// real process provider (its "agent" is a shell loop that never joins a
// cluster), the real engine over an embedded etcd, and the embedded bus: a
// killed node gets exactly one repair operation (audited, with events, the
// cluster Degraded), which restarts it; its ready step fails (the stand-in
// agent never reports), and the next repair waits for the backoff.
// Provisioning clusters, fleet nodes (Status Unknown), nodes the provider
// did not create and nodes whose folder is not on this machine are left
// alone.
func TestRepairerDecisions(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	st, err := store.Open(ctx, filepath.Join(dir, "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Audit entries bind to the namespace's id: it must exist.
	if _, err := st.CreateNamespace(ctx, "ns"); err != nil {
		t.Fatal(err)
	}
	etcdSrv, etcdURL, err := embedetcd.Start(filepath.Join(dir, "etcd"), "repair-test", 0, zap.NewNop(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer etcdSrv.Close()
	cli, err := admin.Dial(dcs.Options{Endpoints: []string{etcdURL}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	// The stand-in agent keeps its --config argument in its command line,
	// which is what the process provider checks.
	agent := filepath.Join(dir, "fake-agent")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\nwhile :; do sleep 1; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	proc, err := infra.NewProcess(filepath.Join(dir, "nodes"), agent, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range infra.ProcessesUsing(dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	providers := map[string]infra.Provider{"process": proc, "fleet": fleet.New(st, log)}

	now := time.Now()
	cluster := func(id, name, provider, phase string) store.Cluster {
		c := store.Cluster{ID: id, Namespace: "ns", Project: "p", Name: name, Template: "postgres-15", Plan: "small", Provider: provider,
			Replicas: 3, Phase: phase, CreatedAt: now, UpdatedAt: now}
		if err := st.CreateCluster(ctx, c, store.Operation{ID: "create-" + id, Namespace: "ns", ClusterID: id, Kind: KindCreate,
			State: store.OpSucceeded, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	node := func(c store.Cluster, name string) infra.ProcessHandle {
		h, err := proc.Create(ctx, infra.NodeSpec{ClusterID: c.ID, Namespace: c.Namespace, Project: c.Project, Cluster: c.Name, Node: name}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.UpsertNode(ctx, store.Node{ClusterID: c.ID, Name: name, Host: "127.0.0.1", State: "created", Handle: h}); err != nil {
			t.Fatal(err)
		}
		var ph infra.ProcessHandle
		_ = json.Unmarshal(h, &ph)
		return ph
	}
	kill := func(h infra.ProcessHandle) {
		_ = syscall.Kill(-h.PID, syscall.SIGKILL)
		testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, fmt.Sprintf("pid %d to stop after SIGKILL", h.PID), func() bool {
			s, _ := proc.Status(ctx, mustHandle(h))
			return !s.Running
		})
	}

	ready := cluster("c1", "db", "process", store.PhaseReady)
	n1 := node(ready, "node1")
	node(ready, "node2")
	// A member learned from events only, and a node another machine runs.
	if err := st.UpsertNode(ctx, store.Node{ClusterID: ready.ID, Name: "node3", State: "external"}); err != nil {
		t.Fatal(err)
	}
	if err := st.UpsertNode(ctx, store.Node{ClusterID: ready.ID, Name: "node4", State: "created",
		Handle: json.RawMessage(`{"dir":"/elsewhere/node4","config":"/elsewhere/node4/agent.yaml","pid":1}`)}); err != nil {
		t.Fatal(err)
	}
	provisioning := cluster("c2", "db2", "process", store.PhaseProvisioning)
	kill(node(provisioning, "node1"))
	fleet := cluster("c3", "db3", "fleet", store.PhaseReady)
	if err := st.UpsertNode(ctx, store.Node{ClusterID: fleet.ID, Name: "node1", State: "created", Handle: json.RawMessage(`{"host_id":"h-gone","host_name":"gone"}`)}); err != nil {
		t.Fatal(err)
	}

	proj := NewProjection(st, log)
	eng := NewEngine(EngineConfig{Instance: "test", ReadyTimeout: time.Second, StepAttempts: 1, Record: proj.Record}, st, cli, providers, log)
	bus := NewEmbeddedBus()
	bus.Subscribe(TopicControlPlane, eng.Handle)
	eng.Start(ctx)
	defer eng.Wait()
	defer cancel()
	const interval = 1500 * time.Millisecond
	r := NewRepairer(RepairConfig{Interval: interval, Instance: "test", Record: proj.Record}, st, providers, bus, log)

	repairs := func(clusterID string) []store.Operation {
		t.Helper()
		ops, err := st.LatestOperations(ctx, clusterID, KindRepair, 100)
		if err != nil {
			t.Fatal(err)
		}
		return ops
	}
	waitDone := func(id string) store.Operation {
		t.Helper()
		var op store.Operation
		testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "operation "+id+" to finish", func() error {
			var err error
			if op, err = st.GetOperation(ctx, id); err != nil {
				t.Fatal(err)
			}
			if op.State == store.OpSucceeded || op.State == store.OpFailed {
				return nil
			}
			return fmt.Errorf("%+v", op)
		})
		return op
	}

	// Everything that can be checked runs: nothing to do.
	r.Check(ctx)
	for _, c := range []string{"c1", "c2", "c3"} {
		if ops := repairs(c); len(ops) != 0 {
			t.Fatalf("cluster %s: repairs with every node running: %+v", c, ops)
		}
	}

	// node1 of c1 is killed: one repair, whatever the number of checks.
	kill(n1)
	r.Check(ctx)
	r.Check(ctx)
	ops := repairs("c1")
	if len(ops) != 1 {
		t.Fatalf("repairs after one kill: %+v", ops)
	}
	var p OpParams
	_ = json.Unmarshal(ops[0].Params, &p)
	wantReason := fmt.Sprintf("node node1 not running (provider status: agent pid %d not running)", n1.PID)
	if p.Reason != wantReason || strings.Join(p.Nodes, ",") != "node1" || p.Attempt != 1 {
		t.Fatalf("repair params %+v, want reason %q for node1, attempt 1", p, wantReason)
	}
	if c, _ := st.GetCluster(ctx, "c1"); c.Phase != store.PhaseDegraded {
		t.Errorf("cluster c1 during the repair: %s %q, want Degraded", c.Phase, c.Reason)
	}
	for _, c := range []string{"c2", "c3"} {
		if ops := repairs(c); len(ops) != 0 {
			t.Errorf("cluster %s repaired: %+v", c, ops)
		}
	}
	audit, _ := st.ListAudit(ctx, "ns", 0, 100)
	if len(audit) != 1 || audit[0].Action != KindRepair || !strings.Contains(audit[0].Result, ops[0].ID+": "+wantReason) {
		t.Errorf("audit: %+v", audit)
	}

	// The stand-in agent is restarted, but never reports ready: the
	// operation fails and the cluster says why.
	done := waitDone(ops[0].ID)
	if done.State != store.OpFailed || !strings.Contains(done.Error, "step ready") {
		t.Fatalf("first repair: %+v, want failed in step ready", done)
	}
	nodes, _ := st.ListNodes(ctx, "c1")
	var restarted infra.ProcessHandle
	for _, n := range nodes {
		if n.Name == "node1" {
			_ = json.Unmarshal(n.Handle, &restarted)
		}
	}
	if s, _ := proc.Status(ctx, mustHandle(restarted)); !s.Running || restarted.PID == n1.PID {
		t.Fatalf("node1 after the repair: %+v (pid %d, was %d)", s, restarted.PID, n1.PID)
	}
	if c, _ := st.GetCluster(ctx, "c1"); c.Phase != store.PhaseDegraded || !strings.Contains(c.Reason, "repair "+ops[0].ID+" failed") {
		t.Errorf("cluster c1 after the failed repair: %s %q", c.Phase, c.Reason)
	}
	// The outcome's event is recorded just after the operation is saved
	// as failed (repairFinished follows finish): wait for it.
	var evs []store.Event
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		evs, _ = st.ListEvents(ctx, store.EventFilter{Namespace: "ns", Cluster: "db", Type: TypeNodeRepair})
		if len(evs) >= 2 || time.Now().After(deadline) {
			break
		}
	}
	var states []string
	for _, e := range evs {
		var d NodeRepair
		_ = json.Unmarshal(e.Data, &d)
		if e.Node != "node1" || d.OperationID != ops[0].ID || d.Reason != wantReason {
			t.Errorf("node_repair event %+v: %+v", e, d)
		}
		states = append(states, d.State)
	}
	if strings.Join(states, ",") != "started,failed" {
		t.Errorf("node_repair events: %v, want started,failed", states)
	}

	// Killed again right away: the next repair waits for the backoff.
	kill(restarted)
	r.Check(ctx)
	if ops := repairs("c1"); len(ops) != 1 {
		t.Fatalf("a repair started within the backoff: %+v", ops)
	}
	time.Sleep(time.Until(done.UpdatedAt.Add(RepairDelay(1, interval, time.Hour))) + 100*time.Millisecond)
	r.Check(ctx)
	ops = repairs("c1")
	if len(ops) != 2 {
		t.Fatalf("no repair after the backoff: %+v", ops)
	}
	_ = json.Unmarshal(ops[0].Params, &p)
	if p.Attempt != 2 {
		t.Errorf("second repair: attempt %d, want 2", p.Attempt)
	}
	waitDone(ops[0].ID)
}

func mustHandle(h infra.ProcessHandle) json.RawMessage {
	b, _ := json.Marshal(h)
	return b
}
