package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// ProjectionStats count what the projection consumer did with events.
type ProjectionStats struct {
	Applied, Duplicate, Stale, UnknownCluster, UnknownNode, Malformed uint64
}

// MaxLoggedInput bounds, in bytes, how much of an untrusted input (an
// event, a name, a decoding error quoting it) goes into one log field or
// error message.
const MaxLoggedInput = 512

// ErrUnknownNode: an agent event names a node the control plane did not
// provision for the event's cluster. Such an event is refused for good
// (it wraps ErrMalformed: never worth a retry).
var ErrUnknownNode = fmt.Errorf("%w: node not provisioned for this cluster", ErrMalformed)

// Projection consumes agent events (TopicAgentEvents) into the store:
// idempotent on the event id, order-aware by (term, revision) per subject
// (proto docs: the cluster for primary_changed, failover_started and
// switchover_completed; the member for the others).
type Projection struct {
	st  *store.Store
	log *zap.Logger

	applied, duplicate, stale, unknown, unknownNode, malformed atomic.Uint64

	mu      sync.Mutex
	waiters []chan struct{} // woken when a new event is recorded

	// health remembers each member's last applied (healthy, state), so the
	// cluster phase is re-derived only when one changes (or on a member's
	// first event since start), not on every member_state.
	health sync.Map // "ns/project/cluster/node" → "true/running"

	// Group commit: concurrent deliveries queue here; one of them (the
	// leader) applies everything queued in one store transaction, then
	// hands the role to the next waiter.
	bmu      sync.Mutex
	queue    []*pendingEvent
	flushing bool

	// summarySink: STUB added by the alerts piece so that server.go
	// compiles before the agent piece merges; the agent piece owns
	// SetSummarySink and the delivery of TypeMemberSummary (keep theirs).
	summarySink atomic.Pointer[func(ctx context.Context, clusterID string, s proto.MemberSummary)]
}

// SetSummarySink sets the function member summaries
// (proto.TypeMemberSummary) are handed to, with the store's id of the
// cluster they resolved to. STUB (alerts piece): it only stores fn; the
// agent piece's version delivers the summaries.
func (p *Projection) SetSummarySink(fn func(ctx context.Context, clusterID string, s proto.MemberSummary)) {
	p.summarySink.Store(&fn)
}

// maxBatch bounds the events applied in one store transaction.
const maxBatch = 256

type pendingEvent struct {
	ea   store.EventApply
	done chan applyMsg // one message at a time: a result, or the leader role
}

type applyMsg struct {
	lead bool
	res  store.ApplyResult
	err  error
}

// applyAll records eas, in order, through the group commit and returns
// each one's result once its transaction committed (or failed: then every
// event of that batch gets the error and is redelivered). The events enter
// the queue together, so they are applied in the order given.
func (p *Projection) applyAll(ctx context.Context, eas []store.EventApply) ([]store.ApplyResult, []error) {
	items := make([]*pendingEvent, len(eas))
	for i, ea := range eas {
		items[i] = &pendingEvent{ea: ea, done: make(chan applyMsg, 1)}
	}
	res, errs := make([]store.ApplyResult, len(eas)), make([]error, len(eas))
	if len(items) == 0 {
		return res, errs
	}
	last := items[len(items)-1]
	p.bmu.Lock()
	p.queue = append(p.queue, items...)
	lead := !p.flushing
	p.flushing = true
	p.bmu.Unlock()
	if lead {
		p.flush(ctx, last)
	}
	for i, it := range items {
		for {
			m := <-it.done
			if m.lead {
				// Handed the leader role: flush up to our last event.
				p.flush(ctx, last)
				continue
			}
			res[i], errs[i] = m.res, m.err
			break
		}
	}
	return res, errs
}

