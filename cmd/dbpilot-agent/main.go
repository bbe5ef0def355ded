// Command dbpilot-agent is the node agent: it runs the autopilot handlers and
// the HA loop for the local PostgreSQL (see docs/agent-config.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dbpilot/dbpilot/agent"
	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/fenceguard"
	"github.com/dbpilot/dbpilot/internal/buildinfo"
)

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx)
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		fmt.Fprintln(os.Stderr, ee.err)
		os.Exit(ee.code)
	case err != nil:
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "dbpilot-agent",
		Short:         "dbpilot node agent: autopilot handlers and HA for PostgreSQL",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newRunCmd(), newValidateCmd(), newVersionCmd(), newClusterCmd(), newWALPushCmd(), newWALFetchCmd(), newBackupCmd(), newFenceGuardCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the agent version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "dbpilot-agent", buildinfo.String())
			return nil
		},
	}
}

func newValidateCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "validate --config FILE",
		Short: "Check a configuration file; print every problem (exit 2 if any)",
		Long: `Check a configuration file as run loads it, on the host it is meant for:
decoding, defaults, every rule, the files it names, the credentials and the OS
users. Every problem run would refuse to start with is printed, each with its
config path, and the exit status is 2; nothing is changed and neither etcd nor
PostgreSQL is contacted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%s: invalid configuration:\n%s", path, indent(err))}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (node %s, cluster %s/%s/%s)\n", path, cfg.Node.Name, cfg.Cluster.Namespace, cfg.Cluster.Project, cfg.Cluster.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "agent configuration file (YAML)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func indent(err error) string {
	var out string
	var join interface{ Unwrap() []error }
	if errors.As(err, &join) {
		for _, e := range join.Unwrap() {
			out += "  - " + e.Error() + "\n"
		}
		return out
	}
	return "  - " + err.Error() + "\n"
}

func newRunCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the agent (SIGTERM: graceful stop with hand-over; SIGHUP: reload handlers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%s: invalid configuration:\n%s", path, indent(err))}
			}
			log, err := newLogger(cfg.Log)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			if os.Getenv("GOGC") == "" {
				// The agent's live heap is a few MB; collecting at +50 %
				// instead of +100 % keeps its RSS lower at no visible CPU
				// cost (docs/benchmarks.md, idle agent).
				debug.SetGCPercent(50)
			}
			if addr := os.Getenv(pprofEnv); addr != "" {
				startPprof(addr, log)
			}
			a, err := agent.New(cfg, log)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					ncfg, err := config.Load(path)
					if err != nil {
						log.Error("SIGHUP: new configuration rejected; keeping the running one", zap.Error(err))
						continue
					}
					a.Reload(ncfg)
				}
			}()
			log.Info("agent starting", zap.String("version", buildinfo.String()), zap.String("config", path))
			return a.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "agent configuration file (YAML)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// newLogger builds the zap logger: structured, one event per line.
func newLogger(c config.Log) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	zc := zap.NewProductionConfig()
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil
	zc.DisableStacktrace = true
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return zc.Build()
}

// newFenceGuardCmd is the fencing guard the agent runs as its child
// (agent/fenceguard); not meant to be run by hand. It ignores SIGINT,
// SIGTERM and SIGHUP: the agent ends it by closing its input, after the
// database is stopped.
func newFenceGuardCmd() *cobra.Command {
	return &cobra.Command{
		Use:    fenceguard.Subcommand,
		Short:  "Fencing guard run by the agent (internal)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			signal.Ignore(os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			return fenceguard.Serve(os.Stdin, os.Stdout)
		},
	}
}
