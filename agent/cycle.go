package agent

import (
	"context"
	"errors"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/ha"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/handlers"
	"github.com/dbpilot/dbpilot/proto"
)

// observation is what one cycle read: the etcd snapshot and the local status.
type observation struct {
	snap   dcs.Snapshot
	etcdOK bool
	pg     postgres.Status
	now    time.Time
}

// cycle runs one HA cycle: renew the lease, read etcd once, read the local
// PostgreSQL, publish our member key, decide, apply, record. A failed step is
// logged and the next cycle starts from a fresh observation. It reports
// whether the cluster is in transition (no leader key): the loop then polls
// faster, since what it waits for (a final LSN, a competitor's report) does
// not always come with an etcd event.
func (a *Agent) cycle(ctx context.Context) (transition bool) {
	a.failpoint(ctx, FailpointStallLoop)
	obs := a.observe(ctx)
	if ctx.Err() != nil {
		// Stopping: what this cycle read is cut short by the cancellation
		// (PostgreSQL "stopped", etcd "unreachable"), and acting on it
		// would, say, abandon the leader key before the graceful
		// hand-over. Shutdown takes it from here.
		return false
	}
	a.publishMember(ctx, obs)
	v := a.view(obs)
	act := ha.Decide(v)
	if act.Kind == ha.Noop {
		a.log.Debug("ha action", zap.String("action", string(act.Kind)), zap.String("reason", act.Reason))
	} else {
		a.log.Info("ha action", zap.String("action", string(act.Kind)), zap.String("target", act.Target), zap.Strings("standbys", act.Standbys), zap.String("reason", act.Reason), zap.Uint64("term", obs.snap.Term))
		a.metrics.HAActions.WithLabelValues(string(act.Kind)).Inc()
	}
	if ctx.Err() != nil {
		return false
	}
	stopRenewing := a.renewDuring(ctx, act)
	err := a.apply(ctx, act, obs, v)
	stopRenewing()
	if err != nil {
		a.log.Error("ha action failed", zap.String("action", string(act.Kind)), zap.String("target", act.Target), zap.Error(err))
	} else if act.Kind == ha.SyncWiden || act.Kind == ha.SyncApply {
		// Widen, apply and shrink are one change in steps: take the next
		// step now rather than an interval later, so a new standby
		// protects commits (and a lost one stops blocking them) at once.
		a.kick()
	}
	a.record(ctx, obs, act)
	a.keepSlots(ctx, obs)
	a.wakeWatchers()
	return obs.etcdOK && v.Initialized && v.Leader == "" && !a.isLeader.Load()
}

// renewDuring keeps renewing the lease every health interval while a
// non-trivial action runs (a promotion under load, a rewind, a clone), so a
// bounded but slow action does not look like a stuck loop to the fencer.
// Every step of an action has its own deadline; the fencer still acts if etcd
// stops answering. It returns the function that stops the renewals.
func (a *Agent) renewDuring(ctx context.Context, act ha.Action) func() {
	if act.Kind == ha.Noop || act.Kind == ha.Fence {
		return func() {}
	}
	return a.keepLeaseAlive(ctx, string(act.Kind))
}