// flush applies queued batches until own's batch is done, then passes the
// leader role to the oldest waiter, if any.
func (p *Projection) flush(ctx context.Context, own *pendingEvent) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for {
		p.bmu.Lock()
		n := min(len(p.queue), maxBatch)
		batch := slices.Clone(p.queue[:n])
		p.queue = p.queue[n:]
		p.bmu.Unlock()
		eas := make([]store.EventApply, len(batch))
		mine := false
		for i, it := range batch {
			eas[i] = it.ea
			mine = mine || it == own
		}
		rs, err := p.st.ApplyEvents(fctx, eas)
		for i, it := range batch {
			m := applyMsg{err: err}
			if err == nil {
				m.res = rs[i]
			}
			it.done <- m
		}
		if mine {
			p.bmu.Lock()
			if len(p.queue) > 0 {
				p.queue[0].done <- applyMsg{lead: true}
			} else {
				p.flushing = false
			}
			p.bmu.Unlock()
			return
		}
	}
}

// NewProjection returns the projection consumer.
func NewProjection(st *store.Store, log *zap.Logger) *Projection {
	return &Projection{st: st, log: log.Named("projection")}
}

// Stats returns the counters since start.
func (p *Projection) Stats() ProjectionStats {
	return ProjectionStats{Applied: p.applied.Load(), Duplicate: p.duplicate.Load(), Stale: p.stale.Load(),
		UnknownCluster: p.unknown.Load(), UnknownNode: p.unknownNode.Load(), Malformed: p.malformed.Load()}
}

// Changed returns a channel closed at the next recorded event (for SSE).
func (p *Projection) Changed() <-chan struct{} {
	ch := make(chan struct{})
	p.mu.Lock()
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()
	return ch
}

func (p *Projection) notify() {
	p.mu.Lock()
	ws := p.waiters
	p.waiters = nil
	p.mu.Unlock()
	for _, ch := range ws {
		close(ch)
	}
}

// Record stores an event the control plane itself raised about a cluster
// (not an agent's: term and revision 0, no change to the projection), so
// that the events API and its SSE stream show it with the agents' events.
// The cluster (ev.Namespace, ev.Project, ev.Cluster) must exist:
// store.ErrNotFound otherwise.
func (p *Projection) Record(ctx context.Context, ev store.Event) error {
	res, err := p.st.ApplyEvent(ctx, ev, store.Projection{Scope: store.ScopeUnordered, AnyNode: true})
	if err != nil {
		return fmt.Errorf("record event %s: %w", ev.Type, err)
	}
	if res == store.UnknownCluster {
		return fmt.Errorf("record event %s: cluster %s/%s/%s: %w", ev.Type, ev.Namespace, ev.Project, ev.Cluster, store.ErrNotFound)
	}
	p.notify()
	return nil
}

// Handle is the Handler for TopicAgentEvents.
func (p *Projection) Handle(ctx context.Context, raw []byte) error {
	return p.HandleBatch(ctx, [][]byte{raw})[0]
}

// prepared is an event decoded for the projection.
type prepared struct {
	e       proto.Envelope
	h       proto.Header
	project string
	proj    store.Projection
}

// HandleBatch is the BatchHandler for TopicAgentEvents: the events are
// decoded, then applied in the given order through the group commit (a
// batch from one agent costs one store transaction, not one each). The
// i-th error is the i-th event's result, with Handler's meaning.
func (p *Projection) HandleBatch(ctx context.Context, raws [][]byte) []error {
	errs := make([]error, len(raws))
	preps := make([]prepared, 0, len(raws))
	idx := make([]int, 0, len(raws))
	for i, raw := range raws {
		pr, err := p.prepare(raw)
		if err != nil {
			errs[i] = err
			continue
		}
		preps = append(preps, pr)
		idx = append(idx, i)
	}
	eas := make([]store.EventApply, len(preps))
	for i, pr := range preps {
		e, h := pr.e, pr.h
		eas[i] = store.EventApply{Event: store.Event{ID: e.ID, Namespace: h.Namespace, Project: pr.project, Cluster: h.Cluster, Node: h.Node,
			Type: e.Type, Term: e.Term, Revision: e.Revision, Time: e.Time, Data: e.Data}, Projection: pr.proj}
	}
	res, aerrs := p.applyAll(ctx, eas)
	recorded := false
	for i, pr := range preps {
		if aerrs[i] != nil {
			errs[idx[i]] = fmt.Errorf("project event %s: %w", pr.e.ID, aerrs[i])
			continue
		}
		if res[i] == store.UnknownNode {
			errs[idx[i]] = fmt.Errorf("event %s: node %s of cluster %s/%s/%s: %w", proto.Quote(pr.e.ID, 64), proto.Quote(pr.h.Node, 64),
				pr.h.Namespace, pr.project, pr.h.Cluster, ErrUnknownNode)
		}
		p.account(ctx, pr, res[i])
		recorded = recorded || res[i] == store.Applied || res[i] == store.Stale
	}
	if recorded {
		p.notify()
	}
	return errs
}

