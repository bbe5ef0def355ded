// Command dbpilot-server is the control plane: REST API, event consumers,
// Service Catalog and Infrastructure Service (docs/controlplane.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/controlplane/server"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd(os.Stdout).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCmd(stdout io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "dbpilot-server",
		Short:         "dbpilot control plane: REST API, event consumers, catalog and provisioning",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.AddCommand(newServeCmd(), newDevCmd(), newTokenCmd(), newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use: "version", Short: "Print the server version", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "dbpilot-server", buildinfo.String())
			return nil
		},
	}
}

func newLogger(level string) (*zap.Logger, error) {
	cfg := zap.NewProductionConfig()
	if err := cfg.Level.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return cfg.Build()
}

func newServeCmd() *cobra.Command {
	var path, storeDSN, level, pprofAddr string
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Run the control plane from a configuration file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(path, storeDSN)
			if err != nil {
				return err
			}
			log, err := newLogger(level)
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck
			if pprofAddr != "" {
				stop, err := servePprof(pprofAddr, log)
				if err != nil {
					return err
				}
				defer stop()
			}
			s, err := server.Start(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "dbpilot-server: API at", s.URL)
			<-cmd.Context().Done()
			s.Close()
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "configuration file (YAML)")
	cmd.Flags().StringVar(&storeDSN, "store", "", "override the store: a SQLite path or postgres://…")
	cmd.Flags().StringVar(&level, "log-level", "info", "debug|info|warn|error")
	cmd.Flags().StringVar(&pprofAddr, "pprof-listen", "", "serve Go's net/http/pprof profiles on this address (e.g. 127.0.0.1:6060; keep it off public interfaces)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func newDevCmd() *cobra.Command {
	var dir, listen, level string
	var repairEvery time.Duration
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the embedded default: embedded etcd, SQLite, the process provider; prints the API address and an admin token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(level)
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck
			if repairEvery < 0 {
				return fmt.Errorf("--repair-interval: must be >= 0 (0 disables repairs; got %s)", repairEvery)
			}
			// Dev mode: the alert engine is on and webhooks may reach
			// receivers on this machine or the local network.
			s, err := server.Start(cmd.Context(), server.Config{DataDir: dir, Listen: listen, RepairInterval: &repairEvery,
				Alerts: server.AlertsConfig{AllowPrivateWebhooks: true}}, log)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if _, err := s.Store.CreateNamespace(ctx, "default"); err != nil && !errors.Is(err, store.ErrConflict) {
				return err
			}
			tok, err := s.CreateToken(ctx, "dev-admin", store.Grant{Namespace: "*", Role: "admin"})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "DBPILOT_SERVER=%s\nDBPILOT_TOKEN=%s\n", s.URL, tok)
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".dbpilot/server", "data folder")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "API address")
	cmd.Flags().StringVar(&level, "log-level", "warn", "debug|info|warn|error")
	cmd.Flags().DurationVar(&repairEvery, "repair-interval", server.DefaultRepairInterval, "how often killed nodes are looked for and restarted (0 disables)")
	return cmd
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage API tokens offline (for the first admin token of a serve deployment)"}
	var path, storeDSN, name string
	var grants []string
	create := &cobra.Command{
		Use:   "create --config FILE --name NAME [--grant NS=ROLE]...",
		Short: "Create an API token directly in the store and print its secret (shown once)",
		Long: `Creates an API token in the store the server configuration names, without
a running server (the store's migrations are applied first). This is how a
` + "`serve`" + ` deployment gets its first admin token; later tokens are made through
the API (POST /v1/tokens, dbpilot token create). Grants are NAMESPACE=ROLE
with ROLE admin, operator, viewer or metrics (Prometheus service discovery
only); '*' is every namespace.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(path, storeDSN)
			if err != nil {
				return err
			}
			var gs []store.Grant
			for _, g := range grants {
				ns, role, ok := strings.Cut(g, "=")
				if !ok {
					return fmt.Errorf("--grant %q: want NAMESPACE=ROLE, e.g. '*=admin' or 'acme=operator'", g)
				}
				gs = append(gs, store.Grant{Namespace: ns, Role: role})
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			tok, err := server.IssueToken(ctx, cfg, name, gs)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	create.Flags().StringVar(&path, "config", "", "server configuration file (YAML)")
	create.Flags().StringVar(&storeDSN, "store", "", "override the store: a SQLite path or postgres://…")
	create.Flags().StringVar(&name, "name", "", "token name (shown in the audit log)")
	create.Flags().StringArrayVar(&grants, "grant", []string{"*=admin"}, "NAMESPACE=ROLE (repeatable)")
	_ = create.MarkFlagRequired("config")
	_ = create.MarkFlagRequired("name")
	cmd.AddCommand(create)
	return cmd
}

// loadConfig reads the server config at path; a non-empty storeDSN
// (--store) replaces its store.
func loadConfig(path, storeDSN string) (server.Config, error) {
	cfg, err := server.LoadConfig(path)
	if err != nil {
		return cfg, err
	}
	if storeDSN != "" {
		cfg.Store = storeDSN
	}
	return cfg, nil
}