// keepLeaseAlive renews the lease every health interval until the
// returned function is called (which waits for the renewer to stop), so
// a slow step (initdb, a restore, pg_rewind) does not let the lease, and
// the proof the fencer relies on, run out. what names the step in logs.
//
// While this node holds the leader key the renewals stop after
// leaderActionBudget: an action that hangs longer is a stuck loop, and the
// key must lapse so that a healthy replica takes over.
func (a *Agent) keepLeaseAlive(ctx context.Context, what string) func() {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(a.cfg.Health.Interval)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				if a.isLeader.Load() && time.Since(start) > a.leaderActionBudget() {
					a.log.Error("action still running after its budget while holding the leader key: no longer renewing the lease, leadership will lapse",
						zap.String("action", what), zap.Duration("budget", a.leaderActionBudget()))
					return
				}
				if err := a.dcs.Renew(rctx); err != nil && rctx.Err() == nil {
					a.log.Warn("lease renewal during action failed", zap.String("action", what), zap.Error(err))
				}
				a.wakeWatchers()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// leaderActionBudget bounds how long one action may keep the HA lease
// alive while this node holds the leader key: a promotion, a hand-over or
// a synchronous-standby change, each of whose steps has its own deadline.
func (a *Agent) leaderActionBudget() time.Duration { return 4*a.cfg.TTL + 10*time.Second }

func (a *Agent) observe(ctx context.Context) observation {
	obs := observation{now: time.Now()}
	if _, fresh, err := a.dcs.Session(ctx); err == nil {
		if fresh {
			a.leaderRev = 0 // a new lease: any leader key we held went with the old one
		}
		rerr := a.dcs.Renew(ctx)
		if errors.Is(rerr, dcs.ErrLeaseLost) {
			a.leaderRev = 0
		}
		a.wakeWatchers()
		snap, serr := a.dcs.Snapshot(ctx)
		obs.snap, obs.etcdOK = snap, serr == nil && rerr == nil
		if serr == nil {
			a.noteRevision(snap.Revision)
			if werr := a.dcs.WarmLocks(ctx); werr != nil {
				a.log.Debug("lock session not started", zap.Error(werr))
			}
		}
		if serr != nil || rerr != nil {
			a.log.Warn("etcd cycle failed", zap.NamedError("renew", rerr), zap.NamedError("read", serr))
		}
	} else {
		a.log.Warn("etcd unreachable", zap.Error(err))
	}
	st, err := a.pg.Status(ctx)
	if err != nil {
		a.log.Debug("postgres status", zap.Error(err))
	}
	obs.pg = st
	if obs.etcdOK {
		l := obs.snap.Leader
		mine := l != nil && l.Node == a.cfg.Node.Name && obs.snap.LeaderLease == a.dcs.LeaseID()
		if mine {
			a.leaderRev, a.term = obs.snap.LeaderRev, l.Term
			if !a.fenced.Load() {
				a.ownTerm.Store(l.Term)
			}
		} else {
			a.leaderRev = 0
			a.term = obs.snap.Term
		}
		a.isLeader.Store(mine)
		a.leaderless.Store(l == nil)
		switch {
		case l == nil && a.leaderGoneRev == 0:
			a.leaderGoneRev, a.leaderGoneAt = obs.snap.Revision, obs.now
		case l != nil:
			a.leaderGoneRev = 0
		}
		a.noteSpec(obs.snap)
		a.noteFailsafeView(obs.snap)
	}
	return obs
}

// syncModeOf is the synchronous_mode snap asks for ("on" | "off") and
// where it comes from: the spec key's when it sets one, else the local
// configuration's.
func (a *Agent) syncModeOf(snap dcs.Snapshot) (mode, source string) {
	if sp := snap.Spec; sp != nil && sp.SynchronousMode != "" {
		return sp.SynchronousMode, "spec"
	}
	return string(a.cfg.SynchronousMode), "config"
}

// syncOn is the effective synchronous mode of an observation; without an
// etcd read, the last one known.
func (a *Agent) syncOn(obs observation) bool {
	if obs.etcdOK {
		mode, _ := a.syncModeOf(obs.snap)
		return mode == string(config.SyncOn)
	}
	return a.syncMode == string(config.SyncOn)
}

// noteSpec logs the spec key once per change (a malformed one as a
// warning: it is ignored, as if absent) and the effective
// synchronous_mode when it changes.
func (a *Agent) noteSpec(snap dcs.Snapshot) {
	if snap.SpecRev != a.specRev {
		switch {
		case snap.SpecErr != nil:
			a.log.Warn("ignoring the malformed spec key: acting on the local configuration as if there were none; the control plane must rewrite it",
				zap.Int64("revision", snap.SpecRev), zap.Error(snap.SpecErr))
		case snap.Spec != nil:
			a.log.Info("cluster spec read", zap.Int64("revision", snap.SpecRev),
				zap.String("synchronous_mode", snap.Spec.SynchronousMode), zap.Strings("nodes", snap.Spec.Nodes))
		default:
			a.log.Info("spec key removed: acting on the local configuration")
		}
		a.specRev = snap.SpecRev
	}
	if mode, source := a.syncModeOf(snap); mode != a.syncMode {
		a.log.Info("synchronous_mode changed", zap.String("from", a.syncMode), zap.String("to", mode), zap.String("source", source))
		a.syncMode = mode
	}
}

func localRole(st postgres.Status) ha.Role {
	switch {
	case !st.Running || !st.Accepting:
		return ha.RoleStopped
	case st.InRecovery:
		return ha.RoleReplica
	default:
		return ha.RolePrimary
	}
}

func (a *Agent) healthy(st postgres.Status) bool {
	return st.Running && st.Accepting && a.handlerHealthy.Load()
}

func (a *Agent) lagBytes(obs observation) int64 {
	st := obs.pg
	if !st.Running || !st.InRecovery {
		return 0
	}
	leaderLSN := obs.snap.OptimeLSN
	if l := obs.snap.Leader; l != nil && l.LSN > leaderLSN {
		leaderLSN = l.LSN
	}
	if leaderLSN == 0 {
		return -1
	}
	if mine := uint64(st.LSN()); leaderLSN > mine {
		return int64(leaderLSN - mine)
	}
	return 0
}

// lagSeconds is the replica's replay lag in seconds (0 on a primary).
func lagSeconds(st postgres.Status) float64 {
	if !st.Running || !st.InRecovery {
		return 0
	}
	return st.ReplayLagSeconds
}

func (a *Agent) memberState(obs observation) string {
	switch {
	case a.fenced.Load():
		return "fenced"
	case !obs.pg.Running:
		return "stopped"
	case !obs.pg.Accepting:
		return "starting"
	case !a.healthy(obs.pg):
		return "unhealthy"
	default:
		return "running"
	}
}

// publishMember refreshes our member key: role, health, LSN, lag, timestamp.
func (a *Agent) publishMember(ctx context.Context, obs observation) {
	if !obs.etcdOK {
		return
	}
	m := dcs.Member{
		Node: a.cfg.Node.Name, Role: string(localRole(obs.pg)), State: a.memberState(obs), Healthy: a.healthy(obs.pg),
		Running: obs.pg.Running, Streaming: obs.pg.Streaming, Host: a.cfg.Node.Address, Port: a.cfg.Postgres.Port,
		APIURL: a.apiURL(), LSN: uint64(obs.pg.LSN()), Timeline: obs.pg.Timeline, LagBytes: a.lagBytes(obs), LagSeconds: lagSeconds(obs.pg),
		NoFailover: a.cfg.Tags.NoFailover, Priority: a.cfg.Tags.PriorityValue(), Upstream: a.upstream,
		SynchronousMode: a.syncMode, Synchronous: a.synchronous(obs.pg),
	}
	if to, until := a.promise(obs.now); to != "" {
		m.FailsafeFor, m.FailsafeUntilMS = to, until.UnixMilli()
	}
	if a.memberCurrent(obs, m) {
		// Unchanged and recent: the lease renewal keeps it alive.
	} else if err := a.dcs.PutMember(ctx, m); err != nil {
		a.log.Warn("member key not refreshed", zap.Error(err))
	} else {
		a.memberLease = a.dcs.LeaseID()
	}
	if l := obs.snap.Leader; a.isLeader.Load() && l != nil && obs.pg.Running && !obs.pg.InRecovery &&
		(l.LSN != uint64(obs.pg.WriteLSN) || l.Timeline != obs.pg.Timeline) {
		// Only when the position moved: an idle primary writes nothing but
		// its member key.
		rec := *l
		rec.LSN, rec.Timeline = uint64(obs.pg.WriteLSN), obs.pg.Timeline
		if ok, err := a.dcs.UpdateLeader(ctx, rec, a.leaderRev); err != nil || !ok {
			a.log.Warn("leader value not refreshed", zap.Bool("still_leader", ok), zap.Error(err))
		}
	}
}

// memberRefresh is how old our member key may be before an unchanged one
// is rewritten anyway. Other members count a member Stale once its key is
// older than 2 × health.interval + etcd.request_timeout (view's grace), so
// rewriting it when it is at least health.interval + request_timeout/2 old
// (every other cycle when idle) leaves it at most about 2 × interval old
// when read, a margin of one request timeout.
func (a *Agent) memberRefresh() time.Duration {
	return a.cfg.Health.Interval + a.cfg.Etcd.RequestTimeout/2
}

// memberCurrent reports whether our member key, as this cycle read it,
// already says m (its timestamp aside), on our current lease, and is
// younger than memberRefresh, so that the Put can be skipped. It never
// skips while the cluster is in transition: without a leader key (an
// election compares members' keys written after the leader vanished,
// ha.Member.Fresh) or with a switchover pending.
func (a *Agent) memberCurrent(obs observation, m dcs.Member) bool {
	if obs.snap.Leader == nil || obs.snap.Switchover != nil || a.memberLease != a.dcs.LeaseID() {
		return false
	}
	cur, ok := obs.snap.Members[m.Node]
	if !ok || obs.now.Sub(time.UnixMilli(cur.UpdatedMS)) >= a.memberRefresh() {
		return false
	}
	cur.UpdatedMS, cur.Revision = 0, 0
	return cur == m
}

// synchronous reports whether this node is a primary holding the leader
// key whose PostgreSQL waits for a standby on every commit. pgSync is only
// set after the sync key lists its standbys (ha: widen before apply; a
// promotion carries the key's set over), so a node never reports itself
// synchronous before the key is set.
func (a *Agent) synchronous(st postgres.Status) bool {
	return a.isLeader.Load() && localRole(st) == ha.RolePrimary && len(a.pgSync) > 0
}

// view turns an observation into the pure policy's input.
func (a *Agent) view(obs observation) ha.View {
	st, snap := obs.pg, obs.snap
	role := localRole(st)
	v := ha.View{
		Self: a.cfg.Node.Name, NoFailover: a.cfg.Tags.NoFailover, Priority: a.cfg.Tags.PriorityValue(),
		LocalInitialized: a.pg.IsInitialized(), LocalRole: role, Healthy: a.healthy(st),
		Streaming: st.Streaming, Upstream: a.upstream, LocalLSN: uint64(st.LSN()),
		WasPrimary: a.formerPrimary(role, snap.Term), Fenced: a.fenced.Load(),
		EtcdOK: obs.etcdOK, Initialized: snap.Initialized, IsLeader: a.isLeader.Load(),
		Term: a.clusterTerm(obs), OwnTerm: a.ownTerm.Load(), FailsafeLeft: a.failsafeLeft(obs.now), Promised: a.promised(obs.now),
		LeaseLeft: a.dcs.LeaseLeft(obs.now), FenceMargin: a.fenceMargin(), LeaderLSN: snap.OptimeLSN,
		SyncMode: a.syncOn(obs), PGSyncStandbys: a.pgSync,
		MaxLag: a.cfg.MaximumLagOnFailover, RejoinAfter: 3 * a.cfg.TTL,
	}
	if snap.Leader != nil {
		v.Leader = snap.Leader.Node
	}
	if role == ha.RoleReplica && !st.Streaming {
		if a.notStreamingSince.IsZero() {
			a.notStreamingSince = obs.now
		}
		v.NotStreamingFor = obs.now.Sub(a.notStreamingSince)
	} else {
		a.notStreamingSince = time.Time{}
		if st.Streaming {
			a.rewoundNotStreaming = false
		}
	}
	v.RewoundNotStreaming = a.rewoundNotStreaming
	if snap.Spec != nil {
		v.SpecNodes = snap.Spec.Nodes
	}
	if snap.Sync != nil {
		v.SyncStandbys = slices.DeleteFunc(slices.Clone(snap.Sync.Standbys), func(n string) bool { return n == v.Self && v.IsLeader })
	}
	grace := 2*a.cfg.Health.Interval + a.cfg.Etcd.RequestTimeout
	for name, m := range snap.Members {
		if name == v.Self {
			continue
		}
		v.Members = append(v.Members, ha.Member{
			Name: name, Role: ha.Role(m.Role), Healthy: m.Healthy, Running: m.Running, Streaming: m.Streaming,
			NoFailover: m.NoFailover, Priority: m.Priority, LSN: m.LSN,
			Fresh:            a.leaderGoneRev != 0 && m.Revision > a.leaderGoneRev,
			Stale:            obs.now.Sub(time.UnixMilli(m.UpdatedMS)) > grace && (a.leaderGoneAt.IsZero() || obs.now.Sub(a.leaderGoneAt) > grace),
			FailsafePromised: m.FailsafeFor != "" && time.UnixMilli(m.FailsafeUntilMS).After(obs.now),
		})
	}
	slices.SortFunc(v.Members, func(x, y ha.Member) int { return compareStrings(x.Name, y.Name) })
	if v.IsLeader && role == ha.RolePrimary {
		for _, r := range st.Replicas {
			v.Replicas = append(v.Replicas, ha.Replica{Name: r.Name, Streaming: r.State == "streaming", FlushLSN: uint64(r.FlushLSN)})
		}
		v.SyncAppliedLSN = a.syncAppliedLSN
	}
	if sw := snap.Switchover; sw != nil && (sw.State == dcs.SwitchoverRequested || sw.State == dcs.SwitchoverHandover) {
		v.Switchover = &ha.Switchover{From: sw.From, To: sw.To, Handover: sw.State == dcs.SwitchoverHandover, FinalLSN: sw.FinalLSN}
		if sw.State == dcs.SwitchoverHandover && obs.now.Sub(time.UnixMilli(sw.HandoverMS)) > 2*a.cfg.TTL {
			v.Switchover.Expired = true
		}
	}
	return v
}

// clusterTerm is the cluster's term as of obs (the last known one when
// etcd could not be read).
func (a *Agent) clusterTerm(obs observation) uint64 {
	if obs.etcdOK {
		return obs.snap.Term
	}
	a.fs.mu.Lock()
	defer a.fs.mu.Unlock()
	return a.fs.term
}

// formerPrimary reports whether this data directory was writable under an
// older term than the cluster's current one: someone was promoted after us,
// so our WAL may have diverged and we must rewind before following anyone or
// standing for election. The primary of the current term (fenced during an
// etcd outage, say) is not "former": its data is the newest there is, and
// it may take the leader key back.
func (a *Agent) formerPrimary(role ha.Role, clusterTerm uint64) bool {
	m := a.local.role()
	return m.WasPrimary && role != ha.RolePrimary && (clusterTerm == 0 || m.Term < clusterTerm)
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// record updates what the HTTP endpoint and metrics show, and fires onChange
// and events on role or leader changes, in the order observed.
func (a *Agent) record(ctx context.Context, obs observation, act ha.Action) {
	st := obs.pg
	if act.Kind != ha.Noop || a.fenced.Load() {
		// The action changed the database: show what it is now.
		st, _ = a.pg.Status(ctx)
	}
	role := localRole(st)
	leader := ""
	if obs.snap.Leader != nil {
		leader = obs.snap.Leader.Node
	}
	if a.isLeader.Load() {
		leader = a.cfg.Node.Name
	}
	obs.pg = st
	lag := a.lagBytes(obs)
	memberState := a.memberState(obs)
	roleName := map[ha.Role]string{ha.RolePrimary: "primary", ha.RoleReplica: "replica", ha.RoleStopped: "unknown"}[role]
	healthy := a.healthy(st)
	a.mu.Lock()
	a.state.Role = roleName
	a.state.Healthy = healthy
	a.state.Writable = role == ha.RolePrimary
	a.state.Streaming = st.Streaming
	a.state.LagBytes = lag
	a.state.LSN = st.LSN().String()
	a.state.Timeline = st.Timeline
	a.state.Leader = leader
	a.state.State = memberState
	if obs.etcdOK {
		a.state.Term = obs.snap.Term
		if a.isLeader.Load() {
			a.state.Term = a.term
		}
		a.termKnown.Store(true)
	}
	a.state.UpdatedAt = obs.now
	a.replicas = st.Replicas
	a.syncModeSeen = a.syncMode
	term := a.state.Term
	a.mu.Unlock()

	a.metrics.SetRole(roleName)
	a.metrics.Term.Set(float64(term))
	a.metrics.LagBytes.Set(float64(lag))
	a.metrics.LeaseLeft.Set(a.dcs.LeaseLeft(time.Now()).Seconds())
	standbys := 0
	if a.synchronous(st) {
		standbys = len(a.pgSync)
	}
	a.metrics.SetSynchronous(a.syncMode == string(config.SyncOn), standbys)
	if healthy {
		a.metrics.Healthy.Set(1)
	} else {
		a.metrics.Healthy.Set(0)
	}

	if (role != a.lastRole && role != ha.RoleStopped) || (obs.etcdOK && leader != a.lastLeader) {
		reason := act.Reason
		a.log.Info("role or leader changed", zap.String("role", string(role)), zap.String("leader", leader), zap.String("previous_leader", a.lastLeader), zap.Uint64("term", term))
		a.hooks.NotifyChange(handlers.Env{Event: "onChange", Role: string(role), Cluster: clusterName(a.cfg), Node: a.cfg.Node.Name, Leader: leader, Term: term, Reason: reason})
		a.lastLeader = leader
	}
	if role != a.lastRole || memberState != a.lastMemberState {
		a.publish(proto.TypeMemberState, proto.MemberState{Role: roleName, State: memberState, Healthy: healthy, LSN: st.LSN().String(), LagBytes: lag, Timeline: st.Timeline})
		a.lastRole, a.lastMemberState = role, memberState
	}
	if a.isLeader.Load() && obs.etcdOK {
		a.writeDocument(ctx, obs)
	}
}
