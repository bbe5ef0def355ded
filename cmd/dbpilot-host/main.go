// Command dbpilot-host is the fleet host runner: it enrols a bare-metal or VM
// host with the control plane (one-time join token), then polls the host's
// assignments and starts or stops one dbpilot-agent per assigned node. It is
// a separate binary so the agent stays small (docs/benchmarks.md, idle agent).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dbpilot/dbpilot/catalog"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/proto"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newHostCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// newHostCmd is the fleet host runner: `dbpilot-host run`.
func newHostCmd() *cobra.Command {
	host := &cobra.Command{Use: "dbpilot-host", Short: "Fleet host: enrol with the control plane and run the agents assigned to this host", SilenceUsage: true}
	var c infra.HostRunnerConfig
	var labels []string
	var level string
	run := &cobra.Command{
		Use:   "run --server URL --join-token T --name N --address A --root DIR",
		Short: "Enrol (first run) and keep this host's agents in line with its assignments",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.Labels = map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return fmt.Errorf("--label %q: want key=value", l)
				}
				if err := catalog.ValidLabel(k, v); err != nil {
					return fmt.Errorf("--label %q: %w", l, err)
				}
				c.Labels[k] = v
			}
			if c.Name == "" {
				c.Name, _ = os.Hostname()
			}
			// The server applies the one name rule to host names; say so
			// before enrolling.
			if c.JoinToken != "" {
				if err := proto.CheckName("--name", c.Name); err != nil {
					return err
				}
			}
			if c.AgentBin == "" {
				self, _ := os.Executable()
				c.AgentBin = filepath.Join(filepath.Dir(self), "dbpilot-agent")
			}
			lvl, err := zapcore.ParseLevel(level)
			if err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			zc := zap.NewProductionConfig()
			zc.Level = zap.NewAtomicLevelAt(lvl)
			zc.DisableStacktrace = true
			log, err := zc.Build()
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			r, err := infra.NewHostRunner(c, log)
			if err != nil {
				return err
			}
			log.Info("host runner starting", zap.String("server", c.Server), zap.String("name", c.Name), zap.String("root", c.Root))
			return r.Run(cmd.Context())
		},
	}
	f := run.Flags()
	f.StringVar(&c.Server, "server", "", "control plane base URL")
	f.StringVar(&c.JoinToken, "join-token", "", "one-time join token (first run only)")
	f.StringVar(&c.Name, "name", "", "host name (default: hostname)")
	f.StringVar(&c.Address, "address", "127.0.0.1", "address the host's databases listen on")
	f.StringArrayVar(&labels, "label", nil, "host label key=value (repeatable)")
	f.IntVar(&c.Capacity.CPU, "cpu", runtime.NumCPU(), "CPUs offered")
	f.IntVar(&c.Capacity.MemoryMB, "memory-mb", 4096, "memory offered (MB)")
	f.IntVar(&c.Capacity.DiskGB, "disk-gb", 100, "disk offered (GB)")
	f.StringVar(&c.Root, "root", "/var/lib/dbpilot-host", "folder for the host identity and node folders")
	f.StringVar(&c.AgentBin, "agent-bin", "", "agent binary to run per node (default: dbpilot-agent next to this binary)")
	f.DurationVar(&c.Interval, "interval", 2*time.Second, "assignment poll interval")
	f.StringVar(&level, "log-level", "info", "log level")
	_ = run.MarkFlagRequired("server")
	host.AddCommand(run)
	return host
}
