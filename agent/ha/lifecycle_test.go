package ha

import (
	"slices"
	"strings"
	"testing"
)

// TestDecideSyncSet: which replicas become synchronous standbys, what a new
// primary carries over, and when a lost standby may leave the sync key.
func TestDecideSyncSet(t *testing.T) {
	sync := func(v View) View { v = asPrimary(v); v.SyncMode = true; return v }
	tests := []struct {
		name     string
		mod      func(View) View
		kind     Kind
		standbys []string
		want     string
	}{
		{"streaming healthy replicas are candidates", func(v View) View {
			v = sync(v)
			v.Replicas = streaming("n2", "n3")
			return v
		}, SyncWiden, []string{"n2", "n3"}, "widening"},
		{"a replica not streaming is no candidate", func(v View) View {
			v = sync(v)
			v.Replicas = append(streaming("n2"), Replica{Name: "n3", Streaming: false})
			return v
		}, SyncWiden, []string{"n2"}, "widening"},
		{"an unhealthy replica is no candidate", func(v View) View {
			v = sync(v)
			v.Replicas = streaming("n2", "n3")
			v.Members[1].Healthy = false
			return v
		}, SyncWiden, []string{"n2"}, "widening"},
		{"a nofailover replica is no candidate", func(v View) View {
			v = sync(v)
			v.Replicas = streaming("n2", "n3")
			v.Members[0].NoFailover = true
			return v
		}, SyncWiden, []string{"n3"}, "widening"},
		{"a priority-0 replica is no candidate", func(v View) View {
			v = sync(v)
			v.Replicas = streaming("n2", "n3")
			v.Members[0].Priority = 0
			return v
		}, SyncWiden, []string{"n3"}, "widening"},
		{"a sender with no member key is no candidate", func(v View) View {
			v = sync(v)
			v.Replicas = streaming("n2", "n9")
			return v
		}, SyncWiden, []string{"n2"}, "widening"},
		{"new primary carries over the sync key before anyone streams", func(v View) View {
			v = sync(v)
			v.SyncStandbys = []string{"n2", "n3"}
			return v
		}, SyncApply, []string{"n2", "n3"}, "synchronous_standby_names"},
		{"carried-over key drops a node the spec removes", func(v View) View {
			v = sync(v)
			v.SyncStandbys = []string{"n2", "n3"}
			v.SpecNodes = []string{"n1", "n2"}
			return v
		}, SyncApply, []string{"n2"}, "synchronous_standby_names"},
		{"no carry-over once PostgreSQL has a set: the last standby stays", func(v View) View {
			v = sync(v)
			v.SyncStandbys, v.PGSyncStandbys = []string{"n2"}, []string{"n2"}
			return v
		}, Noop, nil, "primary holding"},
		{"shrink waits until the remaining standby flushed the applied LSN", func(v View) View {
			v = sync(v)
			v.Replicas = []Replica{{Name: "n2", Streaming: true, FlushLSN: 900}}
			v.SyncStandbys, v.PGSyncStandbys, v.SyncAppliedLSN = []string{"n2", "n3"}, []string{"n2"}, 1000
			return v
		}, Noop, nil, "sync shrink waits for standby n2"},
		{"shrink once the remaining standby has the applied LSN", func(v View) View {
			v = sync(v)
			v.Replicas = []Replica{{Name: "n2", Streaming: true, FlushLSN: 1000}}
			v.SyncStandbys, v.PGSyncStandbys, v.SyncAppliedLSN = []string{"n2", "n3"}, []string{"n2"}, 1000
			return v
		}, SyncShrink, []string{"n2"}, "removing lost standbys"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(tc.mod(base()))
			if got.Kind != tc.kind || !slices.Equal(got.Standbys, tc.standbys) || !strings.Contains(got.Reason, tc.want) {
				t.Fatalf("Decide = {%s %v %q}, want {%s %v …%q…}", got.Kind, got.Standbys, got.Reason, tc.kind, tc.standbys, tc.want)
			}
		})
	}
}

