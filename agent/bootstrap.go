package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/ha"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/proto"
)

// ensureData makes sure this node has a data directory that belongs to the
// cluster, following the whitepaper's bootstrap (Op 2):
//
//   - primary: bootstrap lock, initialize marker, initdb, start, leader key
//     on our lease at term 1, cluster document, unlock, local lock file,
//     primary_changed event;
//   - replica: wait for a leader, pg_basebackup from it, start streaming,
//     register (member key, written by every cycle), local lock file.
//
// A node with a lock file and a data directory returns at once; the HA loop
// then starts PostgreSQL read-only and decides from there.
func (a *Agent) ensureData(ctx context.Context) error {
	delay := a.cfg.Health.Interval / 2
	for ctx.Err() == nil {
		done, err := a.bootstrapStep(ctx)
		switch {
		case done && err == nil:
			return nil
		case err != nil:
			// initdb, clone or start failed: nothing is half-registered in
			// etcd, so retry with a growing delay rather than give up.
			a.log.Error("bootstrap step failed; retrying", zap.Duration("in", delay), zap.Error(err))
			delay = min(2*delay, 5*time.Second)
		default:
			delay = a.cfg.Health.Interval / 2
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
	return ctx.Err()
}

// bootstrapStep observes the local data directory and etcd, asks ha.Decide
// (View.Bootstrapping) for one step and takes it. It reports whether the
// bootstrap is complete.
func (a *Agent) bootstrapStep(ctx context.Context) (bool, error) {
	v, snap, err := a.bootstrapView(ctx)
	if err != nil {
		return true, err
	}
	act := ha.Decide(v)
	if act.Kind == ha.Noop {
		a.log.Info("bootstrap: waiting", zap.String("reason", act.Reason))
	} else if act.Kind != ha.BootstrapDone {
		a.log.Info("bootstrap step", zap.String("action", string(act.Kind)), zap.String("target", act.Target), zap.String("reason", act.Reason))
	}
	switch act.Kind {
	case ha.BootstrapDone:
		return true, nil
	case ha.Adopt:
		return true, a.local.writeBootstrapLock(BootstrapLock{Cluster: clusterName(a.cfg), Node: a.cfg.Node.Name, SystemID: v.LocalSystemID, Role: "replica"})
	case ha.DiscardData:
		if err := a.pg.Stop(ctx, postgres.StopFast); err != nil {
			return false, err
		}
		if err := a.pg.RemoveDataDir(); err != nil {
			return true, err
		}
		return false, nil
	case ha.ForgetMarker:
		if err := a.local.removeBootstrapLock(); err != nil {
			return true, err
		}
		return false, nil
	case ha.Initialize:
		return a.bootstrapPrimary(ctx)
	case ha.Release:
		_, err := a.dcs.ReleaseLeader(ctx, snap.LeaderRev)
		return false, err
	case ha.Clone:
		return true, a.cloneReplica(ctx, snap)
	case ha.Noop:
		if !v.EtcdOK {
			return false, errors.New(act.Reason)
		}
		return false, nil
	}
	return false, fmt.Errorf("bootstrap: unexpected action %q", act.Kind)
}

// bootstrapView is the bootstrap phase's input to ha.Decide: the local
// marker and data directory (with its system identifier when the cluster
// is initialized) and the etcd snapshot. The error is only the marker
// file's (unreadable): etcd errors become EtcdOK false.
func (a *Agent) bootstrapView(ctx context.Context) (ha.View, dcs.Snapshot, error) {
	_, haveLock, err := a.local.bootstrapLock()
	if err != nil {
		return ha.View{}, dcs.Snapshot{}, fmt.Errorf("bootstrap lock file: %w", err)
	}
	v := ha.View{Self: a.cfg.Node.Name, Bootstrapping: true, BootstrapMarker: haveLock, LocalInitialized: a.pg.IsInitialized()}
	if v.BootstrapMarker && v.LocalInitialized {
		return v, dcs.Snapshot{}, nil // done: no need to ask etcd
	}
	snap, err := a.dcs.Snapshot(ctx)
	if err != nil {
		a.log.Warn("bootstrap: etcd read failed", zap.Error(err))
		return v, snap, nil
	}
	v.EtcdOK, v.Initialized, v.ClusterSystemID = true, snap.Initialized, snap.SystemID
	if l := snap.Leader; l != nil {
		v.Leader = l.Node
		v.IsLeader = l.Node == a.cfg.Node.Name && snap.LeaderLease == a.dcs.LeaseID()
	}
	if v.LocalInitialized && v.Initialized {
		cd, err := a.pg.ControlData(ctx)
		if err != nil {
			a.log.Warn("bootstrap: cannot read the data directory's control file", zap.Error(err))
			v.ControlDataErr = true
		} else {
			v.LocalSystemID = cd.SystemIdentifier
		}
	}
	return v, snap, nil
}

func (a *Agent) bootstrapPrimary(ctx context.Context) (bool, error) {
	lockedUnlock, err := a.dcs.TryLock(ctx, a.keys.BootstrapLock())
	if errors.Is(err, dcs.ErrLocked) {
		a.log.Info("another member is bootstrapping the cluster; waiting for its leader key")
		return false, nil
	}
	if err != nil {
		return false, err
	}
	unlock := sync.OnceFunc(lockedUnlock)
	defer unlock()
	// initdb or a restore can outlast the TTL on a slow host: keep the
	// lease (and with it the lock and the fencer's proof) alive meanwhile.
	stopRenewing := a.keepLeaseAlive(ctx, "bootstrap")
	defer stopRenewing()
	snap, err := a.dcs.Snapshot(ctx)
	if err != nil || snap.Initialized || snap.Leader != nil {
		return false, err
	}
	a.log.Info("bootstrapping the cluster as its first primary")
	// Whitepaper: "check if there is a backup that should be used".
	if !a.pg.IsInitialized() {
		restored, err := a.restoreForBootstrap(ctx)
		if err != nil {
			return false, fmt.Errorf("bootstrap from backup: %w", err)
		}
		if !restored {
			if err := a.pg.Initdb(ctx); err != nil {
				return true, fmt.Errorf("initdb: %w", err)
			}
		}
	}
	if err := a.pg.Start(ctx, postgres.RolePrimary, nil); err != nil && !errors.Is(err, postgres.ErrAlreadyRunning) {
		return true, fmt.Errorf("start new primary: %w", err)
	}
	if err := a.pg.Bootstrap(ctx); err != nil {
		return true, fmt.Errorf("create roles: %w", err)
	}
	if a.bk != nil && a.bk.login != nil {
		// Before any replica clones, so replicas can run backups at once.
		if err := a.pg.EnsureRole(ctx, *a.bk.login, []string{"REPLICATION"}, []string{"pg_read_all_data"}); err != nil {
			return true, fmt.Errorf("create backup role: %w", err)
		}
	}
	cd, err := a.pg.ControlData(ctx)
	if err != nil {
		return true, err
	}
	st, _ := a.pg.Status(ctx)
	if err := a.local.setWasPrimary(true, 1); err != nil {
		return true, err
	}
	l := dcs.LeaderRecord{Node: a.cfg.Node.Name, Host: a.cfg.Node.Address, Port: a.cfg.Postgres.Port, APIURL: a.apiURL(), LSN: uint64(st.WriteLSN), Timeline: st.Timeline}
	doc := dcs.ClusterDocument{Namespace: a.cfg.Cluster.Namespace, Project: a.cfg.Cluster.Project, ClusterName: a.cfg.Cluster.Name, Term: 1, Leader: a.cfg.Node.Name,
		LastUpdated: time.Now().Unix(), TTLSeconds: a.dcs.TTLSeconds(),
		Nodes: []dcs.DocumentNode{{Name: a.cfg.Node.Name, Status: "Online", IPAddress: a.cfg.Node.Address, Port: a.cfg.Postgres.Port, Role: "Primary"}}}
	rev, ok, err := a.dcs.Bootstrap(ctx, cd.SystemIdentifier, l, doc)
	if err != nil {
		// The commit may have happened before the connection broke: find
		// out before touching the data directory.
		rev, ok, err = a.bootstrapOutcome(ctx, cd.SystemIdentifier)
		if err != nil {
			return false, fmt.Errorf("bootstrap transaction outcome unknown (data directory kept): %w", err)
		}
	}
	if !ok {
		// Someone else initialised the cluster: our data is not theirs.
		a.log.Warn("bootstrap transaction lost; discarding the local data directory")
		_ = a.pg.Stop(ctx, postgres.StopImmediate)
		if rerr := a.pg.RemoveDataDir(); rerr != nil {
			return true, rerr
		}
		return false, err
	}
	a.leaderRev, a.term = rev, 1
	a.isLeader.Store(true)
	a.wakeWatchers()
	unlock()
	if err := a.local.writeBootstrapLock(BootstrapLock{Cluster: clusterName(a.cfg), Node: a.cfg.Node.Name, SystemID: cd.SystemIdentifier, Role: "primary"}); err != nil {
		return true, err
	}
	a.noteRevision(rev)
	a.mu.Lock()
	a.state.Term = 1
	a.mu.Unlock()
	a.publish(proto.TypePrimaryChanged, proto.PrimaryChanged{Primary: a.cfg.Node.Name, Reason: "bootstrap", Timeline: st.Timeline, LSN: st.WriteLSN.String()})
	a.log.Info("cluster bootstrapped", zap.String("system_id", cd.SystemIdentifier), zap.Uint64("term", 1))
	return true, nil
}

// bootstrapOutcome re-reads etcd after an ambiguous bootstrap transaction:
// it succeeded if the marker holds our system identifier and the leader key
// is ours; it lost if the cluster is initialized otherwise.
func (a *Agent) bootstrapOutcome(ctx context.Context, systemID string) (int64, bool, error) {
	var lastErr error
	for i := 0; i < 5 && ctx.Err() == nil; i++ {
		snap, err := a.dcs.Snapshot(ctx)
		if err != nil {
			lastErr = err
			time.Sleep(a.cfg.Etcd.RequestTimeout)
			continue
		}
		if !snap.Initialized {
			return 0, false, errors.New("not committed yet; retry")
		}
		mine := snap.SystemID == systemID && snap.Leader != nil && snap.Leader.Node == a.cfg.Node.Name && snap.LeaderLease == a.dcs.LeaseID()
		return snap.LeaderRev, mine, nil
	}
	return 0, false, lastErr
}

func (a *Agent) cloneReplica(ctx context.Context, snap dcs.Snapshot) error {
	l := snap.Leader
	up := postgres.Upstream{Host: l.Host, Port: l.Port, Name: l.Node}
	a.log.Info("cloning from the primary", zap.String("leader", l.Node))
	if a.pg.IsInitialized() {
		if err := a.pg.RemoveDataDir(); err != nil {
			return err
		}
	}
	restored, err := a.restoreReplica(ctx, snap.SystemID)
	if err != nil {
		a.log.Warn("rebuilding the replica from backup failed; cloning from the primary", zap.Error(err))
	}
	if !restored {
		if err := a.pg.BaseBackup(ctx, up); err != nil {
			_ = a.pg.RemoveDataDir()
			return fmt.Errorf("pg_basebackup from %s: %w", l.Node, err)
		}
	}
	if err := a.pg.Start(ctx, postgres.RoleReplica, &up); err != nil {
		return fmt.Errorf("start replica: %w", err)
	}
	a.upstream = l.Node
	if err := a.local.setWasPrimary(false, snap.Term); err != nil {
		return err
	}
	return a.local.writeBootstrapLock(BootstrapLock{Cluster: clusterName(a.cfg), Node: a.cfg.Node.Name, SystemID: snap.SystemID, Role: "replica"})
}
