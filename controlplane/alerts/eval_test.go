package alerts

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/proto"
)

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

func summary(role string, writable bool, mod ...func(*proto.MemberSummary)) *proto.MemberSummary {
	s := &proto.MemberSummary{IntervalMS: 3000, Role: role, State: proto.StateRunning, Healthy: true, Writable: writable}
	if role == proto.RoleReplica {
		s.Streaming = ptr(true)
	}
	for _, m := range mod {
		m(s)
	}
	return s
}

// cluster is a Ready three-node cluster, ready for an hour, every member
// heard from a second ago: node1 the writable primary.
func cluster(mod ...func(*ClusterState)) ClusterState {
	c := ClusterState{ID: "c-1", Namespace: "ns", Project: "default", Name: "db", ReadySince: t0.Add(-time.Hour), Thresholds: DefaultThresholds(10 * time.Second),
		Nodes: []NodeState{
			{Name: "node1", Summary: summary(proto.RolePrimary, true), SummaryAt: t0.Add(-time.Second)},
			{Name: "node2", Summary: summary(proto.RoleReplica, false), SummaryAt: t0.Add(-time.Second)},
			{Name: "node3", Summary: summary(proto.RoleReplica, false), SummaryAt: t0.Add(-time.Second)},
		}}
	for _, m := range mod {
		m(&c)
	}
	return c
}

func node(name string, fn func(*NodeState)) func(*ClusterState) {
	return func(c *ClusterState) {
		for i := range c.Nodes {
			if c.Nodes[i].Name == name {
				fn(&c.Nodes[i])
			}
		}
	}
}

// key is "rule/node/subject".
func keys(cs []Condition) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Rule+"/"+c.Node+"/"+c.Subject)
		if c.Severity != RuleSeverity[c.Rule] || c.Severity == "" {
			panic("severity of " + c.Rule)
		}
	}
	slices.Sort(out)
	return out
}