// TestDecideShutdown: a stopping leader hands over; nobody else acts.
func TestDecideShutdown(t *testing.T) {
	down := func(v View) View { v.ShuttingDown = true; return v }
	tests := []decideCase{
		{"leader hands over to the most advanced replica", func(v View) View { return down(asPrimary(v)) }, Handover, "n2", "shutting down: handing over"},
		{"leader hands over to the requested switchover target", func(v View) View {
			v = down(asPrimary(v))
			v.Switchover = &Switchover{To: "n3"}
			return v
		}, Handover, "n3", "requested switchover target"},
		{"a healthy leader hands over too (no unhealthy trick)", func(v View) View {
			v = down(asPrimary(v))
			v.Healthy = true
			return v
		}, Handover, "n2", "handing over"},
		{"no streaming replica: nothing to hand over to", func(v View) View {
			v = down(asPrimary(v))
			for i := range v.Members {
				v.Members[i].Streaming = false
			}
			return v
		}, Noop, "", "no replica to hand over to"},
		{"a fenced leader does not hand over", func(v View) View {
			v = down(asPrimary(v))
			v.Fenced = true
			return v
		}, Noop, "", "shutting down"},
		{"a replica starts nothing", func(v View) View {
			v = down(v)
			v.LocalRole = RoleStopped
			return v
		}, Noop, "", "shutting down"},
		{"no election while shutting down", func(v View) View { return down(noLeader(v)) }, Noop, "", "shutting down"},
		{"fencing still comes first", func(v View) View {
			v = down(asPrimary(v))
			v.LeaseLeft = v.FenceMargin
			return v
		}, Fence, "", "fencing"},
	}
	runDecideCases(t, tests)
}

// TestDecideBootstrap: whitepaper Op 2, one step at a time; a data
// directory is discarded only on a readable, different system identifier.
func TestDecideBootstrap(t *testing.T) {
	boot := func(v View) View {
		return View{Self: "n2", Bootstrapping: true, EtcdOK: true, LocalInitialized: v.LocalInitialized}
	}
	tests := []decideCase{
		{"marker and data: done, even with etcd down", func(v View) View {
			v = boot(v)
			v.BootstrapMarker, v.LocalInitialized, v.EtcdOK = true, true, false
			return v
		}, BootstrapDone, "", "joined"},
		{"etcd down: wait", func(v View) View { v = boot(v); v.EtcdOK = false; return v }, Noop, "", "etcd unreachable"},
		{"empty cluster: initialize", func(v View) View { v = boot(v); v.LocalInitialized = false; return v }, Initialize, "", "first primary"},
		{"empty cluster, existing data directory: initialize on it", func(v View) View { v = boot(v); v.LocalInitialized = true; return v }, Initialize, "", "first primary"},
		{"cluster with a leader: clone from it", func(v View) View {
			v = boot(v)
			v.LocalInitialized, v.Initialized, v.Leader = false, true, "n1"
			return v
		}, Clone, "n1", "cloning"},
		{"initialized, no leader: wait", func(v View) View {
			v = boot(v)
			v.LocalInitialized, v.Initialized = false, true
			return v
		}, Noop, "", "no leader yet"},
		{"data of this cluster without marker: adopt", func(v View) View {
			v = boot(v)
			v.LocalInitialized, v.Initialized, v.Leader = true, true, "n1"
			v.LocalSystemID, v.ClusterSystemID = "7001", "7001"
			return v
		}, Adopt, "", "belongs to the cluster"},
		{"data of another cluster: discard", func(v View) View {
			v = boot(v)
			v.LocalInitialized, v.Initialized, v.Leader = true, true, "n1"
			v.LocalSystemID, v.ClusterSystemID = "7002", "7001"
			return v
		}, DiscardData, "", "another cluster"},
		{"unreadable control file: keep the data and retry", func(v View) View {
			v = boot(v)
			v.LocalInitialized, v.Initialized, v.Leader = true, true, "n1"
			v.ControlDataErr, v.ClusterSystemID = true, "7001"
			return v
		}, Noop, "", "nothing is deleted"},
		{"marker without data: forget it", func(v View) View {
			v = boot(v)
			v.BootstrapMarker, v.LocalInitialized, v.Initialized, v.Leader = true, false, true, "n1"
			return v
		}, ForgetMarker, "", "cloning again"},
		{"our own leader key on our lease: release, never clone from ourselves", func(v View) View {
			v = boot(v)
			v.LocalInitialized, v.Initialized, v.Leader, v.IsLeader = false, true, "n2", true
			return v
		}, Release, "", "never clone from ourselves"},
		{"our own leader key from an earlier lease: wait for it to expire", func(v View) View {
			v = boot(v)
			v.LocalInitialized, v.Initialized, v.Leader = false, true, "n2"
			return v
		}, Noop, "", "lease to expire"},
	}
	runDecideCases(t, tests)
}
