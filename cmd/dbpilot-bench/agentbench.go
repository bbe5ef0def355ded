package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/agent/localcluster"
)

func newAgentCmd() *cobra.Command {
	var (
		seconds int
		dir     string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Measure RSS and CPU of one idle agent (a 1-node cluster, primary, default settings)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return benchAgent(cmd.Context(), time.Duration(seconds)*time.Second, dir)
		},
	}
	cmd.Flags().IntVar(&seconds, "seconds", 60, "measurement window")
	cmd.Flags().StringVar(&dir, "dir", ".dbpilot/bench-agent", "work folder (wiped)")
	return cmd
}

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat (100 on Linux).
const clockTicks = 100

func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start after ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st, nil
}

func rssKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

func benchAgent(ctx context.Context, window time.Duration, dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Nodes: 1, AgentBin: filepath.Join(filepath.Dir(self), "dbpilot-agent")})
	if err != nil {
		return err
	}
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := c.WaitFor(wctx, "a primary", func(s localcluster.Status) bool { return len(s.Primaries()) == 1 }); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // settle after bootstrap
	pid := c.Nodes[0].Pid()
	t0, err := cpuTicks(pid)
	if err != nil {
		return err
	}
	start := time.Now()
	var maxRSS int64
	var samples []int64
	for time.Since(start) < window {
		if kb, err := rssKB(pid); err == nil {
			maxRSS = max(maxRSS, kb)
			samples = append(samples, kb)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	t1, err := cpuTicks(pid)
	if err != nil {
		return err
	}
	elapsed := time.Since(start).Seconds()
	cpu := float64(t1-t0) / clockTicks / elapsed * 100
	fmt.Printf("agent pid %d over %.0fs: rss samples %d, min %.1f MB, max %.1f MB; cpu %.2f%% of one core\n", pid, elapsed, len(samples), float64(minOf(samples))/1024, float64(maxRSS)/1024, cpu)
	fmt.Printf("bench-agent: rss_mb=%.1f cpu_pct=%.2f\n", float64(maxRSS)/1024, cpu)
	return nil
}

func minOf(s []int64) int64 {
	if len(s) == 0 {
		return 0
	}
	m := s[0]
	for _, v := range s {
		m = min(m, v)
	}
	return m
}
