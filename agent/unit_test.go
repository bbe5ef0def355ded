package agent

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/ha"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/agent/report"
)

// Unit tests of the agent's translation between observations, ha.Decide
// and actions, on fakes of the database and the coordinator. The
// integration tests (integration_test.go, faults_integration_test.go) run
// the same paths on real PostgreSQL and etcd.

// fakeDB is a database whose calls are recorded; methods a test does not
// expect panic through the nil embedded interface.
type fakeDB struct {
	database
	status   postgres.Status
	running  bool
	calls    []string
	syncSet  []string
	promoted bool
}

func (f *fakeDB) IsInitialized() bool { return true }
func (f *fakeDB) Running() bool       { return f.running }
func (f *fakeDB) Status(context.Context) (postgres.Status, error) {
	f.calls = append(f.calls, "status")
	return f.status, nil
}
func (f *fakeDB) SetSynchronousStandbys(_ context.Context, names []string) error {
	f.calls = append(f.calls, "set_sync")
	f.syncSet = slices.Clone(names)
	return nil
}
func (f *fakeDB) Promote(context.Context) error {
	f.calls = append(f.calls, "promote")
	f.promoted = true
	f.status.InRecovery = false
	return nil
}

// fakeCoord is a coordinator serving a fixed snapshot and recording writes.
type fakeCoord struct {
	coordinator
	snap       dcs.Snapshot
	locks      []string
	claims     int
	claimExtra []dcs.Op
	syncPuts   []dcs.SyncState
}

func (f *fakeCoord) LeaseID() int64                                 { return 7 }
func (f *fakeCoord) LeaseLeft(time.Time) time.Duration              { return 4 * time.Second }
func (f *fakeCoord) Snapshot(context.Context) (dcs.Snapshot, error) { return f.snap, nil }
func (f *fakeCoord) TryLock(_ context.Context, pfx string) (func(), error) {
	f.locks = append(f.locks, pfx)
	return func() {}, nil
}
func (f *fakeCoord) ClaimLeader(_ context.Context, _ dcs.LeaderRecord, prevTerm uint64, _ int64, _ dcs.HistoryRecord, extra ...dcs.Op) (int64, bool, error) {
	f.claims++
	f.claimExtra = extra
	return 100, true, nil
}
func (f *fakeCoord) PutIfLeader(_ context.Context, _ int64, _ string, value any) (bool, error) {
	f.syncPuts = append(f.syncPuts, value.(dcs.SyncState))
	return true, nil
}

func unitAgent(t *testing.T, db *fakeDB, co *fakeCoord) *Agent {
	t.Helper()
	cfg := &config.Config{
		Node:    config.Node{Name: "n2", Address: "127.0.0.1"},
		Cluster: config.Cluster{Namespace: "ns", Project: "p", Name: "c"},
		Etcd:    config.Etcd{RequestTimeout: time.Second},
		TTL:     5 * time.Second, Health: config.Health{Interval: time.Second},
		SynchronousMode: config.SyncOn, MaximumLagOnFailover: 1 << 20,
	}
	a := &Agent{cfg: cfg, log: zap.NewNop(), dcs: co, pg: db, local: localState{dir: t.TempDir()},
		keys: dcs.NewKeys("ns", "p", "c"), rep: report.NewReporter(report.NewNopTransport(), zap.NewNop())}
	a.handlerHealthy.Store(true)
	return a
}

func leaderSnap(leader string) dcs.Snapshot {
	now := time.Now().UnixMilli()
	return dcs.Snapshot{
		Initialized: true, Term: 3, TermRev: 40,
		Leader:      &dcs.LeaderRecord{Node: leader, Term: 3},
		LeaderLease: 7,
		Members: map[string]dcs.Member{
			"n1": {Node: "n1", Role: "replica", Healthy: true, Running: true, Streaming: true, Priority: 100, UpdatedMS: now},
			"n2": {Node: "n2", Role: "primary", Healthy: true, Running: true, Priority: 100, UpdatedMS: now},
			"n3": {Node: "n3", Role: "replica", Healthy: true, Running: true, Streaming: true, Priority: 100, NoFailover: true, UpdatedMS: now},
		},
		Sync: &dcs.SyncState{Leader: leader, Term: 3, Standbys: []string{"n1"}},
	}
}

// TestViewPassesRawSyncInputs: view hands Decide pg_stat_replication and
// the applied LSN as they are; the candidate filter is Decide's (here n3's
// nofailover tag keeps it out, and n1 is widened into the key).
func TestViewPassesRawSyncInputs(t *testing.T) {
	db := &fakeDB{running: true, status: postgres.Status{Running: true, Accepting: true, WriteLSN: 5000,
		Replicas: []postgres.ReplicaStat{{Name: "n1", State: "streaming", FlushLSN: 4000}, {Name: "n3", State: "streaming", FlushLSN: 5000}}}}
	co := &fakeCoord{snap: leaderSnap("n2")}
	a := unitAgent(t, db, co)
	a.isLeader.Store(true)
	a.syncAppliedLSN = 4500
	obs := observation{snap: co.snap, etcdOK: true, pg: db.status, now: time.Now()}
	v := a.view(obs)
	want := []ha.Replica{{Name: "n1", Streaming: true, FlushLSN: 4000}, {Name: "n3", Streaming: true, FlushLSN: 5000}}
	if !slices.Equal(v.Replicas, want) || v.SyncAppliedLSN != 4500 || !v.SyncMode || !slices.Equal(v.SyncStandbys, []string{"n1"}) {
		t.Fatalf("view = replicas %v applied %d sync %v key %v", v.Replicas, v.SyncAppliedLSN, v.SyncMode, v.SyncStandbys)
	}
	if act := ha.Decide(v); act.Kind != ha.SyncApply || !slices.Equal(act.Standbys, []string{"n1"}) {
		t.Fatalf("Decide = %s %v (%s), want sync_apply [n1]", act.Kind, act.Standbys, act.Reason)
	}
}

