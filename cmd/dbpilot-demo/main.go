// Command dbpilot-demo runs the main job on the embedded default: an
// embedded etcd and N dbpilot-agent processes (the binary next to this one),
// each with a real PostgreSQL on a loopback port. `make demo` runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/localcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newDemoCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newDemoCmd() *cobra.Command {
	var (
		dir   string
		nodes int
		sync  bool
		keep  bool
	)
	cmd := &cobra.Command{
		Use:          "dbpilot-demo",
		SilenceUsage: true,
		Short:        "Run a local cluster: embedded etcd and N agents with real PostgreSQL on loopback ports",
		Long: `Starts an embedded etcd and N dbpilot-agent processes, each running its own
PostgreSQL on a loopback port, with data under --dir. Prints the cluster table
whenever it changes. Kill the primary's process group (kill -9 -PGID, printed
below) to watch a failover. Ctrl-C stops everything cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), cmd, dir, nodes, sync, keep)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".dbpilot/demo", "folder for etcd, data directories and logs")
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes")
	cmd.Flags().BoolVar(&sync, "sync", true, "synchronous_mode on (no acknowledged write lost on failover)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the data of a previous run instead of starting fresh")
	return cmd
}

func runDemo(ctx context.Context, cmd *cobra.Command, dir string, nodes int, sync, keep bool) error {
	out := cmd.OutOrStdout()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin := filepath.Join(filepath.Dir(self), "dbpilot-agent")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("dbpilot-agent must sit next to dbpilot-demo (make build): %w", err)
	}
	if !keep {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	mode := "off"
	if sync {
		mode = "on"
	}
	fmt.Fprintf(out, "starting embedded etcd and %d agents under %s (synchronous_mode %s)…\n", nodes, dir, mode)
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Nodes: nodes, AgentBin: bin, SynchronousMode: mode, Log: zap.NewNop()})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(out, "stopping agents (graceful: preStop, hand-over, stop PostgreSQL, postStop) and etcd…")
		c.Close()
		fmt.Fprintln(out, "stopped.")
	}()
	fmt.Fprintf(out, "etcd: %s   superuser: %s   password: see %s\n", c.URL, c.Superuser, filepath.Join(dir, "credentials.yaml"))
	for _, n := range c.Nodes {
		fmt.Fprintf(out, "  %s: postgres 127.0.0.1:%d  http://127.0.0.1:%d/health  log %s  host-loss: kill -9 -%d\n", n.Name, n.PGPort, n.HTTPPort, n.LogPath, n.Pid())
	}
	fmt.Fprintf(out, "inspect:    %s cluster list --etcd %s\n", bin, c.URL)
	fmt.Fprintf(out, "switchover: %s cluster switchover --etcd %s\n", bin, c.URL)
	fmt.Fprintf(out, "connect:    PGPASSWORD=%s psql -h 127.0.0.1 -p %d -U %s postgres\n", c.Password, c.Nodes[0].PGPort, c.Superuser)
	fmt.Fprintln(out, "Ctrl-C to stop.")
	last := ""
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if s, err := c.Status(ctx); err == nil {
			if tab := s.Table(); tab != last {
				fmt.Fprintf(out, "\n%s  term %d  leader %q\n%s", time.Now().Format("15:04:05.000"), s.Term, s.Leader, tab)
				last = tab
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
