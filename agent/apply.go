package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/ha"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/proto"
)

// apply carries out one action. It holds pgMu for the whole action so the
// fencer never races a promotion or a restart.
func (a *Agent) apply(ctx context.Context, act ha.Action, obs observation, v ha.View) error {
	if act.Kind == ha.Noop {
		return nil
	}
	if act.Kind == ha.Fence {
		a.fence(ctx, act.Reason)
		return nil
	}
	a.pgMu.Lock()
	defer a.pgMu.Unlock()
	switch act.Kind {
	case ha.Release:
		ok, err := a.dcs.ReleaseLeader(ctx, obs.snap.LeaderRev)
		if err != nil {
			return err
		}
		a.leaderRev = 0
		a.isLeader.Store(false)
		a.ownTerm.Store(0)
		a.fenced.Store(false)
		a.log.Info("leader key released", zap.Bool("held", ok))
		return nil
	case ha.Reclaim:
		return a.reclaim(ctx, obs)
	case ha.Promote:
		return a.promote(ctx, obs.snap.Leader.Term, obs.snap)
	case ha.Campaign:
		return a.campaign(ctx, v)
	case ha.StartReplica:
		a.fenced.Store(false)
		return a.startReplica(ctx, act.Target, obs.snap)
	case ha.Follow:
		up, err := upstreamOf(obs.snap, act.Target)
		if err != nil {
			return err
		}
		if err := a.pg.Follow(ctx, up); err != nil {
			return fmt.Errorf("follow %s: %w", act.Target, err)
		}
		a.upstream = act.Target
		return nil
	case ha.Rejoin:
		a.fenced.Store(false)
		if !v.WasPrimary && v.NotStreamingFor > 0 {
			a.rewoundNotStreaming = true
			a.notStreamingSince = time.Time{} // give the rewound replica a full period
		}
		return a.rejoin(ctx, act.Target, obs.snap, true)
	case ha.Reclone:
		a.rewoundNotStreaming = false
		a.notStreamingSince = time.Time{}
		return a.rejoin(ctx, act.Target, obs.snap, false)
	case ha.Handover:
		return a.handover(ctx, act.Target, obs)
	case ha.SyncWiden:
		return a.putSync(ctx, act.Standbys)
	case ha.SyncApply:
		if err := a.pg.SetSynchronousStandbys(ctx, act.Standbys); err != nil {
			return fmt.Errorf("set synchronous_standby_names: %w", err)
		}
		a.pgSync = slices.Clone(act.Standbys)
		a.syncAppliedLSN = uint64(obs.pg.WriteLSN)
		if st, err := a.pg.Status(ctx); err == nil {
			a.syncAppliedLSN = uint64(st.WriteLSN)
		}
		return nil
	case ha.SyncShrink:
		return a.putSync(ctx, act.Standbys)
	}
	return fmt.Errorf("unknown action %q", act.Kind)
}

func (a *Agent) putSync(ctx context.Context, standbys []string) error {
	s := dcs.SyncState{Leader: a.cfg.Node.Name, Term: a.term, Standbys: standbys}
	ok, err := a.dcs.PutIfLeader(ctx, a.leaderRev, a.keys.Sync(), s)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("sync key not written: no longer the leader")
	}
	return nil
}

func upstreamOf(snap dcs.Snapshot, node string) (postgres.Upstream, error) {
	if l := snap.Leader; l != nil && l.Node == node {
		return postgres.Upstream{Host: l.Host, Port: l.Port, Name: l.Node}, nil
	}
	if m, ok := snap.Members[node]; ok {
		return postgres.Upstream{Host: m.Host, Port: m.Port, Name: m.Node}, nil
	}
	return postgres.Upstream{}, fmt.Errorf("no address known for %s", node)
}

// startReplica starts PostgreSQL read-only, following target ("" = none).
func (a *Agent) startReplica(ctx context.Context, target string, snap dcs.Snapshot) error {
	var up *postgres.Upstream
	if target != "" {
		u, err := upstreamOf(snap, target)
		if err != nil {
			return err
		}
		up = &u
	}
	err := a.pg.Start(ctx, postgres.RoleReplica, up)
	if errors.Is(err, postgres.ErrAlreadyRunning) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("start replica: %w", err)
	}
	a.upstream = target
	return nil
}