func TestEvaluate(t *testing.T) {
	backups := func(b ...proto.BackupJobStatus) func(*NodeState) {
		return func(n *NodeState) { n.Summary.Backups = b }
	}
	cases := []struct {
		name string
		c    ClusterState
		want []string
	}{
		{"healthy", cluster(), nil},
		{"not ready yet: nothing", cluster(func(c *ClusterState) { c.ReadySince = time.Time{}; c.Nodes[0].Summary = nil }), nil},
		{"primary not writable", cluster(node("node1", func(n *NodeState) { n.Summary.Writable = false })),
			[]string{"no_writable_primary//"}},
		{"primary silent: silent and no primary", cluster(node("node1", func(n *NodeState) { n.SummaryAt = t0.Add(-10 * time.Second) })),
			[]string{"agent_silent/node1/", "no_writable_primary//"}},
		{"exactly 3 intervals is not silent", cluster(node("node2", func(n *NodeState) { n.SummaryAt = t0.Add(-9 * time.Second) })), nil},
		{"silent threshold per cluster", cluster(func(c *ClusterState) { c.Thresholds.SilentHeartbeats = 5 }, node("node2", func(n *NodeState) { n.SummaryAt = t0.Add(-10 * time.Second) })), nil},
		{"slower interval is not silent", cluster(node("node2", func(n *NodeState) { n.Summary.IntervalMS = 10000; n.SummaryAt = t0.Add(-20 * time.Second) })), nil},
		{"planned switchover: no primary does not hold", cluster(func(c *ClusterState) { c.Planned = true }, node("node1", func(n *NodeState) { n.Summary.Writable = false })), nil},
		{"never heard, ready long ago: silent", cluster(node("node3", func(n *NodeState) { n.Summary = nil })), []string{"agent_silent/node3/"}},
		{"never heard since a restart, silent before: still silent", cluster(func(c *ClusterState) {
			c.ReadySince = t0.Add(-2 * time.Second)
			c.SilentBefore = map[string]bool{"node3": true, "node2": true}
		}, node("node3", func(n *NodeState) { n.Summary = nil })), []string{"agent_silent/node3/"}},
		{"never heard, ready just now: not yet", cluster(func(c *ClusterState) { c.ReadySince = t0.Add(-5 * time.Second) }, node("node3", func(n *NodeState) { n.Summary = nil })), nil},
		{"no summaries at all: the projection's primary counts", cluster(func(c *ClusterState) {
			c.ReadySince = t0.Add(-2 * time.Second)
			for i := range c.Nodes {
				c.Nodes[i].Summary = nil
			}
			c.Nodes[0].Role, c.Nodes[0].Healthy, c.Nodes[0].MemberState = proto.RolePrimary, true, proto.StateRunning
		}), nil},
		{"no summaries, projection without a healthy primary", cluster(func(c *ClusterState) {
			c.ReadySince = t0.Add(-2 * time.Second)
			for i := range c.Nodes {
				c.Nodes[i].Summary = nil
			}
			c.Nodes[0].Role, c.Nodes[0].Healthy, c.Nodes[0].MemberState = proto.RolePrimary, false, proto.StateRunning
		}), []string{"no_writable_primary//"}},
		{"replica stopped gracefully, then silent: ticket, no page", cluster(node("node2", func(n *NodeState) {
			n.Summary.State, n.Summary.Streaming, n.Summary.Healthy = proto.StateStopped, ptr(false), false
			n.SummaryAt = t0.Add(-time.Minute)
		})), []string{"replica_not_streaming/node2/"}},
		{"primary stopped gracefully, then silent: no writable primary, no silent page", cluster(node("node1", func(n *NodeState) {
			n.Summary.State, n.Summary.Writable = proto.StateStopped, false
			n.SummaryAt = t0.Add(-time.Minute)
		})), []string{"no_writable_primary//"}},
		{"replica not streaming", cluster(node("node2", func(n *NodeState) { n.Summary.Streaming = ptr(false) })), []string{"replica_not_streaming/node2/"}},
		{"replica lag", cluster(node("node3", func(n *NodeState) { n.Summary.LagBytes = 65<<20 + 1 })), []string{"replica_lag/node3/"}},
		{"replica lag within threshold", cluster(node("node3", func(n *NodeState) { n.Summary.LagBytes = 64 << 20 })), nil},
		{"sync mode without standby", cluster(node("node1", func(n *NodeState) { n.Summary.SynchronousMode = true })), []string{"sync_standby_missing/node1/"}},
		{"sync mode with standby", cluster(node("node1", func(n *NodeState) { n.Summary.SynchronousMode, n.Summary.SyncStandbys = true, []string{"node2"} })), nil},
		{"failover info fresh", cluster(func(c *ClusterState) { c.LastFailoverAt, c.FailoverTo = t0.Add(-time.Minute), "node2" }), []string{"failover//"}},
		{"failover info expired", cluster(func(c *ClusterState) { c.LastFailoverAt = t0.Add(-6 * time.Minute) }), nil},
		{"repair failing from attempt 3", cluster(func(c *ClusterState) { c.RepairFailed = map[string]int{"node2": 3, "node3": 2} }), []string{"node_repair_failing/node2/"}},
		{"disk 85 ticket", cluster(node("node2", func(n *NodeState) {
			n.Summary.Filesystems = []proto.FilesystemUsage{{Kind: "data", Path: "/d", SizeBytes: 100, UsedBytes: 86, UsedPct: 86}, {Kind: "wal", Path: "/w", SizeBytes: 100, UsedPct: 10}}
		})), []string{"filesystem_usage_high/node2/data"}},
		{"disk 95 page only", cluster(node("node2", func(n *NodeState) {
			n.Summary.Filesystems = []proto.FilesystemUsage{{Kind: "wal", Path: "/w", SizeBytes: 100, UsedPct: 95}}
		})), []string{"filesystem_usage_critical/node2/wal"}},
		{"disk of a silent node still counts", cluster(node("node2", func(n *NodeState) {
			n.SummaryAt = t0.Add(-time.Minute)
			n.Summary.Filesystems = []proto.FilesystemUsage{{Kind: "data", Path: "/d", SizeBytes: 100, UsedPct: 99}}
		})), []string{"agent_silent/node2/", "filesystem_usage_critical/node2/data"}},
		{"archive failing: ticket and (after for) page", cluster(node("node1", func(n *NodeState) {
			n.Summary.Archive = &proto.ArchiveStatus{FailedCount: 4, Failing: true}
		})), []string{"wal_archive_failing/node1/", "wal_archive_failing_long/node1/"}},
		{"backups fine", cluster(node("node2", backups(proto.BackupJobStatus{Job: "nightly", Schedule: "0 3 * * *",
			LastSuccessAt: ptr(t0.Add(-2 * time.Hour)), NextDueAt: ptr(t0.Add(time.Hour)), LastDrillAt: ptr(t0.Add(-24 * time.Hour))}))), nil},
		{"backup failed on one member, older success on another", cluster(
			node("node2", backups(proto.BackupJobStatus{Job: "nightly", Schedule: "0 3 * * *", LastFailureAt: ptr(t0.Add(-time.Hour)), NextDueAt: ptr(t0.Add(time.Hour)), LastDrillAt: ptr(t0)})),
			node("node3", backups(proto.BackupJobStatus{Job: "nightly", Schedule: "0 3 * * *", LastSuccessAt: ptr(t0.Add(-2 * time.Hour)), NextDueAt: ptr(t0.Add(time.Hour))}))),
			[]string{"backup_failed//nightly"}},
		{"backup failed, success later on another member", cluster(
			node("node2", backups(proto.BackupJobStatus{Job: "nightly", Schedule: "0 3 * * *", LastFailureAt: ptr(t0.Add(-3 * time.Hour)), NextDueAt: ptr(t0.Add(time.Hour)), LastDrillAt: ptr(t0)})),
			node("node3", backups(proto.BackupJobStatus{Job: "nightly", Schedule: "0 3 * * *", LastSuccessAt: ptr(t0.Add(-2 * time.Hour))}))), nil},
		{"backup failed from events", cluster(
			node("node2", backups(proto.BackupJobStatus{Job: "nightly", Schedule: "0 3 * * *", LastSuccessAt: ptr(t0.Add(-2 * time.Hour)), NextDueAt: ptr(t0.Add(time.Hour)), LastDrillAt: ptr(t0)})),
			func(c *ClusterState) {
				c.BackupEvents = map[string]BackupOutcome{"nightly": {LastFailure: t0.Add(-time.Minute)}}
			}),
			[]string{"backup_failed//nightly"}},
		{"backup missed its window", cluster(node("node2", backups(proto.BackupJobStatus{Job: "nightly", Schedule: "0 3 * * *",
			LastSuccessAt: ptr(t0.Add(-20 * time.Hour)), NextDueAt: ptr(t0.Add(-61 * time.Minute)), LastDrillAt: ptr(t0)}))), []string{"backup_missed//nightly"}},
		{"no backup in 26h, no drill in 8d", cluster(func(c *ClusterState) { c.ReadySince = t0.Add(-30 * 24 * time.Hour) },
			node("node2", backups(proto.BackupJobStatus{Job: "nightly", Schedule: "0 3 * * *", LastSuccessAt: ptr(t0.Add(-27 * time.Hour)),
				NextDueAt: ptr(t0.Add(time.Hour)), LastDrillAt: ptr(t0.Add(-9 * 24 * time.Hour))}))),
			[]string{"backup_stale//", "restore_drill_stale//"}},
		{"new cluster, no backup yet but within 26h", cluster(func(c *ClusterState) { c.ReadySince = t0.Add(-2 * time.Hour) },
			node("node2", backups(proto.BackupJobStatus{Job: "nightly", Schedule: "0 3 * * *", NextDueAt: ptr(t0.Add(time.Hour))}))), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := keys(Evaluate([]ClusterState{c.c}, t0))
			want := c.want
			if want == nil {
				want = []string{}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
}

func TestConditionDetails(t *testing.T) {
	c := cluster(node("node1", func(n *NodeState) { n.SummaryAt = t0.Add(-10 * time.Second) }))
	cs := Evaluate([]ClusterState{c}, t0)
	for _, x := range cs {
		if x.Rule == RuleNoWritablePrimary && x.For != 15*time.Second {
			t.Errorf("no_writable_primary for %s, want ttl+5s = 15s", x.For)
		}
		if x.Rule == RuleAgentSilent && (!strings.Contains(x.Summary, "node1") || x.For != 0) {
			t.Errorf("agent_silent: %+v", x)
		}
		if x.Fingerprint() != Fingerprint(x.Rule, "ns", "default", "db", x.Node, x.Subject) || len(x.Fingerprint()) != 16 {
			t.Errorf("fingerprint %q", x.Fingerprint())
		}
	}
	if Fingerprint("a", "ns", "p", "c", "n", "") == Fingerprint("a", "ns", "p", "c", "", "n") {
		t.Error("fingerprint ambiguous between node and subject")
	}
}

func TestThresholdsWith(t *testing.T) {
	th := DefaultThresholds(0).With(&proto.AlertThresholds{NoPrimaryFor: "40s", DiskTicketPct: ptr(70.0), SilentHeartbeats: ptr(5), RepeatInterval: "1h"})
	if th.NoPrimaryFor != 40*time.Second || th.DiskTicketPct != 70 || th.DiskPagePct != 95 || th.SilentHeartbeats != 5 || th.RepeatInterval != time.Hour {
		t.Fatalf("%+v", th)
	}
	if DefaultThresholds(0).NoPrimaryFor != 15*time.Second {
		t.Fatal("default no_primary_for")
	}
	var probs []string
	proto.AlertThresholds{NoPrimaryFor: "x", DiskPagePct: ptr(101.0), SilentHeartbeats: ptr(1)}.Check("alerts.", func(f, p string) { probs = append(probs, f) })
	if !slices.Equal(probs, []string{"alerts.no_primary_for", "alerts.disk_page_pct", "alerts.silent_heartbeats"}) {
		t.Fatalf("problems %v", probs)
	}
}
