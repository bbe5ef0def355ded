package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
)

// TypeNodeRepair is the event the control plane records about a node
// repair (data: NodeRepair): once when the repair reconciler starts a
// repair operation, once when the operation ends. It is stored with the
// agents' events (events API, SSE), not published on a topic.
const TypeNodeRepair = "io.dbpilot.controlplane.node_repair.v1"

// Repair states in NodeRepair.State.
const (
	RepairStarted   = "started"
	RepairSucceeded = "succeeded"
	RepairFailed    = "failed"
)

// NodeRepair is the payload of TypeNodeRepair.
type NodeRepair struct {
	Namespace string `json:"namespace"`
	Project   string `json:"project"`
	Cluster   string `json:"cluster"`
	Node      string `json:"node"`
	// TimestampMS is when it happened, milliseconds since the Unix epoch.
	TimestampMS int64  `json:"timestamp_ms"`
	OperationID string `json:"operation_id"`
	// State is started, succeeded or failed.
	State string `json:"state"`
	// Reason says why the node is repaired: "node X not running (provider
	// status: …)".
	Reason string `json:"reason"`
	// Attempt numbers the repair among the cluster's consecutive failed
	// repairs (1: the first since the last success).
	Attempt int `json:"attempt"`
	// Error is why a failed repair failed.
	Error string `json:"error,omitempty"`
	// DurationMS is the operation's duration in milliseconds (finished
	// states only).
	DurationMS int64 `json:"duration_ms,omitempty"`
}

// RepairConfig configures the repair reconciler.
type RepairConfig struct {
	// Interval between two checks of the nodes of every Ready or Degraded
	// cluster; 0 disables the reconciler.
	Interval time.Duration
	// BackoffMax caps the wait before the next repair of a cluster whose
	// repairs keep failing (default 1 h). The wait doubles from Interval
	// with every consecutive failed repair.
	BackoffMax time.Duration
	// Instance names this server replica (event source, audit actor).
	Instance string
	// Record stores the node_repair events (Projection.Record); nil: none.
	Record func(ctx context.Context, ev store.Event) error
}

// Repairer is the repair reconciler: every Interval it asks each node's
// provider whether the node's agent runs (infra.Provider.Status), for the
// nodes the provider created in clusters that are Ready or Degraded and
// have no operation pending or running. Nodes reported not running get one
// `repair` operation per cluster (KindRepair: restart through the
// provider, keeping the data; the agent rejoins by its own rules), started
// the way the API starts operations: persisted, audited, published as
// TypeOperationRequested for the workflow engine. A provider that cannot
// tell (Status.Unknown, the fleet) is left alone. A cluster whose repairs
// keep failing is retried after a doubling wait (capped at BackoffMax)
// counted from its last failed repair.
type Repairer struct {
	cfg       RepairConfig
	st        *store.Store
	providers map[string]infra.Provider
	bus       Bus
	log       *zap.Logger
	wg        sync.WaitGroup
}

// NewRepairer returns a reconciler over st that starts operations through
// bus; call Start to run it.
func NewRepairer(cfg RepairConfig, st *store.Store, providers map[string]infra.Provider, bus Bus, log *zap.Logger) *Repairer {
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = time.Hour
	}
	return &Repairer{cfg: cfg, st: st, providers: providers, bus: bus, log: log.Named("repair")}
}

// Start checks every Interval until ctx ends (nothing when Interval is 0).
// Wait waits for the loop to return.
func (r *Repairer) Start(ctx context.Context) {
	if r.cfg.Interval <= 0 {
		r.log.Info("repair reconciler disabled (repair_interval 0)")
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(r.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			r.Check(ctx)
		}
	}()
}

// Wait blocks until the loop returned.
func (r *Repairer) Wait() { r.wg.Wait() }

// Check runs one pass over every cluster (Start calls it each Interval).
func (r *Repairer) Check(ctx context.Context) {
	unfinished, err := r.st.UnfinishedOperations(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("list unfinished operations", zap.Error(err))
		}
		return
	}
	busy := map[string]bool{}
	for _, op := range unfinished {
		busy[op.ClusterID] = true
	}
	const page = 1000
	for after := ""; ; {
		cs, err := r.st.ListClusters(ctx, "", store.Page{After: after, Limit: page})
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("list clusters", zap.Error(err))
			}
			return
		}
		for _, c := range cs {
			if ctx.Err() != nil {
				return
			}
			if busy[c.ID] || (c.Phase != store.PhaseReady && c.Phase != store.PhaseDegraded) {
				continue
			}
			if err := r.checkCluster(ctx, c); err != nil && ctx.Err() == nil {
				r.log.Warn("repair check", zap.String("cluster", c.ID), zap.Error(err))
			}
		}
		if len(cs) < page {
			return
		}
		after = cs[len(cs)-1].ID
	}
}