// promote makes the local PostgreSQL writable; we already hold the leader
// key at term. In synchronous mode the standbys of the sync key are set
// first, so the very first commit after promotion waits for one of them;
// otherwise (or when the key lists no other node) synchronous_standby_names
// is emptied first, so no standby left over from an earlier term, and
// outside the key, is waited for. snap is the observation the claim was
// decided on (read under the claim's term CAS, so its sync key is the one
// the claim carried over); reading etcd again would only add a round trip
// to the write outage.
func (a *Agent) promote(ctx context.Context, term uint64, snap dcs.Snapshot) error {
	begin := time.Now()
	if !a.pg.Running() {
		if err := a.pg.Start(ctx, postgres.RoleReplica, nil); err != nil && !errors.Is(err, postgres.ErrAlreadyRunning) {
			return a.abandonLeadership(ctx, fmt.Errorf("start before promote: %w", err))
		}
	}
	var standbys []string
	if mode, _ := a.syncModeOf(snap); mode == string(config.SyncOn) && snap.Sync != nil {
		standbys = slices.DeleteFunc(slices.Clone(snap.Sync.Standbys), func(n string) bool { return n == a.cfg.Node.Name })
	}
	if !slices.Equal(standbys, a.pgSync) {
		if err := a.pg.SetSynchronousStandbys(ctx, standbys); err != nil {
			return a.abandonLeadership(ctx, fmt.Errorf("carry over synchronous standbys %v: %w", standbys, err))
		}
		a.pgSync = standbys
	}
	prepared := time.Now()
	// The marker goes first: if we crash mid-promotion, we rewind on return.
	if err := a.local.setWasPrimary(true, term); err != nil {
		return a.abandonLeadership(ctx, fmt.Errorf("write role file: %w", err))
	}
	marked := time.Now()
	if err := a.pg.Promote(ctx); err != nil {
		return a.abandonLeadership(ctx, fmt.Errorf("promote: %w", err))
	}
	a.log.Debug("promotion steps", zap.Duration("sync_standbys", prepared.Sub(begin)), zap.Duration("role_file", marked.Sub(prepared)), zap.Duration("pg_promote", time.Since(marked)))
	a.fenced.Store(false)
	a.upstream = ""
	return nil
}

// abandonLeadership releases the leader key after a failed promotion so a
// healthier member can take over, and returns cause.
func (a *Agent) abandonLeadership(ctx context.Context, cause error) error {
	if ctx.Err() != nil {
		// Cancelled (shutting down), not failed: keep the key for the
		// graceful hand-over.
		return cause
	}
	if a.leaderRev != 0 {
		// The history record of this term says the promotion never took
		// effect, in the same transaction that gives up the key.
		if _, err := a.dcs.ReleaseLeader(ctx, a.leaderRev, a.dcs.OpAbandonHistory(ctx, a.term, cause.Error())...); err != nil {
			a.log.Error("cannot release leader key after failed promotion", zap.Error(err))
		}
	}
	a.leaderRev = 0
	a.isLeader.Store(false)
	a.ownTerm.Store(0)
	return cause
}

// reclaim re-creates our leader key at the unchanged term after it lapsed
// during an etcd outage that failsafe mode bridged. If another node got
// there first, the next cycle fences us (writable without the key).
func (a *Agent) reclaim(ctx context.Context, obs observation) error {
	term := a.ownTerm.Load()
	st := obs.pg
	l := dcs.LeaderRecord{Node: a.cfg.Node.Name, Host: a.cfg.Node.Address, Port: a.cfg.Postgres.Port, APIURL: a.apiURL(), LSN: uint64(st.WriteLSN), Timeline: st.Timeline}
	rev, ok, err := a.dcs.ReclaimLeader(ctx, l, term)
	if err != nil {
		return err
	}
	if !ok {
		a.log.Warn("failsafe: could not re-take the leader key (another node has it, or the term moved)", zap.Uint64("term", term))
		return nil
	}
	a.leaderRev, a.term = rev, term
	a.isLeader.Store(true)
	a.wakeWatchers()
	a.noteRevision(rev)
	a.log.Info("failsafe: leader key re-taken at the same term after the etcd outage", zap.Uint64("term", term))
	a.publish(proto.TypeFailsafe, proto.Failsafe{State: proto.FailsafeReclaimed})
	return nil
}

