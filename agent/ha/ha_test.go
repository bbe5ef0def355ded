package ha

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// base is a healthy replica following n1 in a three-node cluster.
func base() View {
	return View{
		Self: "n2", Priority: 100, LocalInitialized: true, LocalRole: RoleReplica, Healthy: true,
		Streaming: true, Upstream: "n1", LocalLSN: 1000, EtcdOK: true, Initialized: true, Leader: "n1",
		LeaseLeft: 4 * time.Second, FenceMargin: 1500 * time.Millisecond, LeaderLSN: 1000, MaxLag: 1 << 20,
		RejoinAfter: 15 * time.Second,
		Members: []Member{
			{Name: "n1", Role: RolePrimary, Healthy: true, Running: true, Priority: 100, LSN: 1000},
			{Name: "n3", Role: RoleReplica, Healthy: true, Running: true, Streaming: true, Priority: 100, LSN: 900},
		},
	}
}

// asPrimary turns base into the leader n1 with replicas n2, n3.
func asPrimary(v View) View {
	v.Self, v.LocalRole, v.IsLeader, v.Leader, v.Upstream = "n1", RolePrimary, true, "n1", ""
	v.Members = []Member{
		{Name: "n2", Role: RoleReplica, Healthy: true, Running: true, Streaming: true, Priority: 100, LSN: 1000},
		{Name: "n3", Role: RoleReplica, Healthy: true, Running: true, Streaming: true, Priority: 100, LSN: 900},
	}
	return v
}

// noLeader turns base into an election where every member has reported.
func noLeader(v View) View {
	v.Leader, v.Upstream, v.Streaming = "", "n1", false
	v.Members = []Member{{Name: "n3", Role: RoleReplica, Healthy: true, Running: true, Priority: 100, LSN: 900, Fresh: true}}
	return v
}

