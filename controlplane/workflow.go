package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/catalog"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/proto"
	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// Operation kinds.
const (
	KindCreate     = "create"
	KindDelete     = "delete"
	KindScale      = "scale"
	KindSwitchover = "switchover"
	KindFailover   = "failover"
	KindRestart    = "restart"
	// KindBackup runs a backup now (an on-demand request to the agents).
	KindBackup = "backup"
	// KindRestore creates a cluster from another cluster's backup.
	KindRestore = "restore"
	// KindUpdate changes a setting of a live cluster (PATCH …/clusters/{c}):
	// today synchronous_mode, through the spec key.
	KindUpdate = "update"
	// KindRepair restarts nodes whose provider reports them not running
	// (started by the repair reconciler, never by the API).
	KindRepair = "repair"
)

// OpParams are an operation's request parameters and workflow memory.
type OpParams struct {
	Replicas int    `json:"replicas,omitempty"`
	From     string `json:"from,omitempty"`
	To       string `json:"to,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Children are the operations a host-level operation (drain) started.
	Children []string `json:"children,omitempty"`
	// Done lists the nodes a multi-node step already handled.
	Done []string `json:"done,omitempty"`
	// Progress is a human sentence for the API (e.g. "2 of 3 nodes ready").
	Progress string `json:"progress,omitempty"`
	// Job is the backup job a backup operation runs ("": the first
	// physical job).
	Job string `json:"job,omitempty"`
	// BackupID is the backup a backup operation took (its result).
	BackupID string `json:"backup_id,omitempty"`
	// Restore is the source of a restore operation.
	Restore *infra.RestoreSource `json:"restore,omitempty"`
	// SynchronousMode is what an update operation sets ("on" | "off").
	SynchronousMode string `json:"synchronous_mode,omitempty"`
	// Nodes are the nodes a repair operation restarts.
	Nodes []string `json:"nodes,omitempty"`
	// Attempt numbers a repair among the cluster's consecutive failed
	// repairs (1: the first since the last success).
	Attempt int `json:"attempt,omitempty"`
	// SinceRevision is the etcd revision read before a repair restarted
	// its nodes: only member keys written after it prove them back.
	SinceRevision int64 `json:"since_revision,omitempty"`
}

// EngineConfig configures the workflow engine.
type EngineConfig struct {
	// Instance names this server replica (operation owner).
	Instance string
	// Lease is how long a claimed operation stays ours without renewal.
	Lease time.Duration
	// ReadyTimeout bounds waiting for a cluster to become ready, and for
	// an agent to take an on-demand backup request.
	ReadyTimeout time.Duration
	// BackupTimeout bounds a backup once an agent runs it; default 12h.
	BackupTimeout time.Duration
	// StepAttempts is how often a failing step is retried.
	StepAttempts int
	// Agent holds the cluster-independent agent settings.
	Agent infra.AgentSettings
	// EtcdAuth, when set, gives each cluster's agents their own etcd user
	// whose role covers only the cluster's prefix (created before its
	// nodes, deleted with the cluster); nil: agents get no etcd
	// credentials (etcd without authentication).
	EtcdAuth *AgentEtcdAuth
	// EventsURL returns the events URL of a cluster's agents ("" with Dapr).
	EventsURL func(clusterID string) string
	// Record stores a control-plane event for the events API (the repair
	// workflow's outcome); nil: not recorded. Projection.Record fits.
	Record func(ctx context.Context, ev store.Event) error
}

// Engine runs operations as persisted, resumable workflows: each step's
// completion is saved before the next starts, a restarted server resumes
// from the saved step, and each step is idempotent.
type Engine struct {
	cfg       EngineConfig
	st        *store.Store
	etcd      *admin.Admin
	providers map[string]infra.Provider
	log       *zap.Logger

	mu      sync.Mutex
	running map[string]bool
	// kicked holds the operations Kick asked for that the loop of Start
	// has not launched yet; wake (capacity 1) tells the loop there are some.
	kicked map[string]bool
	wake   chan struct{}
	// stopped is set once Start's ctx has ended: Kick does nothing then.
	stopped bool
	wg      sync.WaitGroup

	// Recent request event ids (a ring), to tell redeliveries apart.
	seenMu   sync.Mutex
	seen     map[string]struct{}
	seenRing []string
	seenNext int

	requested, duplicate, malformed, runs atomic.Uint64
}

// EngineStats count what the engine did since start.
type EngineStats struct {
	// Requested is the number of distinct operation requests
	// (TypeOperationRequested event ids) Handle accepted.
	Requested uint64
	// Duplicate is the number of redeliveries of a request Handle had
	// already accepted (acked and ignored; among the last 4,096 ids).
	Duplicate uint64
	// Malformed is the number of events Handle dropped as malformed (never
	// redelivered: the Dapr subscriber answers DROP).
	Malformed uint64
	// Runs is the number of workflows this engine claimed and ran (a
	// workflow resumed after a restart counts again).
	Runs uint64
}

// Stats returns the counters since start.
func (e *Engine) Stats() EngineStats {
	return EngineStats{Requested: e.requested.Load(), Duplicate: e.duplicate.Load(), Malformed: e.malformed.Load(), Runs: e.runs.Load()}
}

// seenRequests bounds the request ids remembered for Stats.Duplicate.
const seenRequests = 4096

// firstSeen records request event id and reports whether it is new.
func (e *Engine) firstSeen(id string) bool {
	e.seenMu.Lock()
	defer e.seenMu.Unlock()
	if _, ok := e.seen[id]; ok {
		return false
	}
	if e.seen == nil {
		e.seen, e.seenRing = map[string]struct{}{}, make([]string, seenRequests)
	}
	if old := e.seenRing[e.seenNext]; old != "" {
		delete(e.seen, old)
	}
	e.seenRing[e.seenNext] = id
	e.seenNext = (e.seenNext + 1) % seenRequests
	e.seen[id] = struct{}{}
	return true
}

// NewEngine returns an engine over the store st and the etcd admin side
// etcd (nil only in tests that run no cluster step); call Start to run it.
func NewEngine(cfg EngineConfig, st *store.Store, etcd *admin.Admin, providers map[string]infra.Provider, log *zap.Logger) *Engine {
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 3 * time.Minute
	}
	if cfg.StepAttempts <= 0 {
		cfg.StepAttempts = 5
	}
	if cfg.BackupTimeout <= 0 {
		cfg.BackupTimeout = 12 * time.Hour
	}
	return &Engine{cfg: cfg, st: st, etcd: etcd, providers: providers, log: log.Named("workflow"), running: map[string]bool{},
		kicked: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// Start resumes every unfinished operation and keeps sweeping for
// operations whose owner died, until ctx ends; it launches the operations
// Kick asks for, each running under ctx. Wait waits for the workflows to
// return after ctx ends.
func (e *Engine) Start(ctx context.Context) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		t := time.NewTicker(e.cfg.Lease / 2)
		defer t.Stop()
		e.sweep(ctx)
		for {
			e.launch(ctx)
			select {
			case <-ctx.Done():
				e.mu.Lock()
				e.stopped = true
				e.mu.Unlock()
				return
			case <-t.C:
				e.sweep(ctx)
			case <-e.wake:
			}
		}
	}()
}

// launch starts, under ctx, every kicked operation that does not run yet.
// Only Start's loop calls it, so the runs' wg.Add happens while that loop
// is counted in wg.
func (e *Engine) launch(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id := range e.kicked {
		delete(e.kicked, id)
		if e.running[id] || ctx.Err() != nil {
			continue
		}
		e.running[id] = true
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			defer func() {
				e.mu.Lock()
				delete(e.running, id)
				e.mu.Unlock()
			}()
			e.run(ctx, id)
		}()
	}
}

// Wait blocks until every workflow goroutine returned.
func (e *Engine) Wait() { e.wg.Wait() }

func (e *Engine) sweep(ctx context.Context) {
	ops, err := e.st.UnfinishedOperations(ctx)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("list unfinished operations", zap.Error(err))
		}
		return
	}
	for _, op := range ops {
		e.Kick(op.ID)
	}
}

// Handle is the Handler for TopicControlPlane (TypeOperationRequested):
// it starts the requested operation unless it runs already (Kick; the
// store's claim makes a redelivered or duplicated request harmless). An
// event that is not a valid request is counted, logged and dropped
// (ErrMalformed): redelivering it could never help.
func (e *Engine) Handle(_ context.Context, raw []byte) error {
	var req OperationRequested
	env, err := decodeControlEvent(raw, TypeOperationRequested, &req)
	if err == nil {
		err = req.validate()
	}
	if err != nil {
		e.malformed.Add(1)
		e.log.Warn("malformed control-plane event dropped", zap.String("id", env.ID), zap.String("type", env.Type), zap.Error(err))
		return err
	}
	if !e.firstSeen(env.ID) {
		e.duplicate.Add(1)
		e.log.Debug("operation request redelivered", zap.String("id", env.ID), zap.String("operation", req.OperationID))
	} else {
		e.requested.Add(1)
	}
	e.Kick(req.OperationID)
	return nil
}

// operationKinds are the kinds an OperationRequested may name.
var operationKinds = []string{KindCreate, KindDelete, KindScale, KindSwitchover, KindFailover, KindRestart, KindBackup, KindRestore, KindRepair}

// validate checks the fields decodeControlEvent cannot (required values).
func (r OperationRequested) validate() error {
	switch {
	case r.OperationID == "":
		return fmt.Errorf("%w: data.operation_id: required", ErrMalformed)
	case idx(operationKinds, r.Kind) < 0:
		return fmt.Errorf("%w: data.kind: must be one of %s (got %q)", ErrMalformed, strings.Join(operationKinds, ", "), r.Kind)
	case r.Namespace == "":
		return fmt.Errorf("%w: data.namespace: required", ErrMalformed)
	case r.ClusterID == "":
		return fmt.Errorf("%w: data.cluster_id: required", ErrMalformed)
	}
	return nil
}

// Kick asks for operation id to run in the background unless this server
// runs it already; it returns at once, and the engine started by Start
// launches the run under Start's context (before Start, the request waits
// for it; after that context ended, Kick does nothing). Claiming makes
// sure one replica runs it.
func (e *Engine) Kick(id string) {
	e.mu.Lock()
	if e.running[id] || e.stopped {
		e.mu.Unlock()
		return
	}
	e.kicked[id] = true
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default: // the loop is woken already
	}
}

// errLeaseLost ends a workflow that can no longer prove it owns its
// operation: another server replica claimed it (its lease ran out), or
// the lease could not be renewed before it ran out. The workflow stops
// where it is and writes nothing more; the owner (or, after an unrenewed
// lease, this engine's next sweep) carries the operation on from its
// saved step.
var errLeaseLost = errors.New("operation lease lost")

// run claims and drives one operation to a terminal state (or until ctx
// ends, leaving it resumable). While it runs, a lease keeper renews the
// claim every third of the lease and stops the workflow (its context is
// cancelled with errLeaseLost) as soon as the claim is lost; every write
// that ends the operation or changes the cluster's phase is made under
// the claim (store.Claim), so a workflow that lost its operation cannot
// finish, fail or re-phase it.
func (e *Engine) run(ctx context.Context, id string) {
	op, err := e.st.ClaimOperation(ctx, id, e.cfg.Instance, time.Now().Add(e.cfg.Lease))
	if err != nil {
		if !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
			e.log.Warn("claim operation", zap.String("operation", id), zap.Error(err))
		}
		return
	}
	e.runs.Add(1)
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := &workflow{e: e, op: op, claim: store.Claim{OperationID: op.ID, Owner: op.Owner}, cancel: cancel,
		log: e.log.With(zap.String("operation", op.ID), zap.String("kind", op.Kind), zap.String("cluster", op.ClusterID))}
	if len(op.Params) > 0 {
		_ = json.Unmarshal(op.Params, &w.params)
	}
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		w.keepLease(wctx, op.LeaseUntil)
	}()
	w.log.Info("operation running", zap.String("step", op.Step))
	err = w.execute(wctx)
	cancel(nil) // stops the lease keeper
	<-kept
	if ctx.Err() != nil {
		w.log.Info("operation paused by shutdown; it resumes on restart", zap.String("step", w.op.Step))
		return
	}
	if cause := context.Cause(wctx); errors.Is(cause, errLeaseLost) {
		w.log.Warn("operation stopped: this server no longer owns it", zap.String("step", w.op.Step), zap.Error(cause))
		return
	}
	if err != nil {
		w.fail(context.WithoutCancel(ctx), err)
		return
	}
	w.op.State, w.op.Error = store.OpSucceeded, ""
	if !w.finish(context.WithoutCancel(ctx), nil) {
		return
	}
	w.log.Info("operation succeeded")
	if w.op.Kind == KindRepair {
		w.repairFinished(context.WithoutCancel(ctx), nil)
	}
}

type workflow struct {
	e      *Engine
	op     store.Operation
	params OpParams
	log    *zap.Logger
	// claim is this engine's hold on op: phase writes are made under it.
	claim store.Claim
	// cancel stops the workflow (cause: errLeaseLost) when the claim is
	// lost; nil outside Engine.run.
	cancel context.CancelCauseFunc
}

// keepLease renews the workflow's claim every Lease/3 until ctx ends, so
// that no step (a provider call, a wait of minutes) outlives the lease. It
// stops the workflow when the store says another runner owns the
// operation, or when renewals kept failing until less than Lease/3 of the
// lease is left (two failed renewals in a row): another replica may claim
// it once it runs out, so the workflow stops before that.
func (w *workflow) keepLease(ctx context.Context, until time.Time) {
	every := w.e.cfg.Lease / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := time.Now().Add(w.e.cfg.Lease)
		// Half an interval: a hanging store still leaves time to stop
		// before the lease runs out.
		rctx, cancel := context.WithTimeout(ctx, every/2)
		err := w.e.st.RenewOperation(rctx, w.claim, next)
		cancel()
		switch {
		case err == nil:
			until = next
		case ctx.Err() != nil:
			return
		case errors.Is(err, store.ErrConflict):
			w.lose(err)
			return
		case time.Until(until) < every:
			w.lose(fmt.Errorf("lease not renewed before it runs out at %s: %w", until.Format(time.RFC3339Nano), err))
			return
		default:
			w.log.Warn("renew operation lease; retrying", zap.Error(err))
		}
	}
}

// lose stops the workflow because its claim is gone (err says why).
func (w *workflow) lose(err error) {
	if w.cancel != nil {
		w.cancel(fmt.Errorf("%w: %w", errLeaseLost, err))
	}
}

// owned turns a store ErrConflict of a write made under the claim into
// errLeaseLost, stopping the workflow.
func (w *workflow) owned(err error) error {
	if errors.Is(err, store.ErrConflict) {
		w.lose(err)
		return backoff.Permanent(fmt.Errorf("%w: %w", errLeaseLost, err))
	}
	return err
}

// setPhase sets the cluster's phase under the workflow's claim.
func (w *workflow) setPhase(ctx context.Context, phase, reason string, replicas int) error {
	return w.owned(w.e.st.SetClusterPhaseAs(ctx, w.claim, w.op.ClusterID, phase, reason, replicas))
}

func (w *workflow) save(ctx context.Context) error {
	b, _ := json.Marshal(w.params)
	w.op.Params = b
	w.op.LeaseUntil = time.Now().Add(w.e.cfg.Lease)
	return w.owned(w.e.st.UpdateOperation(ctx, w.op))
}

// finish saves the operation in its final state (w.op.State) and applies
// change to the cluster, under the claim; it reports whether it did (a
// workflow that lost its operation writes nothing).
func (w *workflow) finish(ctx context.Context, change *store.ClusterChange) bool {
	b, _ := json.Marshal(w.params)
	w.op.Params = b
	err := w.e.st.FinishOperation(ctx, w.op, change)
	switch {
	case errors.Is(err, store.ErrConflict):
		w.log.Warn("operation not finished here: this server no longer owns it", zap.String("state", w.op.State), zap.Error(err))
		return false
	case err != nil:
		w.log.Error("save finished operation; it resumes from its saved step", zap.String("state", w.op.State), zap.Error(err))
		return false
	}
	return true
}

// step runs fn as step name unless the saved position is past it, retrying
// with exponential backoff; then saves the position.
func (w *workflow) step(ctx context.Context, name string, order []string, fn func(ctx context.Context) error) error {
	if idx(order, w.op.Step) > idx(order, name) {
		return nil // done before a restart
	}
	w.op.Step = name
	if err := w.save(ctx); err != nil {
		return backoff.Permanent(err)
	}
	b := backoff.WithContext(backoff.WithMaxRetries(&backoff.ExponentialBackOff{
		InitialInterval: 500 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 10 * time.Second,
		MaxElapsedTime: 0, Stop: backoff.Stop, Clock: backoff.SystemClock}, uint64(w.e.cfg.StepAttempts-1)), ctx)
	err := backoff.RetryNotify(func() error {
		err := fn(ctx)
		if err != nil && ctx.Err() == nil {
			w.op.Attempts++
			_ = w.save(ctx)
		}
		return err
	}, b, func(err error, d time.Duration) {
		w.log.Warn("step failed, retrying", zap.String("step", name), zap.Duration("in", d), zap.Error(err))
	})
	if err != nil {
		return fmt.Errorf("step %s: %w", name, err)
	}
	return nil
}

func idx(order []string, s string) int {
	for i, o := range order {
		if o == s {
			return i
		}
	}
	return -1
}

// fail ends the operation as failed and, for the kinds that own the
// cluster's phase, sets it (Failed; a failed repair leaves a Ready or
// Degraded cluster Degraded with the error), in one store transaction made
// under the claim: nothing is written once another server owns it. ctx
// bounds the store writes (run passes its own, without cancellation, so a
// failure is recorded during shutdown too).
func (w *workflow) fail(ctx context.Context, err error) {
	w.op.State, w.op.Error = store.OpFailed, err.Error()
	var change *store.ClusterChange
	switch w.op.Kind {
	case KindCreate, KindScale, KindDelete, KindRestore:
		change = &store.ClusterChange{Phase: store.PhaseFailed, Reason: err.Error()}
	case KindRepair:
		change = &store.ClusterChange{Phase: store.PhaseDegraded, Reason: fmt.Sprintf("repair %s failed (%s): %s", w.op.ID, w.params.Reason, err),
			IfPhase: []string{store.PhaseReady, store.PhaseDegraded}}
	}
	if !w.finish(ctx, change) {
		return
	}
	w.log.Error("operation failed", zap.Error(err))
	if w.op.Kind == KindRepair {
		w.repairFinished(ctx, err)
	}
}

func (w *workflow) execute(ctx context.Context) error {
	if w.op.Kind == KindDrain {
		return w.drain(ctx) // a host's operation: no cluster
	}
	c, err := w.e.st.GetCluster(ctx, w.op.ClusterID)
	if err != nil {
		return fmt.Errorf("load cluster: %w", err)
	}
	p, ok := w.e.providers[c.Provider]
	if !ok {
		return fmt.Errorf("provider %q is not configured on this server", c.Provider)
	}
	tpl, err := w.template(ctx, c)
	switch {
	case err != nil && w.op.Kind == KindDelete:
		// Deleting renders nothing from the template: a cluster whose
		// template is refused now (unapproved, or invalid under today's
		// rules) can still be deleted.
		w.log.Warn("template refused; deleting without it", zap.String("template", c.Template), zap.Error(err))
		tpl = catalog.Template{Name: c.Template}
	case err != nil:
		return err
	}
	x := &clusterCtx{w: w, c: c, p: p, tpl: tpl, keys: keyspace.NewKeys(c.Namespace, c.Project, c.Name)}
	switch w.op.Kind {
	case KindCreate:
		return x.create(ctx)
	case KindRestore:
		x.restore = w.params.Restore
		return x.create(ctx)
	case KindBackup:
		return x.backup(ctx)
	case KindScale:
		return x.scale(ctx)
	case KindDelete:
		return x.delete(ctx)
	case KindSwitchover, KindFailover:
		return x.switchover(ctx)
	case KindRestart:
		return x.restart(ctx)
	case KindUpdate:
		return x.update(ctx)
	case KindRepair:
		return x.repair(ctx)
	case KindMove:
		return x.move(ctx)
	}
	return fmt.Errorf("unknown operation kind %q", w.op.Kind)
}

// NodeSpec returns what a provider gets for node of cluster c (template,
// plan, agent settings with the cluster's events URL).
func (e *Engine) NodeSpec(ctx context.Context, c store.Cluster, node string) (infra.NodeSpec, error) {
	w := &workflow{e: e}
	tpl, err := w.template(ctx, c)
	if err != nil {
		return infra.NodeSpec{}, err
	}
	return (&clusterCtx{w: w, c: c, tpl: tpl}).spec(node), nil
}

func (w *workflow) template(ctx context.Context, c store.Cluster) (catalog.Template, error) {
	if t, ok := catalog.Lookup(c.Template); ok {
		return t, nil
	}
	ut, err := w.e.st.GetTemplate(ctx, c.Namespace, c.Template)
	if err != nil {
		return catalog.Template{}, fmt.Errorf("template %s: %w", c.Template, err)
	}
	// Checked again at every use: a namespace template stored before the
	// current rules, or without a platform admin's approval of its
	// privileged fields, never reaches a provider.
	return catalog.FromStored(ut.Body)
}

type clusterCtx struct {
	w    *workflow
	c    store.Cluster
	p    infra.Provider
	tpl  catalog.Template
	keys keyspace.Keys
	// restore is set while a restore operation creates the nodes.
	restore *infra.RestoreSource
}

func (x *clusterCtx) spec(node string) infra.NodeSpec {
	a := x.w.e.cfg.Agent
	a.SynchronousMode = x.c.SynchronousMode
	a.EtcdUsername, a.EtcdPassword = x.w.e.agentEtcdCredentials(x.c.ID)
	if x.w.e.cfg.EventsURL != nil && a.Dapr == nil {
		a.EventsURL = x.w.e.cfg.EventsURL(x.c.ID)
	}
	return infra.NodeSpec{ClusterID: x.c.ID, Namespace: x.c.Namespace, Project: x.c.Project, Cluster: x.c.Name, Node: node,
		Template: x.tpl, Plan: x.tpl.Plans[x.c.Plan], Agent: a, Restore: x.restore}
}

func nodeName(i int) string { return "node" + strconv.Itoa(i) }

func nodeIndex(n string) int {
	i, _ := strconv.Atoi(strings.TrimPrefix(n, "node"))
	return i
}

// nodes returns the cluster's node rows by name.
// byIndex returns the names of have ordered by node number (node2 before
// node10).
func byIndex(have map[string]store.Node) []string {
	names := make([]string, 0, len(have))
	for n := range have {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return nodeIndex(names[i]) < nodeIndex(names[j]) })
	return names
}

func (x *clusterCtx) nodes(ctx context.Context) (map[string]store.Node, error) {
	ns, err := x.w.e.st.ListNodes(ctx, x.c.ID)
	if err != nil {
		return nil, err
	}
	out := map[string]store.Node{}
	for _, n := range ns {
		// Only nodes the control plane provisioned, under a valid name:
		// whatever else a row names (a legacy "external" member learnt
		// from an event) is never scaled, moved, repaired or handed to
		// a provider's Delete.
		if !n.Provisioned() || !proto.ValidName(n.Name) {
			x.w.log.Warn("ignoring a node the control plane did not provision", zap.String("node", proto.Quote(n.Name, 64)), zap.String("state", n.State))
			continue
		}
		out[n.Name] = n
	}
	return out, nil
}

// ensureNodes creates every node in want (idempotently, recording handles).
func (x *clusterCtx) ensureNodes(ctx context.Context, want []string) error {
	if err := x.ensureAgentUser(ctx); err != nil {
		return err
	}
	have, err := x.nodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range want {
		if !proto.ValidName(n) {
			return backoff.Permanent(proto.CheckName("node", n))
		}
		// Recorded before the provider starts the agent: its first
		// events must find their node (ingest refuses unknown nodes).
		if err := x.w.e.st.ReserveNode(ctx, x.c.ID, n); err != nil {
			return err
		}
		prev := have[n].Handle
		h, err := x.p.Create(ctx, x.spec(n), prev)
		if err != nil {
			return err
		}
		host := "127.0.0.1"
		if hn, ok := x.p.(infra.HostNamer); ok {
			host = hn.NodeHost(h)
		}
		if err := x.w.e.st.UpsertNode(ctx, store.Node{ClusterID: x.c.ID, Name: n, Host: host, State: "created", Handle: h}); err != nil {
			return err
		}
	}
	return nil
}

// desired is the spec key the control plane writes for nodes
// (docs/keyspace.md, "spec").
func (x *clusterCtx) desired(nodes []string) keyspace.Spec {
	return keyspace.Spec{Replicas: len(nodes), SynchronousMode: x.c.SynchronousMode, Engine: x.c.Engine, Version: x.c.Version,
		Template: x.c.Template, Plan: x.c.Plan, Nodes: nodes}
}

// waitReady polls etcd until the wanted nodes form a ready cluster,
// keeping the operation's lease and progress up to date.
func (x *clusterCtx) waitReady(ctx context.Context, want []string) error {
	return x.waitReadySince(ctx, want, 0)
}

// waitReadySince is waitReady counting only member keys written after
// etcd revision since (0: any), so that a dead agent's key, which lives on
// until its lease expires, does not pass for the restarted one.
func (x *clusterCtx) waitReadySince(ctx context.Context, want []string, since int64) error {
	_, err := x.waitLive(ctx, "not ready", true, func(l Live) string {
		l = l.writtenAfter(since)
		if p := l.readyProblem(want); p != "" {
			return fmt.Sprintf("%s (%d of %d nodes ready)", p, l.ReadyCount(want), len(want))
		}
		return ""
	})
	if err != nil {
		return err
	}
	x.w.params.Progress = fmt.Sprintf("%d of %d nodes ready", len(want), len(want))
	return x.w.save(ctx)
}

// waitLive waits until problem returns "" for the cluster's live keyspace,
// for at most the engine's ReadyTimeout. It reads again after every change
// under the cluster prefix (an etcd watch, admin.Wait) and at least every
// second; each new problem is saved as the operation's progress (so the
// operation's lease and progress stay current), and malformed values are
// logged when their number changes. It returns the live view that
// satisfied problem. Errors: ctx's error when ctx ends (the step is
// retried or resumed); "{what} after {timeout}: {problem}" on timeout
// (a permanent error, failing the step, when permanent is set; otherwise
// the step may retry); a permanent error when saving the progress fails.
func (x *clusterCtx) waitLive(ctx context.Context, what string, permanent bool, problem func(Live) string) (Live, error) {
	timeout := x.w.e.cfg.ReadyTimeout
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	var lastErrs int
	var saveErr error
	var got Live
	_, err := x.w.e.etcd.Wait(wctx, x.keys, time.Second, func(s keyspace.Snapshot) bool {
		l := liveOf(x.keys, s)
		if len(l.Errors) != lastErrs {
			lastErrs = len(l.Errors)
			for _, e := range l.Errors {
				x.w.log.Warn("malformed value in the cluster's keyspace; ignoring it", zap.Error(e))
			}
		}
		p := problem(l)
		if p == "" {
			got = l
			return true
		}
		if p != last {
			last, x.w.params.Progress = p, p
			if saveErr = x.w.save(ctx); saveErr != nil {
				return true
			}
		}
		return false
	})
	switch {
	case saveErr != nil:
		return got, backoff.Permanent(saveErr)
	case err == nil:
		return got, nil
	case ctx.Err() != nil:
		return got, ctx.Err()
	}
	if last == "" {
		last = "etcd unreachable: " + err.Error()
	}
	err = fmt.Errorf("%s after %s: %s", what, timeout, last)
	if permanent {
		return got, backoff.Permanent(err)
	}
	return got, err
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = nodeName(i + 1)
	}
	return out
}

var createSteps = []string{"", "archive", "spec", "nodes", "ready"}

// create provisions a new cluster; a restore first has the source's
// primary archive its current WAL segment (so a point in time up to now is
// reachable), and its nodes bootstrap from the source's backup.
func (x *clusterCtx) create(ctx context.Context) error {
	want := names(x.c.Replicas)
	if x.restore != nil {
		if err := x.w.step(ctx, "archive", createSteps, x.archiveSource); err != nil {
			return err
		}
	}
	if err := x.w.setPhase(ctx, store.PhaseProvisioning, "", 0); err != nil {
		return err
	}
	if err := x.w.step(ctx, "spec", createSteps, func(ctx context.Context) error {
		return x.w.e.etcd.PutSpec(ctx, x.keys, x.desired(want))
	}); err != nil {
		return err
	}
	if err := x.w.step(ctx, "nodes", createSteps, func(ctx context.Context) error { return x.ensureNodes(ctx, want) }); err != nil {
		return err
	}
	if err := x.w.step(ctx, "ready", createSteps, func(ctx context.Context) error {
		// A restart may find nodes whose agent died with the old server.
		if err := x.ensureNodes(ctx, want); err != nil {
			return err
		}
		return x.waitReady(ctx, want)
	}); err != nil {
		return err
	}
	return x.w.setPhase(ctx, store.PhaseReady, "", 0)
}

// putRequest writes on-demand request id for the agents of the cluster
// keys, expiring after the engine's ReadyTimeout.
func (x *clusterCtx) putRequest(ctx context.Context, keys keyspace.Keys, id string, req keyspace.BackupRequest) error {
	req.ExpiresMS = time.Now().Add(x.w.e.cfg.ReadyTimeout).UnixMilli()
	return x.w.e.etcd.RequestBackup(ctx, keys, id, req)
}

// deleteRequest removes request id once the operation no longer needs it
// (also when ctx ended); a failure is logged: the agents ignore it after
// its expiry anyway.
func (x *clusterCtx) deleteRequest(ctx context.Context, keys keyspace.Keys, id string) {
	if err := x.w.e.etcd.DeleteBackupRequest(context.WithoutCancel(ctx), keys, id); err != nil {
		x.w.log.Warn("cannot delete the backup request; the agents ignore it once it expires", zap.String("request", id), zap.Error(err))
	}
}

// claimStatus reads who answered request id and how: ("node2", "succeeded"),
// ("node2", "") while running, ("", "") if nobody took it yet.
func (x *clusterCtx) claimStatus(ctx context.Context, keys keyspace.Keys, id string) (node, status string, err error) {
	c, ok, err := x.w.e.etcd.BackupRequestClaim(ctx, keys, id)
	if _, malformed := errors.AsType[*keyspace.DecodeError](err); err != nil && !malformed {
		return "", "", err
	}
	node, status = x.claimOf(id, c, ok, err)
	return node, status, nil
}

// claimOf checks a claim of request id as read (ok: present; decodeErr:
// its value did not decode): a claim no agent of the cluster could have
// written counts as not taken ("", ""), and is logged.
func (x *clusterCtx) claimOf(id string, c keyspace.BackupClaim, ok bool, decodeErr error) (node, status string) {
	if decodeErr == nil && ok && (!proto.ValidName(c.Node) || len(c.Status) > 64 || proto.HasControl(c.Status)) {
		decodeErr = fmt.Errorf("claim %q names no node of the cluster", c.String())
	}
	if decodeErr != nil {
		x.w.log.Warn("ignoring a backup request claim not written by an agent", zap.String("request", id), zap.Error(decodeErr))
		return "", ""
	}
	return c.Node, c.Status
}

// archiveSource asks the restore source's primary to switch and archive
// its WAL segment and waits for it (a minute at most).
func (x *clusterCtx) archiveSource(ctx context.Context) error {
	r := x.restore
	src, err := keyspace.ParseClusterID(r.Cluster)
	if err != nil {
		return backoff.Permanent(fmt.Errorf("restore source: %w", err))
	}
	id := x.w.op.ID + "-wal"
	if err := x.putRequest(ctx, src, id, keyspace.BackupRequest{Action: keyspace.ActionSwitchWAL}); err != nil {
		return err
	}
	defer x.deleteRequest(ctx, src, id)
	x.w.params.Progress = "archiving the source's current WAL"
	_ = x.w.save(ctx)
	// Wait on the source's keyspace (an etcd watch) for the claim to
	// carry a status, a minute at most.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var node, status string
	_, err = x.w.e.etcd.Wait(wctx, src, time.Second, func(s keyspace.Snapshot) bool {
		c, ok := s.RequestClaims[id]
		node, status = x.claimOf(id, c, ok, s.Err(src.BackupRequestClaim(id)))
		return status != ""
	})
	switch {
	case err == nil && status == "succeeded":
		x.w.params.Progress = "source WAL archived by " + node
		return x.w.save(ctx)
	case err == nil:
		if r.TargetTime != nil {
			return backoff.Permanent(fmt.Errorf("the source's primary %s could not archive its current WAL (status %s); see its agent log", node, status))
		}
		return nil // a restore to the end of the archive still works
	case ctx.Err() != nil:
		return ctx.Err()
	case r.TargetTime != nil:
		return backoff.Permanent(errors.New("the source cluster's primary did not archive its current WAL within a minute; a point-in-time restore needs the WAL up to the target"))
	}
	return nil
}

var backupSteps = []string{"", "request", "wait"}

// backup writes an on-demand request (backup/requests/{operation id}); one
// agent claims and runs it; the operation succeeds when the projection
// holds the backup record carrying the request id (so a list right after
// shows it), and fails with the agent's error otherwise.
func (x *clusterCtx) backup(ctx context.Context) error {
	id := x.w.op.ID
	if err := x.w.step(ctx, "request", backupSteps, func(ctx context.Context) error {
		return x.putRequest(ctx, x.keys, id, keyspace.BackupRequest{Action: keyspace.ActionBackup, Job: x.w.params.Job})
	}); err != nil {
		return err
	}
	defer x.deleteRequest(ctx, x.keys, id)
	return x.w.step(ctx, "wait", backupSteps, func(ctx context.Context) error {
		started := time.Now()
		var agentDone time.Time
		last := ""
		for {
			bs, err := x.w.e.st.BackupsByRequest(ctx, x.c.ID, id)
			if err != nil {
				return err
			}
			progress := "waiting for an agent to take the request"
			for _, b := range bs {
				x.w.params.BackupID = b.ID
				switch b.Status {
				case store.BackupSucceeded:
					x.w.params.Progress = fmt.Sprintf("backup %s completed on %s (%d bytes)", b.ID, b.Node, b.SizeBytes)
					return x.w.save(ctx)
				case store.BackupFailed:
					x.w.params.Progress = ""
					return backoff.Permanent(fmt.Errorf("backup %s on %s failed: %s", b.ID, b.Node, b.Error))
				}
				progress = fmt.Sprintf("backup %s running on %s", b.ID, b.Node)
			}
			node, status, err := x.claimStatus(ctx, x.keys, id)
			if err == nil && status != "" && agentDone.IsZero() {
				agentDone = time.Now()
			}
			if len(bs) == 0 && node != "" {
				progress = "taken by " + node
			}
			// The agent finished but its events did not arrive: its outbox
			// retries; give up after a while with what etcd says.
			if !agentDone.IsZero() && time.Since(agentDone) > time.Minute {
				return backoff.Permanent(fmt.Errorf("agent %s reports the backup %s but its record did not arrive; check its agent log", node, status))
			}
			if progress != last {
				x.w.params.Progress, last = progress, progress
				if err := x.w.save(ctx); err != nil {
					return backoff.Permanent(err)
				}
			}
			// ReadyTimeout for an agent to take the request; once one
			// runs it, BackupTimeout (a large database takes hours).
			limit := x.w.e.cfg.ReadyTimeout
			if len(bs) > 0 || node != "" {
				limit = x.w.e.cfg.BackupTimeout
			}
			if time.Since(started) > limit {
				return backoff.Permanent(fmt.Errorf("no backup completed within %s: %s", limit, progress))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
	})
}

var scaleSteps = []string{"", "spec", "remove", "add", "ready"}

func (x *clusterCtx) scale(ctx context.Context) error {
	target := x.w.params.Replicas
	have, err := x.nodes(ctx)
	if err != nil {
		return err
	}
	current := byIndex(have)
	// Keep the primary; drop the highest-numbered replicas; add new names.
	want := append([]string(nil), current...)
	if target < len(want) {
		// Never guess the primary: without it we could remove it first.
		l, err := readLive(ctx, x.w.e.etcd, x.keys)
		if err != nil {
			return fmt.Errorf("read primary before scaling down: %w", err)
		}
		primary := ""
		if l.Leader != nil {
			primary = l.Leader.Node
		}
		var keep []string
		drop := len(want) - target
		for i := len(want) - 1; i >= 0; i-- {
			if drop > 0 && want[i] != primary {
				drop--
				continue
			}
			keep = append([]string{want[i]}, keep...)
		}
		want = keep
	}
	next := 1
	for _, n := range current {
		next = max(next, nodeIndex(n)+1)
	}
	for len(want) < target {
		want = append(want, nodeName(next))
		next++
	}
	if err := x.w.step(ctx, "spec", scaleSteps, func(ctx context.Context) error {
		return x.w.e.etcd.PutSpec(ctx, x.keys, x.desired(want))
	}); err != nil {
		return err
	}
	if err := x.w.step(ctx, "remove", scaleSteps, func(ctx context.Context) error {
		for _, n := range current {
			if idx(want, n) >= 0 {
				continue
			}
			// The primary may have moved onto n since the plan was made:
			// hand it over to a node that stays before stopping n.
			if err := x.moveLeadership(ctx, n, want); err != nil {
				return err
			}
			if err := x.p.Delete(ctx, x.spec(n), have[n].Handle); err != nil {
				return err
			}
			if err := x.w.e.st.DeleteNode(ctx, x.c.ID, n); err != nil {
				return err
			}
			if err := x.w.e.etcd.DeleteMember(ctx, x.keys, n); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := x.w.step(ctx, "add", scaleSteps, func(ctx context.Context) error { return x.ensureNodes(ctx, want) }); err != nil {
		return err
	}
	if err := x.w.step(ctx, "ready", scaleSteps, func(ctx context.Context) error { return x.waitReady(ctx, want) }); err != nil {
		return err
	}
	return x.w.setPhase(ctx, store.PhaseReady, "", target)
}

// moveLeadership makes sure node is not the primary: when it is, it asks
// for a switchover to the first healthy node of keep and waits for it.
func (x *clusterCtx) moveLeadership(ctx context.Context, node string, keep []string) error {
	return x.moveLeadershipFor(ctx, node, keep, "scale down removes "+node)
}

// moveLeadershipFor is moveLeadership with the switchover's reason.
func (x *clusterCtx) moveLeadershipFor(ctx context.Context, node string, keep []string, reason string) error {
	l, err := readLive(ctx, x.w.e.etcd, x.keys)
	if err != nil {
		return err
	}
	if l.Leader == nil || l.Leader.Node != node {
		return nil
	}
	to := ""
	for _, k := range keep {
		if k != node && l.ReadyCount([]string{k}) == 1 {
			to = k
			break
		}
	}
	if to == "" {
		return fmt.Errorf("%s is the primary and no remaining node is ready to take over", node)
	}
	x.w.log.Info("switching over before removing the primary", zap.String("from", node), zap.String("to", to))
	ok, err := x.w.e.etcd.RequestSwitchover(ctx, x.keys, node, to, reason)
	if err != nil {
		return err
	}
	if !ok {
		x.w.log.Info("a switchover is already pending; waiting for the primary to move", zap.String("from", node))
	}
	_, err = x.waitLive(ctx, "primary did not move away from "+node, false, func(l Live) string {
		if l.Leader == nil || l.Leader.Node == node || l.Switchover {
			return "switching over from " + node
		}
		return ""
	})
	return err
}

var deleteSteps = []string{"", "nodes", "keyspace", "etcd-user", "record"}

func (x *clusterCtx) delete(ctx context.Context) error {
	if err := x.w.step(ctx, "nodes", deleteSteps, func(ctx context.Context) error {
		have, err := x.nodes(ctx)
		if err != nil {
			return err
		}
		for n, row := range have {
			if err := x.p.Delete(ctx, x.spec(n), row.Handle); err != nil {
				return err
			}
			if err := x.w.e.st.DeleteNode(ctx, x.c.ID, n); err != nil {
				return err
			}
		}
		return x.p.DeleteCluster(ctx, x.c.ID)
	}); err != nil {
		return err
	}
	if err := x.w.step(ctx, "keyspace", deleteSteps, func(ctx context.Context) error {
		return x.w.e.etcd.DeleteCluster(ctx, x.keys)
	}); err != nil {
		return err
	}
	if err := x.w.step(ctx, "etcd-user", deleteSteps, x.deleteAgentUser); err != nil {
		return err
	}
	return x.w.step(ctx, "record", deleteSteps, func(ctx context.Context) error { return x.w.owned(x.w.e.st.DeleteClusterAs(ctx, x.w.claim, x.c.ID)) })
}

var switchSteps = []string{"", "request", "wait"}

func (x *clusterCtx) switchover(ctx context.Context) error {
	if err := x.w.step(ctx, "request", switchSteps, func(ctx context.Context) error {
		l, err := readLive(ctx, x.w.e.etcd, x.keys)
		if err != nil {
			return err
		}
		if l.Leader == nil {
			return backoff.Permanent(errors.New("the cluster has no primary"))
		}
		from := x.w.params.From
		if x.w.op.Kind == KindSwitchover && from == "" {
			from = l.Leader.Node
		}
		if from != "" && from != l.Leader.Node {
			return backoff.Permanent(fmt.Errorf("%s is not the primary (%s is)", from, l.Leader.Node))
		}
		if x.w.params.To != "" && x.w.params.To == l.Leader.Node {
			return backoff.Permanent(fmt.Errorf("%s is already the primary", x.w.params.To))
		}
		ok, err := x.w.e.etcd.RequestSwitchover(ctx, x.keys, from, x.w.params.To, x.w.params.Reason)
		if err != nil {
			return err
		}
		if !ok {
			return backoff.Permanent(errors.New("a switchover is already pending"))
		}
		x.w.params.From = l.Leader.Node // remember who was primary
		return nil
	}); err != nil {
		return err
	}
	return x.w.step(ctx, "wait", switchSteps, func(ctx context.Context) error {
		l, err := x.waitLive(ctx, "primary did not change", true, func(l Live) string {
			switch {
			case l.Leader == nil:
				return "no primary yet"
			case l.Leader.Node == x.w.params.From || l.Switchover:
				return "switching over from " + x.w.params.From
			case x.w.params.To != "" && l.Leader.Node != x.w.params.To:
				return fmt.Sprintf("%s became the primary, not %s", l.Leader.Node, x.w.params.To)
			}
			return ""
		})
		if err != nil {
			return err
		}
		x.w.params.Progress = "primary is " + l.Leader.Node
		return nil
	})
}

var updateSteps = []string{"", "spec", "record", "wait"}

// update changes synchronous_mode on a live cluster: the spec key first
// (the agents act on it; the primary switches without a restart, writing
// the sync key before PostgreSQL waits for a standby), then the cluster
// record (what new nodes' agent configurations and later spec writes
// carry), then it waits until the primary reports the mode in effect. A
// failed wait leaves the spec written: the agents still apply it when they
// can.
func (x *clusterCtx) update(ctx context.Context) error {
	mode := x.w.params.SynchronousMode
	if mode != "on" && mode != "off" {
		return fmt.Errorf("synchronous_mode: must be \"on\" or \"off\" (got %q)", mode)
	}
	x.c.SynchronousMode = mode
	have, err := x.nodes(ctx)
	if err != nil {
		return err
	}
	nodes := byIndex(have)
	if err := x.w.step(ctx, "spec", updateSteps, func(ctx context.Context) error {
		return x.w.e.etcd.PutSpec(ctx, x.keys, x.desired(nodes))
	}); err != nil {
		return err
	}
	if err := x.w.step(ctx, "record", updateSteps, func(ctx context.Context) error {
		return x.w.owned(x.w.e.st.SetClusterSynchronousModeAs(ctx, x.w.claim, x.c.ID, mode))
	}); err != nil {
		return err
	}
	return x.w.step(ctx, "wait", updateSteps, func(ctx context.Context) error { return x.waitSynchronousMode(ctx, mode, nodes) })
}

// waitSynchronousMode waits until the primary reports mode in effect
// (Live.syncProblem), keeping the operation's lease and progress current.
func (x *clusterCtx) waitSynchronousMode(ctx context.Context, mode string, nodes []string) error {
	live, err := x.waitLive(ctx, "synchronous_mode "+mode+" not in effect", false, func(l Live) string { return l.syncProblem(mode, nodes) })
	var perm *backoff.PermanentError
	switch {
	case err == nil:
	case ctx.Err() != nil || errors.As(err, &perm):
		return err
	default:
		return backoff.Permanent(fmt.Errorf("%w; the spec key is written and the agents apply it when they can (see the primary's agent log)", err))
	}
	x.w.params.Progress = "synchronous_mode " + mode + " in effect on the primary " + live.Leader.Node
	return x.w.save(ctx)
}

var restartSteps = []string{"", "restart"}

// restart restarts replicas one at a time, then the primary, waiting for
// the cluster to be ready in between.
func (x *clusterCtx) restart(ctx context.Context) error {
	return x.w.step(ctx, "restart", restartSteps, func(ctx context.Context) error {
		have, err := x.nodes(ctx)
		if err != nil {
			return err
		}
		var order []string
		primary := ""
		if l, err := readLive(ctx, x.w.e.etcd, x.keys); err == nil && l.Leader != nil {
			primary = l.Leader.Node
		}
		all := make([]string, 0, len(have))
		for n := range have {
			all = append(all, n)
			if n != primary {
				order = append(order, n)
			}
		}
		sort.Strings(order)
		if primary != "" {
			order = append(order, primary)
		}
		sort.Strings(all)
		for _, n := range order {
			if idx(x.w.params.Done, n) >= 0 {
				continue
			}
			h, err := x.p.Restart(ctx, x.spec(n), have[n].Handle)
			if err != nil {
				return err
			}
			if err := x.w.e.st.UpsertNode(ctx, store.Node{ClusterID: x.c.ID, Name: n, Host: have[n].Host, State: "created", Handle: h}); err != nil {
				return err
			}
			if err := x.waitReady(ctx, all); err != nil {
				return err
			}
			x.w.params.Done = append(x.w.params.Done, n)
			if err := x.w.save(ctx); err != nil {
				return backoff.Permanent(err)
			}
		}
		return nil
	})
}