// campaign takes the failover lock, re-checks on a fresh observation that we
// are still the best candidate, claims the leader key at term+1 with its
// history record, and promotes.
func (a *Agent) campaign(ctx context.Context, v ha.View) error {
	a.electMu.Lock()
	defer a.electMu.Unlock()
	start := time.Now()
	if sw := v.Switchover; sw == nil || !sw.Handover || sw.Expired || sw.To != a.cfg.Node.Name {
		// A failover: candidates take the failover lock in turn, so each
		// re-checks against the others' latest reports. The hand-over
		// target of a switchover is the only candidate while the hand-over
		// lasts and skips the lock (two etcd writes off the write outage);
		// the claim's compare on the term key keeps one winner either way.
		unlock, err := a.dcs.TryLock(ctx, a.keys.FailoverLock())
		if errors.Is(err, dcs.ErrLocked) {
			a.log.Info("failover lock held by another member; waiting for the new primary")
			return nil
		}
		if err != nil {
			return fmt.Errorf("failover lock: %w", err)
		}
		defer unlock()
	}
	snap, err := a.dcs.Snapshot(ctx)
	if err != nil {
		return err
	}
	st, err := a.pg.Status(ctx)
	if err != nil {
		return fmt.Errorf("re-check status: %w", err)
	}
	obs := observation{snap: snap, etcdOK: true, pg: st, now: time.Now()}
	if snap.Leader != nil {
		return nil
	}
	if again := ha.Decide(a.view(obs)); again.Kind != ha.Campaign {
		a.log.Info("re-check under the failover lock says no", zap.String("reason", again.Reason))
		return nil
	}
	reason, previous := "failover", ""
	var extra []dcs.Op
	if sw := snap.Switchover; sw != nil && sw.State == dcs.SwitchoverHandover && sw.To == a.cfg.Node.Name {
		reason = "switchover"
		extra = append(extra, dcs.OpDelete(a.keys.Switchover()))
	}
	if d := snap.Document; d != nil {
		previous = d.Leader
	}
	if mode, _ := a.syncModeOf(snap); mode == string(config.SyncOn) && snap.Sync != nil {
		// The new term's sync key never lists its own primary, and is written
		// in the claim's transaction so no reader sees a stale one.
		standbys := slices.DeleteFunc(slices.Clone(snap.Sync.Standbys), func(n string) bool { return n == a.cfg.Node.Name })
		extra = append(extra, dcs.OpPutJSON(a.keys.Sync(), dcs.SyncState{Leader: a.cfg.Node.Name, Term: snap.Term + 1, Standbys: standbys}))
	}
	l := dcs.LeaderRecord{Node: a.cfg.Node.Name, Host: a.cfg.Node.Address, Port: a.cfg.Postgres.Port, APIURL: a.apiURL(), LSN: uint64(st.LSN()), Timeline: st.Timeline}
	h := dcs.HistoryRecord{Previous: previous, Reason: reason, LSN: uint64(st.LSN()), Timeline: st.Timeline}
	rev, ok, err := a.dcs.ClaimLeader(ctx, l, snap.Term, snap.TermRev, h, extra...)
	if err != nil || !ok {
		return err
	}
	a.leaderRev, a.term = rev, snap.Term+1
	a.isLeader.Store(true)
	a.ownTerm.Store(a.term)
	a.wakeWatchers()
	a.log.Info("leader key claimed", zap.Uint64("term", a.term), zap.String("reason", reason), zap.String("previous", previous))
	if err := a.promote(ctx, a.term, snap); err != nil {
		return err
	}
	st, _ = a.pg.Status(ctx)
	dur := time.Since(start)
	// Both events belong to the new term, at the claim's revision.
	a.noteRevision(rev)
	a.mu.Lock()
	a.state.Term = a.term
	a.mu.Unlock()
	if sw := snap.Switchover; reason == "switchover" && sw != nil {
		dur = time.Since(time.UnixMilli(sw.HandoverMS))
		a.publish(proto.TypeSwitchover, proto.SwitchoverCompleted{From: sw.From, To: a.cfg.Node.Name, DurationMS: dur.Milliseconds()})
	}
	a.publish(proto.TypePrimaryChanged, proto.PrimaryChanged{Primary: a.cfg.Node.Name, PreviousPrimary: previous, Reason: reason, Timeline: st.Timeline, LSN: st.LSN().String(), DurationMS: dur.Milliseconds()})
	a.log.Info("promoted", zap.Uint64("term", a.term), zap.Uint32("timeline", st.Timeline), zap.String("lsn", st.LSN().String()), zap.Duration("took", time.Since(start)))
	return nil
}

// rejoin turns a former primary (or a diverged replica) into a replica of
// target: stop, pg_rewind, and a fresh clone if the rewind fails. With
// rewind false it re-clones at once (ha.Reclone: only for a node that is
// not a former primary, whose data holds nothing the primary lacks).
func (a *Agent) rejoin(ctx context.Context, target string, snap dcs.Snapshot, rewind bool) error {
	up, err := upstreamOf(snap, target)
	if err != nil {
		return err
	}
	if err := a.pg.Stop(ctx, postgres.StopFast); err != nil {
		return fmt.Errorf("stop before rejoining: %w", err)
	}
	if rewind {
		err = a.pg.Rewind(ctx, up)
		if err != nil {
			a.log.Warn("pg_rewind failed; re-cloning from the primary", zap.String("from", target), zap.Error(err))
		}
	}
	if !rewind || err != nil {
		if err := a.pg.RemoveDataDir(); err != nil {
			return fmt.Errorf("remove data dir for re-clone: %w", err)
		}
		if err := a.pg.BaseBackup(ctx, up); err != nil {
			return fmt.Errorf("re-clone from %s: %w", target, err)
		}
	}
	if err := a.local.setWasPrimary(false, snap.Term); err != nil {
		return err
	}
	if err := a.pg.Start(ctx, postgres.RoleReplica, &up); err != nil && !errors.Is(err, postgres.ErrAlreadyRunning) {
		return fmt.Errorf("start after rejoining: %w", err)
	}
	a.upstream = target
	if rewind {
		a.log.Info("rejoined as replica", zap.String("leader", target))
	} else {
		a.log.Info("re-cloned as replica", zap.String("leader", target))
	}
	return nil
}

