package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/agent/localcluster"
)

func newFailoverCmd() *cobra.Command {
	var (
		runs  int
		dir   string
		modes []string
	)
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Kill the primary host and switch over, several times, measuring RTO and lost writes",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return benchFailover(cmd.Context(), runs, dir, modes)
		},
	}
	cmd.Flags().IntVar(&runs, "runs", 5, "host kills and switchovers per mode")
	cmd.Flags().StringVar(&dir, "dir", ".dbpilot/bench-failover", "work folder (wiped)")
	cmd.Flags().StringSliceVar(&modes, "modes", []string{"on", "off"}, "synchronous_mode values to measure")
	return cmd
}

type modeResult struct {
	mode       string
	rto        durations
	switchover durations
	lost       int
	split      time.Duration
	maxWrite   int
}

func benchFailover(ctx context.Context, runs int, dir string, modes []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	agentBin := filepath.Join(filepath.Dir(self), "dbpilot-agent")
	if _, err := os.Stat(agentBin); err != nil {
		return fmt.Errorf("dbpilot-agent must sit next to dbpilot-bench (make build): %w", err)
	}
	var results []modeResult
	for _, mode := range modes {
		r, err := benchMode(ctx, runs, filepath.Join(dir, "sync-"+mode), agentBin, mode)
		if err != nil {
			return fmt.Errorf("synchronous_mode %s: %w", mode, err)
		}
		results = append(results, r)
		fmt.Printf("mode=%s host-kill RTO: %s\n", mode, r.rto.summary())
		fmt.Printf("mode=%s switchover write gap: %s\n", mode, r.switchover.summary())
		fmt.Printf("mode=%s lost_acked_writes=%d split_brain_ms=%d max_writable_at_once=%d\n", mode, r.lost, r.split.Milliseconds(), r.maxWrite)
	}
	var all, sw durations
	lostSync, split, n := 0, time.Duration(0), 0
	for _, r := range results {
		all = append(all, r.rto...)
		sw = append(sw, r.switchover...)
		split += r.split
		n += len(r.rto) + len(r.switchover)
		if r.mode == "on" {
			lostSync += r.lost
		}
	}
	fmt.Printf("bench-failover: runs=%d rto_ms_p50=%d rto_ms_max=%d switchover_ms_p50=%d lost_acked_writes=%d split_brain_ms=%d\n",
		n, all.median().Milliseconds(), all.max().Milliseconds(), sw.median().Milliseconds(), lostSync, split.Milliseconds())
	return nil
}

func steady(ctx context.Context, c *localcluster.Cluster, syncMode string) (localcluster.Status, error) {
	return steadyWithin(ctx, c, syncMode, 90*time.Second)
}

// steadyWithin waits up to d for one primary holding the leader key and
// every other node streaming (in synchronous mode also the sync key
// settled).
func steadyWithin(ctx context.Context, c *localcluster.Cluster, syncMode string, d time.Duration) (localcluster.Status, error) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return c.WaitFor(wctx, "a primary and every other node streaming", func(s localcluster.Status) bool {
		return isSteady(s, len(c.Nodes), syncMode)
	})
}

// isSteady: the leader is the only primary, the n-1 others stream, and in
// synchronous mode the sync key is settled.
func isSteady(s localcluster.Status, n int, syncMode string) bool {
	ok := s.Leader != "" && len(s.Primaries()) == 1 && s.Primaries()[0] == s.Leader && len(s.Streaming()) == n-1
	if ok && syncMode == "on" {
		ok = s.SyncSettled()
	}
	return ok
}

func benchMode(ctx context.Context, runs int, dir, agentBin, mode string) (modeResult, error) {
	res := modeResult{mode: mode}
	if err := os.RemoveAll(dir); err != nil {
		return res, err
	}
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Nodes: 3, AgentBin: agentBin, SynchronousMode: mode})
	if err != nil {
		return res, err
	}
	defer c.Close()
	if _, err := steady(ctx, c, mode); err != nil {
		return res, err
	}
	w, err := c.NewWriter(ctx, 10*time.Millisecond)
	if err != nil {
		return res, err
	}
	probe := c.NewWritableProbe(25 * time.Millisecond)
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.Run(wctx) }()
	go func() { defer wg.Done(); probe.Run(wctx) }()
	stopLoad := sync.OnceFunc(func() { stopWriter(); wg.Wait() })
	defer stopLoad()

	for i := 0; i < runs; i++ {
		d, err := oneKill(ctx, c, w, mode)
		if err != nil {
			return res, fmt.Errorf("kill run %d: %w", i+1, err)
		}
		fmt.Printf("mode=%s kill %d: RTO %dms\n", mode, i+1, d.Milliseconds())
		res.rto = append(res.rto, d)
	}
	for i := 0; i < runs; i++ {
		d, err := oneSwitchover(ctx, c, w, mode)
		if err != nil {
			return res, fmt.Errorf("switchover run %d: %w", i+1, err)
		}
		fmt.Printf("mode=%s switchover %d: write gap %dms\n", mode, i+1, d.Milliseconds())
		res.switchover = append(res.switchover, d)
	}
	stopLoad()
	s, err := steady(ctx, c, mode)
	if err != nil {
		return res, err
	}
	missing, err := c.Missing(ctx, c.Index(s.Leader), w.Acks())
	if err != nil {
		return res, err
	}
	res.lost = len(missing)
	res.split, res.maxWrite = probe.SplitBrain()
	fmt.Printf("mode=%s acknowledged writes: %d, missing after all faults: %d\n", mode, len(w.Acks()), len(missing))
	return res, nil
}

// jitter randomises the fault against the lease renewals (every health
// interval, 1 s by default, plus the client's background keepalive).
func jitter(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(500+rand.IntN(2000)) * time.Millisecond):
	}
}

func oneKill(ctx context.Context, c *localcluster.Cluster, w *localcluster.Writer, mode string) (time.Duration, error) {
	s, err := steady(ctx, c, mode)
	if err != nil {
		return 0, err
	}
	jitter(ctx)
	old := c.Index(s.Leader)
	t0 := time.Now()
	if err := c.Kill(old); err != nil {
		return 0, err
	}
	ack, err := waitAck(ctx, w, t0, s.Leader)
	if err != nil {
		return 0, err
	}
	if err := c.StartNode(old); err != nil {
		return 0, err
	}
	return ack.At.Sub(t0), nil
}

func oneSwitchover(ctx context.Context, c *localcluster.Cluster, w *localcluster.Writer, mode string) (time.Duration, error) {
	s, err := steady(ctx, c, mode)
	if err != nil {
		return 0, err
	}
	jitter(ctx)
	t0 := time.Now()
	if err := c.RequestSwitchover(ctx, s.Leader, ""); err != nil {
		return 0, err
	}
	ack, err := waitAck(ctx, w, t0, s.Leader)
	if err != nil {
		return 0, err
	}
	acks := w.Acks()
	i := slices.IndexFunc(acks, func(a localcluster.Ack) bool { return a.N == ack.N })
	lastOld := t0
	for j := i - 1; j >= 0; j-- {
		if acks[j].Node == s.Leader {
			lastOld = acks[j].At
			break
		}
	}
	return ack.At.Sub(lastOld), nil
}

func waitAck(ctx context.Context, w *localcluster.Writer, t0 time.Time, exclude string) (localcluster.Ack, error) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if a, ok := w.FirstAckAfter(t0, exclude); ok {
			return a, nil
		}
		select {
		case <-ctx.Done():
			return localcluster.Ack{}, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return localcluster.Ack{}, errors.New("no acknowledged write on a new primary within 60s")
}
