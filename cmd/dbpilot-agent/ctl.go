package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/clusterview"
	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// newClusterCmd is a small patronictl-like tool working on etcd directly,
// for operators without the control plane. It dials etcd as the agent
// does (dcs.ClientConfig): the same TLS and login options.
func newClusterCmd() *cobra.Command {
	var opts dcs.Options
	var id, passwordFile string
	cmd := &cobra.Command{Use: "cluster", Short: "Inspect a cluster or request a switchover, straight from etcd"}
	pf := cmd.PersistentFlags()
	pf.StringSliceVar(&opts.Endpoints, "etcd", []string{"http://127.0.0.1:2379"}, "etcd endpoints (https:// with --cacert)")
	pf.StringVar(&id, "cluster", "demo/default/local", "namespace/project/cluster")
	pf.StringVar(&opts.Username, "user", "", "etcd user, for an etcd with authentication (the cluster's agent user or root)")
	pf.StringVar(&passwordFile, "password-file", "", "file holding --user's password")
	pf.StringVar(&opts.CAFile, "cacert", "", "PEM CA bundle that verifies etcd's server certificate (the agent's etcd.tls.ca_file)")
	pf.StringVar(&opts.CertFile, "cert", "", "PEM client certificate for etcd's client-certificate authentication (with --key)")
	pf.StringVar(&opts.KeyFile, "key", "", "PEM key of --cert")
	pf.DurationVar(&opts.DialTimeout, "dial-timeout", 10*time.Second, "how long to wait for etcd to answer the first time")
	// withStatus connects, reads the cluster and hands both to fn.
	withStatus := func(ctx context.Context, fn func(*admin.Admin, keyspace.Keys, clusterview.Status) error) error {
		keys, err := keyspace.ParseClusterID(id)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--cluster: %w", err)}
		}
		if (opts.CertFile == "") != (opts.KeyFile == "") {
			return &exitError{code: 2, err: errors.New("--cert and --key go together; set both or neither")}
		}
		if opts.Username == "" && passwordFile != "" {
			return &exitError{code: 2, err: errors.New("--password-file: only with --user")}
		}
		if passwordFile != "" {
			b, err := os.ReadFile(passwordFile)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--password-file: %w", err)}
			}
			opts.Password = strings.TrimSpace(string(b))
		}
		adm, err := admin.Dial(opts, zap.NewNop())
		if err != nil {
			return err
		}
		defer adm.Close()
		s, err := clusterview.ReadStatus(ctx, adm, keys)
		if err != nil {
			return err
		}
		return fn(adm, keys, s)
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "Members with role, state, LSN, lag, timeline and term; then the history",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStatus(cmd.Context(), func(_ *admin.Admin, _ keyspace.Keys, s clusterview.Status) error {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "cluster %s  term %d  leader %q  sync %v\n", id, s.Term, s.Leader, s.Sync)
				s.WriteTable(out)
				for _, h := range s.History {
					fmt.Fprintf(out, "history: term %d  %s  %-10s  from %q  at %s\n", h.Term, h.Node, h.Reason, h.Previous, time.UnixMilli(h.AtMS).Format(time.RFC3339))
				}
				for _, err := range s.Errors {
					fmt.Fprintf(cmd.ErrOrStderr(), "malformed: %v\n", err)
				}
				return nil
			})
		},
	}
	var to, reason string
	switchover := &cobra.Command{
		Use:   "switchover",
		Short: "Request a planned switchover from the current primary (to --to, or the best replica)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStatus(cmd.Context(), func(adm *admin.Admin, keys keyspace.Keys, s clusterview.Status) error {
				if s.Leader == "" {
					return errors.New("no primary: nothing to switch over")
				}
				ok, err := adm.RequestSwitchover(cmd.Context(), keys, s.Leader, to, reason)
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("a switchover is already pending or in progress (key %s); wait for it, or delete a stale request with etcdctl del", keys.Switchover())
				}
				fmt.Fprintf(cmd.OutOrStdout(), "switchover from %s requested (to %q)\n", s.Leader, to)
				return nil
			})
		},
	}
	switchover.Flags().StringVar(&to, "to", "", "target replica (default: the most advanced healthy one)")
	switchover.Flags().StringVar(&reason, "reason", "requested", "free text recorded with the request")
	cmd.AddCommand(list, switchover)
	return cmd
}
