package agent

import (
	"reflect"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/dcs"
)

// TestMemberCurrent: an unchanged member key is rewritten only when it is
// about to be older than what other members accept (view's grace), and
// always while the cluster is in transition or the key differs in
// anything but its timestamp.
func TestMemberCurrent(t *testing.T) {
	cfg := &config.Config{Health: config.Health{Interval: time.Second}, Etcd: config.Etcd{RequestTimeout: time.Second}}
	d, err := dcs.Dial(dcs.Options{Endpoints: []string{"127.0.0.1:1"}, RequestTimeout: time.Second, TTL: 5 * time.Second}, dcs.NewKeys("ns", "p", "c"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Raw().Close() })
	a := &Agent{cfg: cfg, dcs: d} // no lease yet: memberLease 0 matches it

	grace := 2*cfg.Health.Interval + cfg.Etcd.RequestTimeout // view's Stale threshold
	if left := grace - (a.memberRefresh() + cfg.Health.Interval); left < cfg.Etcd.RequestTimeout/2 {
		t.Fatalf("a key rewritten at memberRefresh %s can be read %s old, within %s of the grace %s",
			a.memberRefresh(), a.memberRefresh()+cfg.Health.Interval, left, grace)
	}

	now := time.Now()
	m := dcs.Member{Node: "n1", Role: "primary", State: "running", Healthy: true, Running: true, LSN: 42, Timeline: 1, Priority: 100, SynchronousMode: "off"}
	stored := func(age time.Duration, edit func(*dcs.Member)) dcs.Member {
		s := m
		s.UpdatedMS, s.Revision = now.Add(-age).UnixMilli(), 7
		if edit != nil {
			edit(&s)
		}
		return s
	}
	obs := func(leader bool, sw bool, members ...dcs.Member) observation {
		o := observation{now: now, etcdOK: true, snap: dcs.Snapshot{Members: map[string]dcs.Member{}}}
		if leader {
			o.snap.Leader = &dcs.LeaderRecord{Node: "n1", Term: 1}
		}
		if sw {
			o.snap.Switchover = &dcs.Switchover{From: "n1", To: "n2", State: dcs.SwitchoverRequested}
		}
		for _, x := range members {
			o.snap.Members[x.Node] = x
		}
		return o
	}
	for _, tc := range []struct {
		what string
		obs  observation
		want bool
	}{
		{"unchanged and recent: skipped", obs(true, false, stored(500*time.Millisecond, nil)), true},
		{"unchanged but due for a refresh", obs(true, false, stored(a.memberRefresh(), nil)), false},
		{"LSN moved", obs(true, false, stored(0, func(s *dcs.Member) { s.LSN = 41 })), false},
		{"lag changed", obs(true, false, stored(0, func(s *dcs.Member) { s.LagSeconds = 0.5 })), false},
		{"failsafe promise changed", obs(true, false, stored(0, func(s *dcs.Member) { s.FailsafeFor = "n2" })), false},
		{"key missing", obs(true, false), false},
		{"no leader: candidates wait for fresh keys", obs(false, false, stored(0, nil)), false},
		{"switchover pending", obs(true, true, stored(0, nil)), false},
	} {
		if got := a.memberCurrent(tc.obs, m); got != tc.want {
			t.Errorf("%s: memberCurrent = %v, want %v", tc.what, got, tc.want)
		}
	}
	a.memberLease = 1 // written on another lease than the current one
	if a.memberCurrent(obs(true, false, stored(0, nil)), m) {
		t.Error("memberCurrent with the key written on an older lease = true, want a rewrite")
	}
}

// TestSameDocument: every field of the cluster document but LastUpdated
// makes it differ, so a new field cannot be forgotten by sameDocument.
func TestSameDocument(t *testing.T) {
	base := dcs.ClusterDocument{Namespace: "ns", Project: "p", ClusterName: "c", Term: 3, Leader: "n1", TTLSeconds: 5,
		Nodes: []dcs.DocumentNode{{Name: "n1", Status: "Online", IPAddress: "10.0.0.1", Port: 5432, Role: "Primary"}}}
	later := base
	later.LastUpdated = 99
	if !sameDocument(base, later) {
		t.Error("documents differing only in LastUpdated are not the same")
	}
	rt := reflect.TypeOf(base)
	for i := range rt.NumField() {
		f := rt.Field(i)
		if f.Name == "LastUpdated" {
			continue
		}
		other := base
		other.Nodes = append([]dcs.DocumentNode(nil), base.Nodes...)
		v := reflect.ValueOf(&other).Elem().Field(i)
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int64, reflect.Int:
			v.SetInt(v.Int() + 1)
		case reflect.Uint64:
			v.SetUint(v.Uint() + 1)
		case reflect.Slice:
			other.Nodes[0].Status = "Offline"
		default:
			t.Fatalf("field %s of kind %s: extend this test and sameDocument", f.Name, v.Kind())
		}
		if sameDocument(base, other) {
			t.Errorf("documents differing in %s are the same", f.Name)
		}
	}
}

// TestFencerWait: the fencer's own timer fires when a held proof reaches
// the margin (never later), and it never sleeps longer than fencerMaxWait.
func TestFencerWait(t *testing.T) {
	margin := 1500 * time.Millisecond
	for _, tc := range []struct {
		holds bool
		left  time.Duration
		want  time.Duration
	}{
		{false, 0, fencerMaxWait},
		{true, 5 * time.Second, fencerMaxWait},
		{true, margin + 300*time.Millisecond, 300 * time.Millisecond},
		{true, margin, fencerMinWait},
		{true, 0, fencerMinWait},
	} {
		if got := fencerWait(tc.holds, tc.left, margin); got != tc.want {
			t.Errorf("fencerWait(%v, %s) = %s, want %s", tc.holds, tc.left, got, tc.want)
		}
	}
}