// handover is a planned switchover from this primary to target: stop with a
// shutdown checkpoint (walsenders ship all WAL to connected standbys first),
// then record the final LSN and release the leader key in one transaction.
// Only target may then claim the key, after it received the final LSN.
func (a *Agent) handover(ctx context.Context, target string, obs observation) error {
	// A checkpoint while still writable leaves the shutdown checkpoint
	// little to do: it is the part of the hand-over during which no write
	// is accepted (Patroni does the same before a switchover).
	cctx, cancel := context.WithTimeout(ctx, 2*a.cfg.TTL)
	if err := a.pg.Checkpoint(cctx); err != nil {
		a.log.Warn("switchover: checkpoint before stopping failed; stopping anyway", zap.Error(err))
	}
	cancel()
	start := time.Now()
	if err := a.pg.Stop(ctx, postgres.StopFast); err != nil {
		return fmt.Errorf("switchover: stop primary (leader key kept): %w", err)
	}
	cd, err := a.pg.ControlData(ctx)
	if err != nil {
		return fmt.Errorf("switchover: read final LSN (leader key kept): %w", err)
	}
	sw := dcs.Switchover{From: a.cfg.Node.Name, To: target, State: dcs.SwitchoverHandover, FinalLSN: uint64(cd.CheckpointLSN) + 1, HandoverMS: time.Now().UnixMilli()}
	if old := obs.snap.Switchover; old != nil {
		sw.RequestedMS, sw.Reason = old.RequestedMS, old.Reason
	}
	ok, err := a.dcs.ReleaseLeader(ctx, a.leaderRev, dcs.OpPutJSON(a.keys.Switchover(), sw))
	if err != nil || !ok {
		return fmt.Errorf("switchover: release leader key: ok=%v: %w", ok, err)
	}
	a.leaderRev = 0
	a.isLeader.Store(false)
	a.ownTerm.Store(0)
	a.log.Info("switchover: handed over", zap.String("to", target), zap.String("final_lsn", cd.CheckpointLSN.String()), zap.Duration("took", time.Since(start)))
	return nil
}

// writeDocument keeps the whitepaper's cluster document current (primary only).
func (a *Agent) writeDocument(ctx context.Context, obs observation) {
	doc := dcs.ClusterDocument{
		Namespace: a.cfg.Cluster.Namespace, Project: a.cfg.Cluster.Project, ClusterName: a.cfg.Cluster.Name,
		Term: a.term, Leader: a.cfg.Node.Name, TTLSeconds: a.dcs.TTLSeconds(),
	}
	known := map[string]dcs.DocumentNode{}
	if d := obs.snap.Document; d != nil {
		for _, n := range d.Nodes {
			n.Status, n.Role = "Offline", "Unknown"
			known[n.Name] = n
		}
	}
	for name, m := range obs.snap.Members {
		role := "Replica"
		if name == a.cfg.Node.Name {
			role = "Primary"
		}
		known[name] = dcs.DocumentNode{Name: name, Status: "Online", IPAddress: m.Host, Port: m.Port, Role: role}
	}
	for _, n := range known {
		doc.Nodes = append(doc.Nodes, n)
	}
	slices.SortFunc(doc.Nodes, func(x, y dcs.DocumentNode) int { return compareStrings(x.Name, y.Name) })
	if sameDocument(doc, a.lastDoc) {
		return
	}
	written := doc
	doc.LastUpdated = time.Now().Unix()
	if ok, err := a.dcs.PutIfLeader(ctx, a.leaderRev, a.keys.State(), doc); err != nil || !ok {
		a.log.Debug("cluster document not written", zap.Bool("leader", ok), zap.Error(err))
		return
	}
	a.lastDoc = written
}

// sameDocument reports whether two cluster documents say the same, their
// LastUpdated aside. Every cycle of the leader compares (without
// formatting either): an unchanged document is not rewritten.
func sameDocument(x, y dcs.ClusterDocument) bool {
	return x.Namespace == y.Namespace && x.Project == y.Project && x.ClusterName == y.ClusterName &&
		x.Term == y.Term && x.Leader == y.Leader && x.TTLSeconds == y.TTLSeconds && slices.Equal(x.Nodes, y.Nodes)
}
