package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/clusterview"
	"github.com/dbpilot/dbpilot/agent/dcs"
)

// newClusterCmd is a small patronictl-like tool working on etcd directly,
// for operators without the control plane.
func newClusterCmd() *cobra.Command {
	var endpoints []string
	var id, user, passwordFile string
	cmd := &cobra.Command{Use: "cluster", Short: "Inspect a cluster or request a switchover, straight from etcd"}
	cmd.PersistentFlags().StringSliceVar(&endpoints, "etcd", []string{"http://127.0.0.1:2379"}, "etcd endpoints")
	cmd.PersistentFlags().StringVar(&id, "cluster", "demo/default/local", "namespace/project/cluster")
	cmd.PersistentFlags().StringVar(&user, "user", "", "etcd user, for an etcd with authentication (the cluster's agent user or root)")
	cmd.PersistentFlags().StringVar(&passwordFile, "password-file", "", "file holding --user's password")
	// withStatus connects, reads the cluster and hands both to fn.
	withStatus := func(ctx context.Context, fn func(*clientv3.Client, dcs.Keys, clusterview.Status) error) error {
		parts := strings.Split(id, "/")
		if len(parts) != 3 {
			return &exitError{code: 2, err: fmt.Errorf("--cluster: want namespace/project/cluster (got %q)", id)}
		}
		pw, err := dcs.ReadPasswordFile(passwordFile)
		if err != nil {
			return err
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 10 * time.Second, Username: user, Password: pw, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		defer cli.Close()
		keys := dcs.NewKeys(parts[0], parts[1], parts[2])
		s, err := clusterview.ReadStatus(ctx, cli, keys)
		if err != nil {
			return err
		}
		return fn(cli, keys, s)
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "Members with role, state, LSN, lag, timeline and term; then the history",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStatus(cmd.Context(), func(_ *clientv3.Client, _ dcs.Keys, s clusterview.Status) error {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "cluster %s  term %d  leader %q  sync %v\n", id, s.Term, s.Leader, s.Sync)
				s.WriteTable(out)
				for _, h := range s.History {
					fmt.Fprintf(out, "history: term %d  %s  %-10s  from %q  at %s\n", h.Term, h.Node, h.Reason, h.Previous, time.UnixMilli(h.AtMS).Format(time.RFC3339))
				}
				return nil
			})
		},
	}
	var to string
	switchover := &cobra.Command{
		Use:   "switchover",
		Short: "Request a planned switchover from the current primary (to --to, or the best replica)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStatus(cmd.Context(), func(cli *clientv3.Client, keys dcs.Keys, s clusterview.Status) error {
				if s.Leader == "" {
					return fmt.Errorf("no primary: nothing to switch over")
				}
				if err := clusterview.RequestSwitchover(cmd.Context(), cli, keys, s.Leader, to); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "switchover from %s requested (to %q)\n", s.Leader, to)
				return nil
			})
		},
	}
	switchover.Flags().StringVar(&to, "to", "", "target replica (default: the most advanced healthy one)")
	cmd.AddCommand(list, switchover)
	return cmd
}