func TestDecide(t *testing.T) {
	tests := []decideCase{
		{"primary with lease running out fences", func(v View) View { v = asPrimary(v); v.LeaseLeft = time.Second; return v }, Fence, "", "cannot prove leadership"},
		{"writable without the leader key fences", func(v View) View { v.LocalRole = RolePrimary; return v }, Fence, "", "without holding the leader key"},
		{"etcd down: replica waits", func(v View) View { v.EtcdOK = false; return v }, Noop, "", "etcd unreachable"},
		{"etcd down: stopped node starts read-only", func(v View) View { v.EtcdOK = false; v.LocalRole = RoleStopped; return v }, StartReplica, "", "read-only"},
		{"etcd down: primary with lease left keeps running", func(v View) View { v = asPrimary(v); v.EtcdOK = false; return v }, Noop, "", "etcd unreachable"},
		{"fenced leader releases the key", func(v View) View { v = asPrimary(v); v.Fenced = true; v.LocalRole = RoleReplica; return v }, Release, "", "releasing"},
		{"leader key holder not yet primary promotes", func(v View) View { v = asPrimary(v); v.LocalRole = RoleReplica; return v }, Promote, "", "holding the leader key"},
		{"healthy primary does nothing", asPrimary, Noop, "", "primary holding the leader key"},
		{"unhealthy primary hands over to the most advanced replica", func(v View) View { v = asPrimary(v); v.Healthy = false; return v }, Handover, "n2", "unhealthy"},
		{"unhealthy primary without replicas stays", func(v View) View { v = asPrimary(v); v.Healthy = false; v.Members = nil; return v }, Noop, "", "no healthy replica"},
		{"switchover to named replica", func(v View) View { v = asPrimary(v); v.Switchover = &Switchover{To: "n3"}; return v }, Handover, "n3", "planned switchover"},
		{"switchover to nofailover replica refused", func(v View) View {
			v = asPrimary(v)
			v.Switchover = &Switchover{To: "n3"}
			v.Members[1].NoFailover = true
			return v
		}, Noop, "", "primary holding the leader key"},
		{"unservable switchover does not block an unhealthy hand-over", func(v View) View {
			v = asPrimary(v)
			v.Healthy = false
			v.Switchover = &Switchover{To: "n9"}
			return v
		}, Handover, "n2", "unhealthy"},
		{"switchover without target picks best", func(v View) View { v = asPrimary(v); v.Switchover = &Switchover{From: "n1"}; return v }, Handover, "n2", "planned switchover"},
		{"switchover without eligible replica waits", func(v View) View { v = asPrimary(v); v.Switchover = &Switchover{From: "n1"}; v.Members = nil; return v }, Noop, "", "primary holding"},
		{"switchover for another primary ignored", func(v View) View { v = asPrimary(v); v.Switchover = &Switchover{From: "n9"}; return v }, Noop, "", "primary holding"},
		{"sync: widen key first", func(v View) View {
			v = asPrimary(v)
			v.SyncMode, v.Replicas = true, streaming("n2", "n3")
			v.SyncStandbys = []string{"n2"}
			return v
		}, SyncWiden, "", "widening"},
		{"sync: then apply to PostgreSQL", func(v View) View {
			v = asPrimary(v)
			v.SyncMode, v.Replicas, v.SyncStandbys, v.PGSyncStandbys = true, streaming("n2", "n3"), []string{"n2", "n3"}, []string{"n2"}
			return v
		}, SyncApply, "", "synchronous_standby_names"},
		{"sync: shrink key after PostgreSQL", func(v View) View {
			v = asPrimary(v)
			v.SyncMode, v.Replicas, v.SyncStandbys, v.PGSyncStandbys = true, streaming("n2"), []string{"n2", "n3"}, []string{"n2"}
			return v
		}, SyncShrink, "", "removing lost standbys"},
		{"sync: never drop the last standby", func(v View) View {
			v = asPrimary(v)
			v.SyncMode, v.Replicas, v.SyncStandbys, v.PGSyncStandbys = true, nil, []string{"n2"}, []string{"n2"}
			return v
		}, Noop, "", "primary holding"},
		{"sync off: clear synchronous_standby_names first", func(v View) View {
			v = asPrimary(v)
			v.Replicas, v.SyncStandbys, v.PGSyncStandbys = streaming("n2", "n3"), []string{"n2", "n3"}, []string{"n2", "n3"}
			return v
		}, SyncApply, "", "synchronous_mode off: clearing"},
		{"sync off: then empty the sync key", func(v View) View {
			v = asPrimary(v)
			v.Replicas, v.SyncStandbys = streaming("n2", "n3"), []string{"n2", "n3"}
			return v
		}, SyncShrink, "", "emptying the sync key"},
		{"sync switched on: widen an empty key before PostgreSQL", func(v View) View {
			v = asPrimary(v)
			v.SyncMode, v.Replicas = true, streaming("n2", "n3")
			return v
		}, SyncWiden, "", "widening"},
		{"sync: replica outside the spec's nodes is not made a standby", func(v View) View {
			v = asPrimary(v)
			v.SyncMode, v.Replicas, v.SyncStandbys, v.PGSyncStandbys = true, streaming("n2", "n3"), []string{"n2"}, []string{"n2"}
			v.SpecNodes = []string{"n1", "n2"}
			return v
		}, Noop, "", "primary holding"},
		{"sync: standby leaving the spec is dropped from PostgreSQL", func(v View) View {
			v = asPrimary(v)
			v.SyncMode, v.Replicas, v.SyncStandbys, v.PGSyncStandbys = true, streaming("n2", "n3"), []string{"n2", "n3"}, []string{"n2", "n3"}
			v.SpecNodes = []string{"n1", "n2"}
			return v
		}, SyncApply, "", "synchronous_standby_names"},
		{"sync: the last standby is kept even when leaving the spec", func(v View) View {
			v = asPrimary(v)
			v.SyncMode, v.Replicas, v.SyncStandbys, v.PGSyncStandbys = true, streaming("n2"), []string{"n2"}, []string{"n2"}
			v.SpecNodes = []string{"n1", "n3"}
			return v
		}, Noop, "", "primary holding"},
		{"switchover to a node outside the spec refused", func(v View) View {
			v = asPrimary(v)
			v.Switchover = &Switchover{To: "n3"}
			v.SpecNodes = []string{"n1", "n2"}
			return v
		}, Noop, "", "primary holding"},
		{"switchover without target skips nodes outside the spec", func(v View) View {
			v = asPrimary(v)
			v.Switchover = &Switchover{From: "n1"}
			v.SpecNodes = []string{"n1", "n3"}
			return v
		}, Handover, "n3", "planned switchover"},
		{"unhealthy primary hands over inside the spec only", func(v View) View {
			v = asPrimary(v)
			v.Healthy = false
			v.SpecNodes = []string{"n1"}
			return v
		}, Noop, "", "no healthy replica"},
		{"stopped replica starts following", func(v View) View { v.LocalRole = RoleStopped; return v }, StartReplica, "n1", "starting as replica"},
		{"stopped former primary rewinds", func(v View) View { v.LocalRole = RoleStopped; v.WasPrimary = true; return v }, Rejoin, "n1", "rewinding"},
		{"running former primary rewinds", func(v View) View { v.WasPrimary = true; return v }, Rejoin, "n1", "rewinding"},
		{"new leader: follow it", func(v View) View { v.Leader = "n3"; return v }, Follow, "n3", "new leader"},
		{"not streaming too long: rejoin", func(v View) View { v.Streaming = false; v.NotStreamingFor = 20 * time.Second; return v }, Rejoin, "n1", "not streaming"},
		{"following replica does nothing", func(v View) View { return v }, Noop, "", "replica following"},
		{"no leader, cluster not bootstrapped", func(v View) View { v = noLeader(v); v.Initialized = false; return v }, Noop, "", "not bootstrapped"},
		{"no leader: most advanced candidate campaigns", noLeader, Campaign, "", "most advanced"},
		{"no leader: member with higher LSN wins", func(v View) View { v = noLeader(v); v.Members[0].LSN = 2000; return v }, Noop, "", "n3 is a better candidate"},
		{"no leader: equal LSN, higher priority wins", func(v View) View { v = noLeader(v); v.Members[0].LSN = 1000; v.Members[0].Priority = 200; return v }, Noop, "", "better candidate"},
		{"no leader: equal LSN and priority, smaller name wins", func(v View) View { v = noLeader(v); v.Self = "n4"; v.Members[0].LSN = 1000; return v }, Noop, "", "better candidate"},
		{"no leader: better but nofailover member ignored", func(v View) View { v = noLeader(v); v.Members[0].LSN = 2000; v.Members[0].NoFailover = true; return v }, Campaign, "", "most advanced"},
		{"no leader: wait for a member's fresh LSN", func(v View) View { v = noLeader(v); v.Members[0].Fresh = false; return v }, Noop, "", "waiting for n3"},
		{"no leader: stale member ignored", func(v View) View { v = noLeader(v); v.Members[0].Fresh, v.Members[0].Stale = false, true; return v }, Campaign, "", "most advanced"},
		{"no leader: nofailover node does not campaign", func(v View) View { v = noLeader(v); v.NoFailover = true; return v }, Noop, "", "nofailover"},
		{"no leader: unhealthy node does not campaign", func(v View) View { v = noLeader(v); v.Healthy = false; return v }, Noop, "", "unhealthy"},
		{"no leader: too far behind", func(v View) View { v = noLeader(v); v.LeaderLSN = 1000 + 2<<20; return v }, Noop, "", "maximum_lag_on_failover"},
		{"no leader, sync: non-sync standby may not campaign", func(v View) View { v = noLeader(v); v.SyncMode, v.SyncStandbys = true, []string{"n3"}; return v }, Noop, "", "not a synchronous standby"},
		{"no leader, sync: sync standby gone blocks failover", func(v View) View {
			v = noLeader(v)
			v.SyncMode, v.SyncStandbys = true, []string{"n2", "n4"}
			return v
		}, Noop, "", "n4 is gone"},
		{"no leader, sync: sync standby not yet reported", func(v View) View {
			v = noLeader(v)
			v.SyncMode, v.SyncStandbys = true, []string{"n2", "n3"}
			v.Members[0].Fresh = false
			return v
		}, Noop, "", "synchronous standby n3"},
		{"no leader, sync: an unhealthy sync standby ahead blocks the one behind", func(v View) View {
			v = noLeader(v)
			v.SyncMode, v.SyncStandbys = true, []string{"n2", "n3"}
			v.Members[0].LSN, v.Members[0].Healthy = 1100, false
			return v
		}, Noop, "", "n3 is ahead (LSN 1100 > 1000) but cannot be promoted (unhealthy)"},
		{"no leader, sync: a nofailover sync standby ahead blocks the one behind", func(v View) View {
			v = noLeader(v)
			v.SyncMode, v.SyncStandbys = true, []string{"n2", "n3"}
			v.Members[0].LSN, v.Members[0].NoFailover = 1100, true
			return v
		}, Noop, "", "acknowledged commits"},
		{"no leader, sync: an unhealthy sync standby behind does not block", func(v View) View {
			v = noLeader(v)
			v.SyncMode, v.SyncStandbys = true, []string{"n2", "n3"}
			v.Members[0].Healthy = false
			return v
		}, Campaign, "", "most advanced"},
		{"no leader, async: an unhealthy member ahead does not block", func(v View) View {
			v = noLeader(v)
			v.Members[0].LSN, v.Members[0].Healthy = 1100, false
			return v
		}, Campaign, "", "most advanced"},
		{"no leader, sync: most advanced sync standby campaigns", func(v View) View {
			v = noLeader(v)
			v.SyncMode, v.SyncStandbys = true, []string{"n2", "n3"}
			return v
		}, Campaign, "", "most advanced"},
		{"no leader: node outside the spec's nodes does not campaign", func(v View) View {
			v = noLeader(v)
			v.SpecNodes = []string{"n1", "n3"}
			return v
		}, Noop, "", "being removed"},
		{"no leader: better member outside the spec's nodes ignored", func(v View) View {
			v = noLeader(v)
			v.Members[0].LSN = 2000
			v.SpecNodes = []string{"n1", "n2"}
			return v
		}, Campaign, "", "most advanced"},
		{"no leader: member outside the spec's nodes not waited for", func(v View) View {
			v = noLeader(v)
			v.Members[0].Fresh = false
			v.SpecNodes = []string{"n2"}
			return v
		}, Campaign, "", "most advanced"},
		{"no leader: spec listing every node changes nothing", func(v View) View {
			v = noLeader(v)
			v.Members[0].LSN = 2000
			v.SpecNodes = []string{"n1", "n2", "n3"}
			return v
		}, Noop, "", "n3 is a better candidate"},
		{"no leader, sync: removed node still in the sync key and ahead wins", func(v View) View {
			v = noLeader(v)
			v.SyncMode, v.SyncStandbys = true, []string{"n2", "n3"}
			v.Members[0].LSN = 2000
			v.SpecNodes = []string{"n1", "n2"}
			return v
		}, Noop, "", "n3 is a better candidate"},
		{"no leader, sync: removed node still in the sync key may campaign", func(v View) View {
			v = noLeader(v)
			v.SyncMode, v.SyncStandbys = true, []string{"n2", "n3"}
			v.SpecNodes = []string{"n1", "n3"}
			return v
		}, Campaign, "", "most advanced"},
		{"no leader, sync: at equal LSN a node the spec keeps beats a removed one", func(v View) View {
			v = noLeader(v)
			v.SyncMode, v.SyncStandbys = true, []string{"n2", "n3"}
			v.Members[0].LSN = 1000
			v.SpecNodes = []string{"n1", "n3"}
			return v
		}, Noop, "", "n3 is a better candidate"},
		{"no leader, sync: removed node outside the sync key does not campaign", func(v View) View {
			v = noLeader(v)
			v.SyncMode, v.SyncStandbys = true, []string{"n3"}
			v.SpecNodes = []string{"n1", "n3"}
			return v
		}, Noop, "", "being removed"},
		{"stopped node with no leader starts read-only", func(v View) View { v = noLeader(v); v.LocalRole = RoleStopped; return v }, StartReplica, "", "election"},
		{"stopped former primary with no leader waits", func(v View) View { v = noLeader(v); v.LocalRole = RoleStopped; v.WasPrimary = true; return v }, Noop, "", "waiting for one"},
		{"stopped old primary waits for its hand-over target", func(v View) View {
			v = noLeader(v)
			v.LocalRole = RoleStopped
			v.Switchover = &Switchover{From: "n2", To: "n3", Handover: true, FinalLSN: 1000}
			return v
		}, Noop, "", "handed over to n3"},
		{"stopped old primary stands for election once the hand-over expired", func(v View) View {
			v = noLeader(v)
			v.LocalRole = RoleStopped
			v.Switchover = &Switchover{From: "n2", To: "n3", Handover: true, FinalLSN: 1000, Expired: true}
			return v
		}, StartReplica, "", "election"},
		{"handover target waits for final LSN", func(v View) View {
			v = noLeader(v)
			v.Switchover = &Switchover{To: "n2", Handover: true, FinalLSN: 1500}
			return v
		}, Noop, "", "final LSN"},
		{"handover target campaigns at final LSN", func(v View) View {
			v = noLeader(v)
			v.Switchover = &Switchover{To: "n2", Handover: true, FinalLSN: 1000}
			return v
		}, Campaign, "", "switchover"},
		{"handover to another: others wait", func(v View) View { v = noLeader(v); v.Switchover = &Switchover{To: "n3", Handover: true}; return v }, Noop, "", "hand-over to n3"},
		{"expired handover: normal election", func(v View) View {
			v = noLeader(v)
			v.Switchover = &Switchover{To: "n3", Handover: true, Expired: true}
			return v
		}, Campaign, "", "most advanced"},
	}
	runDecideCases(t, tests)
}