// TestViewOnReplicaHasNoSyncInputs: only the leader's senders count.
func TestViewOnReplicaHasNoSyncInputs(t *testing.T) {
	db := &fakeDB{running: true, status: postgres.Status{Running: true, Accepting: true, InRecovery: true, Streaming: true,
		Replicas: []postgres.ReplicaStat{{Name: "n9", State: "streaming"}}}}
	co := &fakeCoord{snap: leaderSnap("n1")}
	a := unitAgent(t, db, co)
	v := a.view(observation{snap: co.snap, etcdOK: true, pg: db.status, now: time.Now()})
	if len(v.Replicas) != 0 || v.IsLeader || v.Leader != "n1" || v.LocalRole != ha.RoleReplica {
		t.Fatalf("replica view = %+v", v)
	}
}

// TestViewExpiresAStaleHandover: a hand-over older than 2 × ttl no longer
// reserves the election for its target.
func TestViewExpiresAStaleHandover(t *testing.T) {
	db := &fakeDB{running: true, status: postgres.Status{Running: true, Accepting: true, InRecovery: true}}
	snap := leaderSnap("n1")
	snap.Leader = nil
	now := time.Now()
	for _, tc := range []struct {
		age     time.Duration
		expired bool
	}{{time.Second, false}, {11 * time.Second, true}} {
		snap.Switchover = &dcs.Switchover{From: "n1", To: "n3", State: dcs.SwitchoverHandover, FinalLSN: 10, HandoverMS: now.Add(-tc.age).UnixMilli()}
		a := unitAgent(t, db, &fakeCoord{snap: snap})
		v := a.view(observation{snap: snap, etcdOK: true, pg: db.status, now: now})
		if v.Switchover == nil || !v.Switchover.Handover || v.Switchover.Expired != tc.expired {
			t.Fatalf("hand-over %s old: view switchover %+v, want expired=%v", tc.age, v.Switchover, tc.expired)
		}
	}
}

// TestCampaignAsHandoverTargetSkipsTheLock: the designated target of a
// switchover claims without the failover lock, carries the sync key into
// the claim, sets PostgreSQL's standbys from the claimed snapshot (no
// second etcd read) and promotes; a failover candidate takes the lock.
func TestCampaignAsHandoverTargetSkipsTheLock(t *testing.T) {
	for _, handover := range []bool{true, false} {
		db := &fakeDB{running: true, status: postgres.Status{Running: true, Accepting: true, InRecovery: true, Streaming: false, ReceiveLSN: 2000, ReplayLSN: 2000}}
		snap := leaderSnap("n1")
		snap.Leader = nil
		snap.Sync.Standbys = []string{"n2", "n1"}
		if handover {
			snap.Switchover = &dcs.Switchover{From: "n1", To: "n2", State: dcs.SwitchoverHandover, FinalLSN: 1000, HandoverMS: time.Now().UnixMilli()}
		}
		for n, m := range snap.Members {
			m.Revision = 50 // fresh: reported after the leader key vanished
			snap.Members[n] = m
		}
		m := snap.Members["n1"]
		m.Role, m.Running, m.Streaming, m.LSN = "replica", false, false, 1000
		snap.Members["n1"] = m
		co := &fakeCoord{snap: snap}
		a := unitAgent(t, db, co)
		a.leaderGoneRev = 45
		v := a.view(observation{snap: snap, etcdOK: true, pg: db.status, now: time.Now()})
		if act := ha.Decide(v); act.Kind != ha.Campaign {
			t.Fatalf("handover=%v: Decide = %s (%s), want campaign", handover, act.Kind, act.Reason)
		}
		if err := a.campaign(context.Background(), v); err != nil {
			t.Fatalf("handover=%v: campaign: %v", handover, err)
		}
		if wantLocks := !handover; (len(co.locks) > 0) != wantLocks {
			t.Fatalf("handover=%v: failover lock taken %v", handover, co.locks)
		}
		if co.claims != 1 || !db.promoted || !slices.Equal(db.syncSet, []string{"n1"}) {
			t.Fatalf("handover=%v: claims %d promoted %v sync %v (calls %v)", handover, co.claims, db.promoted, db.syncSet, db.calls)
		}
		if !a.isLeader.Load() || a.term != 4 {
			t.Fatalf("handover=%v: leader %v term %d, want true 4", handover, a.isLeader.Load(), a.term)
		}
	}
}

// TestApplySyncShrinkWritesTheKey: the shrink gate is Decide's; apply just
// writes the key it is given, as the leader.
func TestApplySyncShrinkWritesTheKey(t *testing.T) {
	db := &fakeDB{running: true}
	co := &fakeCoord{snap: leaderSnap("n2")}
	a := unitAgent(t, db, co)
	a.isLeader.Store(true)
	a.term, a.leaderRev = 3, 90
	act := ha.Action{Kind: ha.SyncShrink, Standbys: []string{"n1"}}
	if err := a.apply(context.Background(), act, observation{snap: co.snap, etcdOK: true}, ha.View{}); err != nil {
		t.Fatal(err)
	}
	if len(co.syncPuts) != 1 || !slices.Equal(co.syncPuts[0].Standbys, []string{"n1"}) || co.syncPuts[0].Term != 3 || co.syncPuts[0].Leader != "n2" {
		t.Fatalf("sync key writes = %+v", co.syncPuts)
	}
}