// checkCluster asks the provider about each node of c and starts a repair
// of those not running, unless c's repairs are backing off.
func (r *Repairer) checkCluster(ctx context.Context, c store.Cluster) error {
	p, ok := r.providers[c.Provider]
	if !ok {
		return nil
	}
	nodes, err := r.st.ListNodes(ctx, c.ID)
	if err != nil {
		return err
	}
	var dead, reasons []string
	for _, n := range nodes {
		// Only nodes the provider created ("external" rows are members the
		// projection learned from events).
		if n.State != "created" {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := p.Status(sctx, n.Handle)
		cancel()
		if err != nil {
			r.log.Warn("node status", zap.String("cluster", c.ID), zap.String("node", n.Name), zap.Error(err))
			continue
		}
		if st.Unknown || st.Running {
			continue
		}
		dead = append(dead, n.Name)
		reasons = append(reasons, fmt.Sprintf("node %s not running (provider status: %s)", n.Name, st.Detail))
	}
	if len(dead) == 0 {
		return nil
	}
	reason := strings.Join(reasons, "; ")
	attempt, wait, err := r.backoff(ctx, c.ID)
	if err != nil {
		return err
	}
	if wait > 0 {
		r.log.Info("repair backing off after failed repairs", zap.String("cluster", c.ID), zap.Strings("nodes", dead),
			zap.Int("failed_repairs", attempt-1), zap.Duration("next_in", wait))
		return nil
	}
	return r.startRepair(ctx, c, dead, reason, attempt)
}

// backoff returns the number of the next repair of cluster id (1 + its
// consecutive failed repairs) and how long to wait before it may start.
func (r *Repairer) backoff(ctx context.Context, id string) (attempt int, wait time.Duration, err error) {
	ops, err := r.st.LatestOperations(ctx, id, KindRepair, 64)
	if err != nil {
		return 0, 0, err
	}
	failed := 0
	for _, op := range ops {
		if op.State != store.OpFailed {
			break
		}
		failed++
	}
	if failed == 0 {
		return 1, 0, nil
	}
	return failed + 1, time.Until(ops[0].UpdatedAt.Add(RepairDelay(failed, r.cfg.Interval, r.cfg.BackoffMax))), nil
}

// RepairDelay is how long after the last of failed consecutive failed
// repairs the next one may start: base, 2×base, 4×base, … capped at
// maxDelay (0 when failed is 0).
func RepairDelay(failed int, base, maxDelay time.Duration) time.Duration {
	if failed <= 0 {
		return 0
	}
	b := &backoff.ExponentialBackOff{InitialInterval: base, RandomizationFactor: 0, Multiplier: 2, MaxInterval: maxDelay,
		MaxElapsedTime: 0, Stop: backoff.Stop, Clock: backoff.SystemClock}
	b.Reset()
	var d time.Duration
	for range failed {
		d = b.NextBackOff()
	}
	return d
}

// startRepair persists a repair operation (refused if another operation
// of c started meanwhile), marks c Degraded with the reason, audits it,
// records the started events and publishes the request.
func (r *Repairer) startRepair(ctx context.Context, c store.Cluster, nodes []string, reason string, attempt int) error {
	params, _ := json.Marshal(OpParams{Nodes: nodes, Reason: reason, Attempt: attempt})
	now := time.Now().UTC()
	op := store.Operation{ID: newID("op"), Namespace: c.Namespace, ClusterID: c.ID, Kind: KindRepair, State: store.OpPending,
		Params: params, CreatedAt: now, UpdatedAt: now}
	if err := r.st.CreateOperation(ctx, op, ""); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil // an operation started since the check; look again next time
		}
		return err
	}
	log := r.log.With(zap.String("operation", op.ID), zap.String("cluster", c.ID), zap.Strings("nodes", nodes))
	log.Warn("starting repair", zap.String("reason", reason), zap.Int("attempt", attempt))
	if err := r.st.SetClusterPhase(ctx, c.ID, store.PhaseDegraded, reason, 0); err != nil {
		log.Warn("set cluster degraded", zap.Error(err))
	}
	if err := r.st.Audit(ctx, store.AuditEntry{At: now, Actor: "dbpilot-server/" + r.cfg.Instance + " (repair)", Namespace: c.Namespace,
		Action: KindRepair, Resource: "/v1/namespaces/" + c.Namespace + "/clusters/" + c.Name,
		Status: 202, Result: "operation " + op.ID + ": " + reason}); err != nil {
		log.Error("audit record lost", zap.Error(err))
	}
	for _, n := range nodes {
		recordRepair(ctx, r.cfg.Record, log, c, n, NodeRepair{OperationID: op.ID, State: RepairStarted, Reason: reason, Attempt: attempt})
	}
	ev, err := NewOperationRequested(r.cfg.Instance, OperationRequested{OperationID: op.ID, Kind: op.Kind, Namespace: op.Namespace, ClusterID: op.ClusterID})
	if err == nil {
		err = r.bus.Publish(ctx, TopicControlPlane, ev)
	}
	if err != nil {
		// The operation is persisted: the engine's sweep runs it anyway.
		log.Warn("publish repair request; the sweep will pick it up", zap.Error(err))
	}
	return nil
}

