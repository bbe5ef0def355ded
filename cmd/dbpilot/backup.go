package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/cmd/dbpilot/internal/client"
	"github.com/dbpilot/dbpilot/proto"
)

// The backup commands use the endpoints issue 4 describes:
//
//	GET  /v1/namespaces/{ns}/clusters/{cluster}/backups   list
//	POST /v1/namespaces/{ns}/clusters/{cluster}/backups   run now (operation)
//	POST /v1/namespaces/{ns}/clusters/{cluster}/restore   restore / PITR (operation)
//
// A server without them answers 404 "no such endpoint": the commands then
// fail with "not supported by this server (404)" and exit code 1.
func newBackupCmd(a *app) *cobra.Command {
	cmd := group("backup", "List, run and restore backups", []string{"backups"})
	cmd.AddCommand(newBackupListCmd(a), newBackupRunCmd(a), newBackupRestoreCmd(a))
	return cmd
}

func newBackupListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use: "list CLUSTER", Aliases: []string{"ls"}, Short: "List a cluster's backups",
		Args: args(cobra.ExactArgs(1)), ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			bs, err := cl.ListBackups(ctx, ns, argv[0])
			if err != nil {
				return unsupported("backup list", err)
			}
			return printList(a, bs, func(w io.Writer) {
				if len(bs) == 0 {
					fmt.Fprintf(w, "Cluster %s has no backups yet.\n", argv[0])
					return
				}
				row(w, "ID", "STATE", "NODE", "METHOD", "SIZE", "STARTED", "FINISHED", "START LSN", "STOP LSN", "TL", "VERIFIED")
				for _, b := range bs {
					tl := "-"
					if b.Timeline > 0 {
						tl = fmt.Sprint(b.Timeline)
					}
					row(w, b.ID, b.State, orDash(b.Node), orDash(b.Method), bytesHuman(b.SizeBytes), stamp(b.StartedAt), stamp(b.FinishedAt),
						orDash(b.StartLSN), orDash(b.StopLSN), tl, stamp(b.VerifiedAt))
				}
			})
		},
	}
}

func stamp(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func newBackupRunCmd(a *app) *cobra.Command {
	var wf waitFlags
	cmd := &cobra.Command{
		Use: "run CLUSTER", Short: "Take a backup now",
		Args: args(cobra.ExactArgs(1)), ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			err := a.operate(cmd, wf, &waitSpec{cluster: argv[0], label: "backup " + argv[0]},
				func(ctx context.Context, cl *client.Client, ns string) (client.Operation, error) {
					return cl.RunBackup(ctx, ns, argv[0])
				})
			return unsupported("backup run", err)
		},
	}
	wf.add(cmd)
	return cmd
}

func newBackupRestoreCmd(a *app) *cobra.Command {
	var target, backupID, at string
	var wf waitFlags
	cmd := &cobra.Command{
		Use:   "restore CLUSTER --into TARGET [--backup ID] [--time RFC3339]",
		Short: "Restore a cluster's backup, or a point in time, into a new cluster",
		Example: `  dbpilot backup restore demo --into demo-copy --time 2026-01-02T15:04:05Z --wait
  dbpilot backup restore demo --into demo-b123 --backup b-123`,
		Args: args(cobra.ExactArgs(1)), ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			req := proto.RestoreRequest{Target: target, BackupID: backupID}
			if req.Target == "" {
				return usagef("--into: required: the cluster to restore into")
			}
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return usagef("--time: must be RFC 3339, like 2026-01-02T15:04:05Z (got %q)", at)
				}
				req.TargetTime = &t
			}
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			// The server restores into a new cluster only: say so before
			// asking it (and before any confirmation that would suggest
			// otherwise).
			ctx, cancel := a.ctx(cmd)
			_, gerr := cl.GetCluster(ctx, ns, req.Target)
			cancel()
			var ae *client.Error
			switch {
			case gerr == nil:
				return usagef("--into: cluster %s already exists; restore into a new cluster name (restoring over an existing cluster is not supported)", req.Target)
			case errors.As(gerr, &ae) && ae.Status == 404:
			default:
				return gerr
			}
			err = a.operate(cmd, wf, &waitSpec{cluster: req.Target, label: "restore " + argv[0] + " into " + req.Target},
				func(ctx context.Context, cl *client.Client, ns string) (client.Operation, error) {
					return cl.Restore(ctx, ns, argv[0], req)
				})
			return unsupported("backup restore", err)
		},
	}
	cmd.Flags().StringVar(&target, "into", "", "new cluster to restore into (must not exist)")
	cmd.Flags().StringVar(&backupID, "backup", "", "backup id (default: the newest usable one)")
	cmd.Flags().StringVar(&at, "time", "", "point in time to recover to (RFC 3339; default: the end of the backup)")
	wf.add(cmd)
	return cmd
}
