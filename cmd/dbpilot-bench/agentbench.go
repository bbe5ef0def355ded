package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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
		seconds    int
		dir        string
		cpuprofile string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Measure RSS and CPU of one idle agent (a 1-node cluster, primary, default settings)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return benchAgent(cmd.Context(), time.Duration(seconds)*time.Second, dir, cpuprofile)
		},
	}
	cmd.Flags().IntVar(&seconds, "seconds", 60, "measurement window")
	cmd.Flags().StringVar(&dir, "dir", ".dbpilot/bench-agent", "work folder (wiped)")
	cmd.Flags().StringVar(&cpuprofile, "cpuprofile", "", "also write the agent's CPU profile over the window to this file (go tool pprof; the agent serves it with "+pprofEnv+")")
	return cmd
}

// pprofEnv is dbpilot-agent's opt-in profiling listener (cmd/dbpilot-agent/pprof.go).
const pprofEnv = "DBPILOT_AGENT_PPROF"

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

func rssKB(pid int) (int64, error) { return statusKB(pid, "VmRSS") }

// statusKB reads one kB field of /proc/PID/status, e.g. VmRSS, RssAnon
// (heap, stacks) or RssFile (mapped pages of the binary).
func statusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s for %d", field, pid)
}

// childPids lists the direct children of pid (the agent's fencing guard,
// PostgreSQL).
func childPids(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// guardPid finds the agent's fencing guard child ("dbpilot-agent
// fence-guard"), 0 if none.
func guardPid(agent int) int {
	for _, c := range childPids(agent) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c))
		if strings.Contains(string(b), "fence-guard") {
			return c
		}
	}
	return 0
}

// fetchProfile saves the agent's CPU profile over window to path.
func fetchProfile(ctx context.Context, addr string, window time.Duration, path string) error {
	u := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(window.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cpu profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func benchAgent(ctx context.Context, window time.Duration, dir, cpuprofile string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	opts := localcluster.Options{Dir: dir, Nodes: 1, AgentBin: filepath.Join(filepath.Dir(self), "dbpilot-agent")}
	var pprofAddr string
	if cpuprofile != "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		pprofAddr = l.Addr().String()
		l.Close()
		opts.Env = []string{pprofEnv + "=" + pprofAddr}
	}
	c, err := localcluster.Start(ctx, opts)
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
	profiled := make(chan error, 1)
	if cpuprofile != "" {
		go func() { profiled <- fetchProfile(ctx, pprofAddr, window, cpuprofile) }()
	}
	guard := guardPid(pid)
	g0, _ := cpuTicks(guard)
	t0, err := cpuTicks(pid)
	if err != nil {
		return err
	}
	start := time.Now()
	var maxRSS, maxAnon, maxFile, maxGuard int64
	var samples []int64
	for time.Since(start) < window {
		if kb, err := rssKB(pid); err == nil {
			maxRSS = max(maxRSS, kb)
			samples = append(samples, kb)
		}
		if kb, err := statusKB(pid, "RssAnon"); err == nil {
			maxAnon = max(maxAnon, kb)
		}
		if kb, err := statusKB(pid, "RssFile"); err == nil {
			maxFile = max(maxFile, kb)
		}
		if kb, err := rssKB(guard); guard != 0 && err == nil {
			maxGuard = max(maxGuard, kb)
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
	g1, _ := cpuTicks(guard)
	elapsed := time.Since(start).Seconds()
	cpu := float64(t1-t0) / clockTicks / elapsed * 100
	fmt.Printf("agent pid %d over %.0fs: rss samples %d, min %.1f MB, max %.1f MB (max anonymous %.1f MB, max file-backed %.1f MB); cpu %.2f%% of one core\n",
		pid, elapsed, len(samples), float64(minOf(samples))/1024, float64(maxRSS)/1024, float64(maxAnon)/1024, float64(maxFile)/1024, cpu)
	if guard != 0 {
		fmt.Printf("fencing guard pid %d (not in the figures below): rss max %.1f MB, cpu %.2f%% of one core\n",
			guard, float64(maxGuard)/1024, float64(g1-g0)/clockTicks/elapsed*100)
	}
	if cpuprofile != "" {
		if err := <-profiled; err != nil {
			return err
		}
		fmt.Printf("cpu profile of the agent over the window: %s (go tool pprof -top %s)\n", cpuprofile, cpuprofile)
	}
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
