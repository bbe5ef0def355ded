package agent_test

// Fault-tolerance integration tests (issue 10): a frozen primary agent, a
// stuck HA loop, an etcd outage bridged by failsafe mode. Real agents, real
// PostgreSQL, an embedded etcd behind one TCP proxy per agent.

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/agent"
	"github.com/dbpilot/dbpilot/agent/localcluster"
)

// load runs a writer (every 20 ms) and a two-writable-nodes probe until the
// returned stop is called.
func load(t *testing.T, c *localcluster.Cluster) (*localcluster.Writer, *localcluster.WritableProbe, func()) {
	t.Helper()
	ctx := context.Background()
	w, err := c.NewWriter(ctx, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	probe := c.NewWritableProbe(20 * time.Millisecond)
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.Run(lctx) }()
	go func() { defer wg.Done(); probe.Run(lctx) }()
	stop := sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(stop)
	waitAcks(t, w, 20)
	return w, probe, stop
}

// maxGap is the longest time between consecutive acknowledged writes with
// the first one at or after from and the last at or before to.
func maxGap(acks []localcluster.Ack, from, to time.Time) time.Duration {
	var gap time.Duration
	last := from
	for _, a := range acks {
		if a.At.Before(from) || a.At.After(to) {
			continue
		}
		gap = max(gap, a.At.Sub(last))
		last = a.At
	}
	return max(gap, to.Sub(last))
}

// TestFrozenPrimaryAgent stops the primary's agent process only (SIGSTOP:
// PostgreSQL keeps running, as under a deadlock or CPU starvation) for
// longer than the TTL. The fencing guard must make the old primary
// unwritable before its lease can expire, so there is never a moment with
// two writable nodes; in synchronous mode no acknowledged write is lost.
func TestFrozenPrimaryAgent(t *testing.T) {
	for _, mode := range []string{"off", "on"} {
		t.Run("synchronous_mode="+mode, func(t *testing.T) {
			c := startCluster(t, localcluster.Options{Nodes: 3, SynchronousMode: mode})
			s := waitFor(t, c, 90*time.Second, "one primary, two streaming replicas", healthy(c, mode == "on"))
			w, probe, stop := load(t, c)
			old, term := s.Leader, s.Term
			oi := c.Index(old)
			pid := c.Nodes[oi].Pid()
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			frozen := time.Now()
			thawed := false
			thaw := func() {
				if !thawed {
					_ = syscall.Kill(pid, syscall.SIGCONT)
					thawed = true
				}
			}
			t.Cleanup(thaw)
			s = waitFor(t, c, 30*time.Second, "a new primary while the old one's agent is frozen", func(s localcluster.Status) bool {
				return s.Leader != "" && s.Leader != old && s.Term > term
			})
			t.Logf("new primary %s at term %d, %s after the freeze", s.Leader, s.Term, time.Since(frozen).Round(time.Millisecond))
			if writable(context.Background(), c, oi) {
				t.Fatalf("%s still writable with its agent frozen after a new primary was elected", old)
			}
			// Keep the agent frozen well past the TTL, then let it go.
			for time.Since(frozen) < 12*time.Second {
				time.Sleep(100 * time.Millisecond)
			}
			thaw()
			s = waitFor(t, c, 90*time.Second, "the frozen primary back as a streaming replica", func(s localcluster.Status) bool {
				m, ok := s.Member(old)
				return ok && m.Role == "replica" && m.Streaming && healthy(c, mode == "on")(s)
			})
			waitAcks(t, w, len(w.Acks())+20)
			stop()
			if split, _ := probe.SplitBrain(); split > 0 {
				t.Fatalf("two writable nodes for %s", split)
			}
			if !logContains(t, c.Nodes[oi], "fenced pid=") {
				t.Fatalf("%s: the fencing guard did not report fencing", old)
			}
			missing, err := c.Missing(context.Background(), c.Index(s.Leader), w.Acks())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("acknowledged writes missing on the new primary: %d of %d", len(missing), len(w.Acks()))
			if mode == "on" && len(missing) > 0 {
				t.Fatalf("synchronous mode lost %d acknowledged writes: %v", len(missing), missing)
			}
		})
	}
}

// TestEtcdOutageAndStuckLoop runs one cluster through two faults:
//   - etcd unreachable from every agent for 30 s: failsafe mode keeps the
//     same primary writable at the same term, and no failover follows;
//   - the primary's HA loop stuck (failpoint): its lease is renewed only by
//     that loop, so it loses the leader key and a replica takes over, and
//     the stuck primary is fenced first.
func TestEtcdOutageAndStuckLoop(t *testing.T) {
	fp := t.TempDir()
	c := startCluster(t, localcluster.Options{Nodes: 3, Env: []string{agent.FailpointsDirEnv + "=" + fp}})
	s := waitFor(t, c, 90*time.Second, "one primary, two streaming replicas", healthy(c, false))
	w, probe, stop := load(t, c)
	ctx := context.Background()

	t.Run("etcd outage bridged by failsafe", func(t *testing.T) {
		leader, term, hist := s.Leader, s.Term, len(s.History)
		waitAcks(t, w, len(w.Acks())+20)
		start := time.Now()
		for _, n := range c.Nodes {
			n.Proxy.Cut(true)
		}
		for time.Since(start) < 30*time.Second {
			time.Sleep(100 * time.Millisecond)
		}
		end := time.Now()
		for _, n := range c.Nodes {
			n.Proxy.Cut(false)
		}
		gap := maxGap(w.Acks(), start, end)
		t.Logf("longest gap between acknowledged writes during the outage: %s", gap.Round(time.Millisecond))
		if gap > 2*time.Second {
			t.Fatalf("writes stopped for %s during the etcd outage", gap)
		}
		// Give a needless failover every chance to happen.
		time.Sleep(8 * time.Second)
		s = waitFor(t, c, 30*time.Second, "the cluster settled after the outage", healthy(c, false))
		if s.Leader != leader || s.Term != term || len(s.History) != hist {
			t.Fatalf("after the outage: leader %s term %d history %d, want %s, %d, %d (no failover)", s.Leader, s.Term, len(s.History), leader, term, hist)
		}
		if n := len(w.Acks()); n == 0 || w.Acks()[n-1].Node != leader {
			t.Fatalf("last write not on %s", leader)
		}
	})

	t.Run("stuck HA loop loses leadership", func(t *testing.T) {
		old, term := s.Leader, s.Term
		oi := c.Index(old)
		stall := filepath.Join(fp, agent.FailpointStallLoop+"."+old)
		if err := os.WriteFile(stall, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		s = waitFor(t, c, 30*time.Second, "a new primary while the old one's HA loop is stuck", func(s localcluster.Status) bool {
			return s.Leader != "" && s.Leader != old && s.Term > term
		})
		if writable(ctx, c, oi) {
			t.Fatalf("%s still writable with a stuck HA loop after a new primary was elected", old)
		}
		if err := os.Remove(stall); err != nil {
			t.Fatal(err)
		}
		s = waitFor(t, c, 90*time.Second, "the stuck primary back as a streaming replica", func(s localcluster.Status) bool {
			m, ok := s.Member(old)
			return ok && m.Role == "replica" && m.Streaming && healthy(c, false)(s)
		})
	})
	stop()
	if split, _ := probe.SplitBrain(); split > 0 {
		t.Fatalf("two writable nodes for %s", split)
	}
}