// recordRepair stores one node_repair event (errors are logged: the
// operation and the audit log are the record that matters).
func recordRepair(ctx context.Context, record func(context.Context, store.Event) error, log *zap.Logger, c store.Cluster, node string, d NodeRepair) {
	if record == nil {
		return
	}
	now := time.Now().UTC()
	d.Namespace, d.Project, d.Cluster, d.Node, d.TimestampMS = c.Namespace, c.Project, c.Name, node, now.UnixMilli()
	data, _ := json.Marshal(d)
	ev := store.Event{ID: newID("ev"), Namespace: c.Namespace, Project: c.Project, Cluster: c.Name, Node: node, Type: TypeNodeRepair,
		Time: now, Data: data}
	if err := record(ctx, ev); err != nil {
		log.Warn("record node_repair event", zap.String("node", node), zap.Error(err))
	}
}

var repairSteps = []string{"", "restart", "ready"}

// repair restarts each of the operation's nodes that its provider still
// reports not running (Restart keeps the data directory: the agent rejoins
// as a replica, rewinding or re-cloning a former primary), then waits
// until every repaired node is a ready member again, as written by its new
// agent. The cluster goes back to Ready when all its nodes are.
func (x *clusterCtx) repair(ctx context.Context) error {
	if err := x.w.step(ctx, "restart", repairSteps, func(ctx context.Context) error {
		have, err := x.nodes(ctx)
		if err != nil {
			return err
		}
		if x.w.params.SinceRevision == 0 {
			rev, err := x.w.e.etcd.Revision(ctx, x.keys)
			if err != nil {
				return err
			}
			x.w.params.SinceRevision = rev
			if err := x.w.save(ctx); err != nil {
				return backoff.Permanent(err)
			}
		}
		for _, n := range x.w.params.Nodes {
			if idx(x.w.params.Done, n) >= 0 {
				continue
			}
			row, ok := have[n]
			if !ok {
				x.w.log.Info("node removed since the repair was planned", zap.String("node", n))
			} else {
				st, err := x.p.Status(ctx, row.Handle)
				switch {
				case err != nil:
					return err
				case st.Unknown:
					return backoff.Permanent(fmt.Errorf("node %s: the %s provider cannot tell whether it runs (%s)", n, x.p.Name(), st.Detail))
				case st.Running:
					x.w.log.Info("node running again; not restarting it", zap.String("node", n), zap.String("status", st.Detail))
				default:
					h, err := x.p.Restart(ctx, x.spec(n), row.Handle)
					if err != nil {
						return err
					}
					if err := x.w.e.st.UpsertNode(ctx, store.Node{ClusterID: x.c.ID, Name: n, Host: row.Host, State: "created", Handle: h}); err != nil {
						return err
					}
					x.w.log.Info("node restarted", zap.String("node", n))
				}
			}
			x.w.params.Done = append(x.w.params.Done, n)
			x.w.params.Progress = fmt.Sprintf("%d of %d nodes restarted", len(x.w.params.Done), len(x.w.params.Nodes))
			if err := x.w.save(ctx); err != nil {
				return backoff.Permanent(err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	return x.w.step(ctx, "ready", repairSteps, func(ctx context.Context) error {
		have, err := x.nodes(ctx)
		if err != nil {
			return err
		}
		var want, all []string
		for n := range have {
			all = append(all, n)
			if idx(x.w.params.Nodes, n) >= 0 {
				want = append(want, n)
			}
		}
		sort.Strings(want)
		if err := x.waitReadySince(ctx, want, x.w.params.SinceRevision); err != nil {
			return err
		}
		if live, err := readLive(ctx, x.w.e.etcd, x.keys); err == nil && live.readyProblem(all) == "" {
			if err := x.w.setPhase(ctx, store.PhaseReady, "", 0); err != nil {
				return err
			}
		}
		return nil
	})
}

// repairFinished records the outcome of a repair operation, once the
// workflow saved it (on failure, fail has set the reason on the still
// Degraded cluster in the same transaction): a node_repair event per node.
func (w *workflow) repairFinished(ctx context.Context, failure error) {
	c, err := w.e.st.GetCluster(ctx, w.op.ClusterID)
	if err != nil {
		w.log.Warn("repair finished: load cluster", zap.Error(err))
		return
	}
	d := NodeRepair{OperationID: w.op.ID, State: RepairSucceeded, Reason: w.params.Reason, Attempt: w.params.Attempt,
		DurationMS: time.Since(w.op.CreatedAt).Milliseconds()}
	if failure != nil {
		d.State, d.Error = RepairFailed, failure.Error()
	}
	for _, n := range w.params.Nodes {
		recordRepair(ctx, w.e.cfg.Record, w.log, c, n, d)
	}
}