// decideCase is one row of a Decide table: base() changed by mod must
// give kind with target and a reason containing want.
type decideCase struct {
	name   string
	mod    func(View) View
	kind   Kind
	target string
	want   string // substring of the reason
}

func runDecideCases(t *testing.T, tests []decideCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(tc.mod(base()))
			if got.Kind != tc.kind || got.Target != tc.target || !strings.Contains(got.Reason, tc.want) {
				t.Fatalf("Decide = {%s %q %q}, want {%s %q …%q…}", got.Kind, got.Target, got.Reason, tc.kind, tc.target, tc.want)
			}
		})
	}
}

func TestSyncActionsCarryTheSet(t *testing.T) {
	v := asPrimary(base())
	v.SyncMode, v.Replicas, v.SyncStandbys = true, streaming("n3", "n2"), []string{"n2"}
	if a := Decide(v); !slices.Equal(a.Standbys, []string{"n2", "n3"}) {
		t.Fatalf("widen standbys = %v, want [n2 n3]", a.Standbys)
	}
}

// TestDecideFailsafe covers failsafe mode: a primary rides out an etcd
// outage only on a confirmation that outlives the fencing margin, re-takes
// a lapsed key only at its own term, and promised or waiting members stay
// out of elections.
func TestDecideFailsafe(t *testing.T) {
	outage := func(v View) View {
		v = asPrimary(v)
		v.EtcdOK, v.Term, v.OwnTerm, v.LeaseLeft = false, 3, 3, 500*time.Millisecond
		return v
	}
	back := func(v View) View {
		v = outage(v)
		v.EtcdOK, v.IsLeader, v.Leader = true, false, ""
		v.FailsafeLeft = 3 * time.Second
		return v
	}
	tests := []struct {
		name string
		mod  func(View) View
		kind Kind
		want string
	}{
		{"outage, lease gone, no confirmation: fence", outage, Fence, "cannot prove leadership"},
		{"outage, confirmation within the margin: fence", func(v View) View { v = outage(v); v.FailsafeLeft = time.Second; return v }, Fence, "failsafe left 1s"},
		{"outage, every member confirms: stay writable", func(v View) View { v = outage(v); v.FailsafeLeft = 4 * time.Second; return v }, Noop, "failsafe"},
		{"outage, key seen lapsed before etcd went, confirmed: stay writable", func(v View) View {
			v = outage(v)
			v.IsLeader, v.FailsafeLeft = false, 4*time.Second
			return v
		}, Noop, "failsafe"},
		{"outage, key lapsed, no confirmation: fence", func(v View) View { v = outage(v); v.IsLeader = false; return v }, Fence, "without holding the leader key"},
		{"etcd back, key lapsed, confirmed, same term: reclaim", back, Reclaim, "re-taking the key at term 3"},
		{"etcd back, key lapsed, term moved: fence", func(v View) View { v = back(v); v.Term = 4; return v }, Fence, "without holding the leader key"},
		{"etcd back, another leader: fence", func(v View) View { v = back(v); v.Leader = "n2"; return v }, Fence, "without holding the leader key"},
		{"etcd back, confirmation expired: fence", func(v View) View { v = back(v); v.FailsafeLeft = time.Second; return v }, Fence, "without holding the leader key"},
		{"etcd back, not our term (former primary): fence", func(v View) View { v = back(v); v.OwnTerm = 0; return v }, Fence, "without holding the leader key"},
		{"promised replica stays out of the election", func(v View) View { v = noLeader(v); v.Promised = "n1"; return v }, Noop, "failsafe promise to n1"},
		{"member under promise blocks candidates", func(v View) View {
			v = noLeader(v)
			v.Members[0].FailsafePromised = true
			return v
		}, Noop, "holds a failsafe promise"},
		{"member still writable blocks candidates", func(v View) View {
			v = noLeader(v)
			v.Members = append(v.Members, Member{Name: "n1", Role: RolePrimary, Healthy: true, Running: true, Priority: 100, LSN: 1000, Fresh: true})
			return v
		}, Noop, "still reports a writable primary"},
		{"stale writable member does not block", func(v View) View {
			v = noLeader(v)
			v.Members = append(v.Members, Member{Name: "n1", Role: RolePrimary, Running: true, Stale: true})
			return v
		}, Campaign, "most advanced"},
		{"promised switchover target does not campaign either", func(v View) View {
			v = noLeader(v)
			v.Promised = "n1"
			v.Switchover = &Switchover{From: "n1", To: "n2", Handover: true, FinalLSN: 10}
			return v
		}, Noop, "failsafe promise"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Decide(tt.mod(base()))
			if a.Kind != tt.kind || !strings.Contains(a.Reason, tt.want) {
				t.Fatalf("Decide = %s (%q), want %s containing %q", a.Kind, a.Reason, tt.kind, tt.want)
			}
		})
	}
}