// prepare decodes raw strictly and maps it to its projection change.
// Errors wrap ErrMalformed.
func (p *Projection) prepare(raw []byte) (prepared, error) {
	e, payload, err := proto.DecodeEvent(raw)
	if err != nil {
		p.malformed.Add(1)
		p.log.Warn("malformed event dropped", zap.String("error", proto.Truncate([]byte(err.Error()), MaxLoggedInput)),
			zap.String("event", proto.Truncate(raw, MaxLoggedInput)))
		return prepared{}, fmt.Errorf("%w: %s", ErrMalformed, proto.Truncate([]byte(err.Error()), MaxLoggedInput))
	}
	var h proto.Header
	var proj store.Projection
	switch v := payload.(type) {
	case proto.PrimaryChanged:
		h, proj = v.Header, store.Projection{Scope: store.ScopeCluster, Primary: v.Primary}
	case proto.SwitchoverCompleted:
		h, proj = v.Header, store.Projection{Scope: store.ScopeCluster, Primary: v.To}
	case proto.FailoverStarted:
		h, proj = v.Header, store.Projection{Scope: store.ScopeCluster}
	case proto.MemberState:
		h = v.Header
		proj = store.Projection{Scope: store.ScopeMember, Member: &store.MemberUpdate{
			Role: v.Role, MemberState: v.State, Healthy: v.Healthy, LSN: v.LSN, LagBytes: v.LagBytes, Timeline: v.Timeline}}
	case proto.Fenced:
		h, proj = v.Header, store.Projection{Scope: store.ScopeMember}
	case proto.HandlerResult:
		h, proj = v.Header, store.Projection{Scope: store.ScopeMember}
	case proto.BackupStarted, proto.BackupCompleted, proto.BackupFailed, proto.BackupVerified:
		h, proj = backupProjection(v)
	default:
		p.malformed.Add(1)
		p.log.Warn("malformed event dropped", zap.String("id", e.ID), zap.String("type", e.Type), zap.String("reason", "type not handled by the projection"))
		return prepared{}, fmt.Errorf("%w: unhandled type %s", ErrMalformed, e.Type)
	}
	project := h.Project
	if project == "" {
		project = "default"
	}
	return prepared{e: e, h: h, project: project, proj: proj}, nil
}

// account counts one applied event and re-derives the cluster phase when
// a member's health changed.
func (p *Projection) account(ctx context.Context, pr prepared, res store.ApplyResult) {
	e, h, project, proj := pr.e, pr.h, pr.project, pr.proj
	switch res {
	case store.Applied:
		p.applied.Add(1)
		if m := proj.Member; m != nil {
			key := h.Namespace + "/" + project + "/" + h.Cluster + "/" + h.Node
			cur := fmt.Sprintf("%t/%s", m.Healthy, m.MemberState)
			if prev, ok := p.health.Swap(key, cur); !ok || prev != cur {
				if err := p.refreshPhase(ctx, h.Namespace, project, h.Cluster); err != nil {
					p.log.Warn("refresh phase", zap.Error(err))
				}
			}
		}
	case store.Duplicate:
		p.duplicate.Add(1)
	case store.Stale:
		p.stale.Add(1)
		p.log.Info("stale event dropped", zap.String("id", e.ID), zap.String("type", e.Type), zap.Uint64("term", e.Term), zap.Int64("revision", e.Revision))
	case store.UnknownNode:
		p.unknownNode.Add(1)
		p.log.Warn("event for a node the control plane did not provision refused", zap.String("id", proto.Truncate([]byte(e.ID), 64)), zap.String("type", e.Type),
			zap.String("cluster", h.Namespace+"/"+project+"/"+h.Cluster), zap.String("node", proto.Truncate([]byte(h.Node), 64)))
	case store.UnknownCluster:
		p.unknown.Add(1)
		p.log.Debug("event for unknown cluster", zap.String("cluster", h.Namespace+"/"+project+"/"+h.Cluster))
	}
}

