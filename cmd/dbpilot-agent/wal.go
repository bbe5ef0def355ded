package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/agent/backup"
)

// newWALPushCmd is PostgreSQL's archive_command: it asks the agent to
// archive one WAL file and exits 0 only once the file is durably stored.
func newWALPushCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "wal-push --socket SOCKET PATH",
		Short: "archive_command: archive one WAL file through the agent (exit 0 once durable)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := args[0]
			if !filepath.IsAbs(p) {
				wd, err := os.Getwd() // archive_command runs in the data directory
				if err != nil {
					return fmt.Errorf("wal-push: %w", err)
				}
				p = filepath.Join(wd, p)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			return backup.PushVia(ctx, socket, p)
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "the agent's archive socket")
	_ = cmd.MarkFlagRequired("socket")
	return cmd
}

// newWALFetchCmd is PostgreSQL's restore_command: exit 0 when the file was
// restored, 1 when the archive does not hold it.
func newWALFetchCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "wal-fetch --socket SOCKET NAME PATH",
		Short: "restore_command: restore one archived WAL file through the agent",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dest := args[1]
			if !filepath.IsAbs(dest) {
				wd, err := os.Getwd()
				if err != nil {
					return fmt.Errorf("wal-fetch: %w", err)
				}
				dest = filepath.Join(wd, dest)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			err := backup.FetchVia(ctx, socket, args[0], dest)
			if errors.Is(err, backup.ErrNotArchived) {
				return &exitError{code: 1, err: err}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "the agent's archive socket")
	_ = cmd.MarkFlagRequired("socket")
	return cmd
}