// TestDecideReclone: a replica that does not stream rewinds first, and
// re-clones only if a rewind did not bring streaming back.
func TestDecideReclone(t *testing.T) {
	v := base()
	v.Streaming, v.NotStreamingFor = false, 20*time.Second
	if a := Decide(v); a.Kind != Rejoin {
		t.Fatalf("first: %s (%s), want rejoin", a.Kind, a.Reason)
	}
	v.RewoundNotStreaming = true
	if a := Decide(v); a.Kind != Reclone || a.Target != "n1" {
		t.Fatalf("after a rewind: %s %s (%s), want reclone n1", a.Kind, a.Target, a.Reason)
	}
	v.NotStreamingFor = 5 * time.Second
	if a := Decide(v); a.Kind != Noop {
		t.Fatalf("within the period: %s (%s), want noop", a.Kind, a.Reason)
	}
	v.NotStreamingFor, v.WasPrimary = 20*time.Second, true
	if a := Decide(v); a.Kind != Rejoin {
		t.Fatalf("former primary: %s (%s), want rejoin (never a blind re-clone)", a.Kind, a.Reason)
	}
}

// streaming lists replicas streaming from the primary, flushed up to 1000.
func streaming(names ...string) []Replica {
	var rs []Replica
	for _, n := range names {
		rs = append(rs, Replica{Name: n, Streaming: true, FlushLSN: 1000})
	}
	return rs
}