// backupProjection maps a backup.* payload to its header and change.
// Restore-drill runs (method verify) get no record of their own: their
// verified event marks the backup they restored.
func backupProjection(v any) (proto.Header, store.Projection) {
	at := func(h proto.Header) time.Time { return time.UnixMilli(h.TimestampMS).UTC() }
	rec := func(r proto.BackupRun) store.Backup {
		return store.Backup{ID: r.RunID, Job: r.Job, Method: r.Method, Repository: r.Repository, RequestID: r.RequestID}
	}
	proj := store.Projection{Scope: store.ScopeUnordered}
	var h proto.Header
	switch p := v.(type) {
	case proto.BackupStarted:
		h = p.Header
		if p.Method != "verify" {
			b := rec(p.BackupRun)
			b.StartedAt = at(h)
			proj.Backup = &store.BackupUpdate{Kind: store.BackupEventStarted, Record: b}
		}
	case proto.BackupCompleted:
		h = p.Header
		b := rec(p.BackupRun)
		b.Status, b.FinishedAt, b.StartedAt = store.BackupSucceeded, at(h), at(h).Add(-time.Duration(p.DurationMS)*time.Millisecond)
		b.SizeBytes, b.Checksum, b.StartLSN, b.StopLSN, b.Timeline, b.Path = p.SizeBytes, p.Checksum, p.StartLSN, p.StopLSN, p.Timeline, p.Path
		proj.Backup = &store.BackupUpdate{Kind: store.BackupEventFinished, Record: b}
	case proto.BackupFailed:
		h = p.Header
		if p.Method != "verify" {
			b := rec(p.BackupRun)
			b.Status, b.FinishedAt, b.StartedAt, b.Error = store.BackupFailed, at(h), at(h).Add(-time.Duration(p.DurationMS)*time.Millisecond), p.Error
			proj.Backup = &store.BackupUpdate{Kind: store.BackupEventFinished, Record: b}
		}
	case proto.BackupVerified:
		h = p.Header
		b := store.Backup{Path: p.Path, VerifiedAt: at(h)}
		if !p.OK {
			b.VerifiedAt, b.VerifyError = time.Time{}, p.Error
		}
		proj.Backup = &store.BackupUpdate{Kind: store.BackupEventVerified, Record: b}
	}
	return h, proj
}

// refreshPhase moves a Ready cluster to Degraded when a member is unhealthy
// and back when all are healthy again. Provisioning phases are the
// workflow's business.
func (p *Projection) refreshPhase(ctx context.Context, ns, project, name string) error {
	cs, err := p.st.FindClusters(ctx, ns, project, name)
	if err != nil || len(cs) != 1 {
		return err
	}
	c := cs[0]
	if c.Phase != store.PhaseReady && c.Phase != store.PhaseDegraded {
		return nil
	}
	nodes, err := p.st.ListNodes(ctx, c.ID)
	if err != nil {
		return err
	}
	healthy := 0
	for _, n := range nodes {
		if n.Healthy && n.MemberState == "running" {
			healthy++
		}
	}
	want := store.PhaseReady
	reason := ""
	if healthy < c.Replicas {
		want, reason = store.PhaseDegraded, fmt.Sprintf("%d of %d members healthy", healthy, c.Replicas)
	}
	if want == c.Phase {
		return nil
	}
	if err := p.st.SetClusterPhase(ctx, c.ID, want, reason, 0); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}
