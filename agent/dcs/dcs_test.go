package dcs

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/internal/embedetcd"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// startEtcd runs a real embedded etcd for the test.
func startEtcd(t *testing.T) string {
	t.Helper()
	e, u, err := embedetcd.Start(t.TempDir(), "default", 0, zap.NewNop(), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return u
}

func dial(t *testing.T, ep string, ttl time.Duration) *Client {
	t.Helper()
	c, err := Dial(Options{Endpoints: []string{ep}, DialTimeout: 2 * time.Second, RequestTimeout: time.Second, TTL: ttl},
		NewKeys("ns", "proj", "c1"), zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	if _, _, err := c.Session(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBootstrapOnlyOneWins(t *testing.T) {
	ep := startEtcd(t)
	ctx := context.Background()
	const n = 5
	var wg sync.WaitGroup
	wins := make(chan string, n)
	for i := 0; i < n; i++ {
		c := dial(t, ep, 5*time.Second)
		name := "n" + strconv.Itoa(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ok, err := c.Bootstrap(ctx, "sysid-"+name, LeaderRecord{Node: name}, ClusterDocument{Leader: name})
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins <- name
			}
		}()
	}
	wg.Wait()
	close(wins)
	var winners []string
	for w := range wins {
		winners = append(winners, w)
	}
	if len(winners) != 1 {
		t.Fatalf("%d bootstrap winners: %v", len(winners), winners)
	}
	s, err := dial(t, ep, 5*time.Second).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Term != 1 || s.Leader == nil || s.Leader.Node != winners[0] || s.SystemID != "sysid-"+winners[0] {
		t.Fatalf("snapshot after bootstrap: term %d leader %+v sysid %q", s.Term, s.Leader, s.SystemID)
	}
}

func TestClaimLeaderIsCompareAndSwap(t *testing.T) {
	ep := startEtcd(t)
	ctx := context.Background()
	a, b := dial(t, ep, 5*time.Second), dial(t, ep, 5*time.Second)
	rev, ok, err := a.Bootstrap(ctx, "sys", LeaderRecord{Node: "a"}, ClusterDocument{})
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	s, _ := b.Snapshot(ctx)
	if _, ok, _ := b.ClaimLeader(ctx, LeaderRecord{Node: "b"}, s.Term, s.TermRev, HistoryRecord{Reason: "failover"}); ok {
		t.Fatal("claimed the leader key while a leader exists")
	}
	// The holder releases; b claims with the term it observed; a stale claim fails.
	if ok, err := a.ReleaseLeader(ctx, rev); err != nil || !ok {
		t.Fatal(ok, err)
	}
	s, _ = b.Snapshot(ctx)
	if _, ok, err := b.ClaimLeader(ctx, LeaderRecord{Node: "b"}, s.Term, s.TermRev, HistoryRecord{Reason: "failover"}); err != nil || !ok {
		t.Fatal("claim failed:", ok, err)
	}
	if _, ok, _ := a.ClaimLeader(ctx, LeaderRecord{Node: "a"}, s.Term, s.TermRev, HistoryRecord{}); ok {
		t.Fatal("second claim at the same term succeeded")
	}
	s, _ = a.Snapshot(ctx)
	if s.Term != 2 || s.Leader.Node != "b" || s.Leader.Term != 2 {
		t.Fatalf("after claim: term %d leader %+v", s.Term, s.Leader)
	}
	// Only the holder may update the leader value.
	if ok, _ := a.UpdateLeader(ctx, LeaderRecord{Node: "a", Term: 2}, rev); ok {
		t.Fatal("former holder updated the leader key")
	}
	if ok, _ := a.PutIfLeader(ctx, rev, a.Keys().Sync(), SyncState{Leader: "a"}); ok {
		t.Fatal("former holder wrote the sync key")
	}
}

func TestLeaseLossIsReportedAndLeaderKeyGoes(t *testing.T) {
	ep := startEtcd(t)
	ctx := context.Background()
	a, b := dial(t, ep, 2*time.Second), dial(t, ep, 5*time.Second)
	if _, ok, err := a.Bootstrap(ctx, "sys", LeaderRecord{Node: "a"}, ClusterDocument{}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if left := a.LeaseLeft(time.Now()); left <= 0 || left > 2*time.Second {
		t.Fatalf("proven lease left %s, want (0, 2s]", left)
	}
	// Revoking the lease (as expiry would) deletes the leader key; the
	// holder's next renewal reports the loss.
	if _, err := b.Raw().Revoke(ctx, a.Lease()); err != nil {
		t.Fatal(err)
	}
	if err := a.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Renew after revoke = %v, want ErrLeaseLost", err)
	}
	if a.LeaseLeft(time.Now()) > 0 {
		t.Fatal("lease still proven after loss")
	}
	s, _ := b.Snapshot(ctx)
	if s.Leader != nil {
		t.Fatalf("leader key survived its lease: %+v", s.Leader)
	}
	// A new session gets a new lease.
	if _, fresh, err := a.Session(ctx); err != nil || !fresh {
		t.Fatalf("new session: fresh=%v err=%v", fresh, err)
	}
}

func TestTryLockExcludes(t *testing.T) {
	ep := startEtcd(t)
	ctx := context.Background()
	a, b := dial(t, ep, 5*time.Second), dial(t, ep, 5*time.Second)
	unlock, err := a.TryLock(ctx, a.Keys().FailoverLock())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryLock(ctx, b.Keys().FailoverLock()); !errors.Is(err, ErrLocked) {
		t.Fatalf("second TryLock = %v, want ErrLocked", err)
	}
	unlock()
	u2, err := b.TryLock(ctx, b.Keys().FailoverLock())
	if err != nil {
		t.Fatalf("TryLock after unlock: %v", err)
	}
	u2()
}

func TestKeys(t *testing.T) {
	k := NewKeys("prod", "blue", "billing")
	if got := k.Leader(); got != "/dbpilot/v1/clusters/prod/blue/billing/leader" {
		t.Fatal(got)
	}
	if got := k.MemberName(k.Member("db-1")); got != "db-1" {
		t.Fatal(got)
	}
	if got := k.MemberName(k.Prefix() + "members/a/b"); got != "" {
		t.Fatal(got)
	}
	if k.History(2) >= k.History(10) {
		t.Fatal("history keys must sort by term")
	}
}

// TestSnapshotSpec: an absent spec key is no spec; a valid one is decoded;
// a malformed one is ignored with a reason naming the field, and its
// revision still changes with every write (so it is reported once per
// change).
func TestSnapshotSpec(t *testing.T) {
	ep := startEtcd(t)
	ctx := context.Background()
	c := dial(t, ep, 5*time.Second)
	s, err := c.Snapshot(ctx)
	if err != nil || s.Spec != nil || s.SpecRev != 0 || s.SpecErr != nil {
		t.Fatalf("no spec key: spec %+v rev %d err %v / %v", s.Spec, s.SpecRev, s.SpecErr, err)
	}
	put := func(v string) Snapshot {
		t.Helper()
		if _, err := c.Raw().Put(ctx, c.Keys().Spec(), v); err != nil {
			t.Fatal(err)
		}
		s, err := c.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s = put(`{"replicas":3,"synchronous_mode":"on","engine":"postgres","nodes":["node1","node2"],"updated_ms":1,"future":true}`)
	if s.Spec == nil || s.Spec.SynchronousMode != "on" || len(s.Spec.Nodes) != 2 || s.SpecErr != nil || s.SpecRev == 0 {
		t.Fatalf("valid spec: %+v rev %d err %v", s.Spec, s.SpecRev, s.SpecErr)
	}
	prev := s.SpecRev
	for _, tc := range []struct{ value, want string }{
		{`{"synchronous_mode":`, "not JSON"},
		{`{"synchronous_mode":"maybe"}`, "synchronous_mode"},
		{`{"synchronous_mode":true}`, "not JSON"},
		{`{"nodes":["node1","Node 2"]}`, "nodes[1]"},
	} {
		s = put(tc.value)
		if s.Spec != nil || s.SpecErr == nil || !strings.Contains(s.SpecErr.Error(), tc.want) || s.SpecRev <= prev {
			t.Errorf("%s: spec %+v err %v rev %d (previous %d), want ignored naming %q", tc.value, s.Spec, s.SpecErr, s.SpecRev, prev, tc.want)
		}
		prev = s.SpecRev
	}
	s = put(`{}`)
	if s.Spec == nil || s.Spec.SynchronousMode != "" || s.SpecErr != nil {
		t.Fatalf("empty spec: %+v %v", s.Spec, s.SpecErr)
	}
}
