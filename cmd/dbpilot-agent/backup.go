package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent"
	"github.com/dbpilot/dbpilot/agent/backup"
	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/internal/localhost"
)

// backupEnv is what every backup subcommand opens from the agent config.
type backupEnv struct {
	cfg   *config.Config
	pgcfg postgres.Config
	svc   *backup.Service
}

func openBackupEnv(ctx context.Context, path string, log *zap.Logger) (*backupEnv, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("%s: invalid configuration:\n%s", path, indent(err))}
	}
	if cfg.Backup == nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("%s: no backup: section", path)}
	}
	creds, err := cfg.LoadCredentials()
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	pgcfg := postgres.Config{
		NodeName: cfg.Node.Name, BinDir: cfg.Postgres.BinDir, DataDir: cfg.Postgres.DataDir,
		ListenAddress: cfg.Postgres.ListenAddress, Port: cfg.Postgres.Port, OSUser: cfg.Postgres.OSUser,
		Parameters:  cfg.Postgres.Parameters,
		Superuser:   postgres.Credentials{Username: creds.Superuser.Username, Password: creds.Superuser.Password.Reveal()},
		Replication: postgres.Credentials{Username: creds.Replication.Username, Password: creds.Replication.Password.Reveal()},
		HBA:         cfg.Postgres.HBA,
	}
	pg, err := postgres.New(pgcfg, log)
	if err != nil {
		return nil, err
	}
	svc, _, err := agent.OpenBackups(ctx, cfg, pgcfg, pg, log)
	if err != nil {
		return nil, err
	}
	return &backupEnv{cfg: cfg, pgcfg: pgcfg, svc: svc}, nil
}

func (e *backupEnv) job(name string) (backup.Job, error) {
	for _, j := range agent.JobsFromConfig(e.cfg) {
		if j.Name == name {
			return j, nil
		}
	}
	return backup.Job{}, fmt.Errorf("job %q is not in the configuration", name)
}

func newBackupCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "List, run, restore and verify backups locally (no control plane needed)",
	}
	cmd.PersistentFlags().StringVar(&path, "config", "", "agent configuration file (YAML)")
	_ = cmd.MarkPersistentFlagRequired("config")
	with := func(f backupAction) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			e, err := openBackupEnv(cmd.Context(), path, backupCLILog())
			if err != nil {
				return err
			}
			defer e.svc.Store.Close()
			return f(cmd, e, args)
		}
	}
	cmd.AddCommand(newBackupListCmd(with), newBackupRunCmd(with), newBackupRestoreCmd(with), newBackupVerifyCmd(with), newBackupSecretCmd(with))
	return cmd
}

// backupAction is the body of a `backup` subcommand, run with the backup
// environment of the --config file open (closed when it returns).
type backupAction func(cmd *cobra.Command, e *backupEnv, args []string) error

// withBackupEnv turns a backupAction into a cobra RunE (newBackupCmd's
// `with`, which opens the environment of its --config flag).
type withBackupEnv func(backupAction) func(*cobra.Command, []string) error

// backupCLILog is the subcommands' logger: development format at info
// level on stderr, no stack traces.
func backupCLILog() *zap.Logger {
	zc := zap.NewDevelopmentConfig()
	zc.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	zc.DisableStacktrace = true
	zc.OutputPaths = []string{"stderr"}
	l, _ := zc.Build()
	return l
}

// newBackupListCmd is `backup list [--repository R]`.
func newBackupListCmd(with withBackupEnv) *cobra.Command {
	var repo string
	list := &cobra.Command{
		Use:   "list",
		Short: "List complete backups in the repositories and this node's runs",
		Args:  cobra.NoArgs,
		RunE: with(func(cmd *cobra.Command, e *backupEnv, _ []string) error {
			return listBackups(cmd.Context(), cmd.OutOrStdout(), e, repo)
		}),
	}
	list.Flags().StringVar(&repo, "repository", "", "only this repository")
	return list
}

// newBackupRunCmd is `backup run --job NAME`.
func newBackupRunCmd(with withBackupEnv) *cobra.Command {
	var jobName string
	run := &cobra.Command{
		Use:   "run --job NAME",
		Short: "Run a configured job now on this node (backup, or restore drill for a verify job)",
		Args:  cobra.NoArgs,
		RunE: with(func(cmd *cobra.Command, e *backupEnv, _ []string) error {
			j, err := e.job(jobName)
			if err != nil {
				return err
			}
			var r backup.Run
			if j.Method == backup.MethodVerify {
				r, err = e.svc.Verify(cmd.Context(), e.pgcfg, j, time.Time{})
			} else {
				r, err = e.svc.RunBackup(cmd.Context(), j, time.Time{})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "run %s: %s %s size=%d checksum=%s stop_lsn=%s\n", r.ID, r.Status, r.RepositoryPath, r.SizeBytes, r.Checksum, r.StopLSN)
			return err
		}),
	}
	run.Flags().StringVar(&jobName, "job", "", "job name from the configuration")
	_ = run.MarkFlagRequired("job")
	return run
}

// newBackupRestoreCmd is `backup restore --repository R --data-dir DIR …`.
func newBackupRestoreCmd(with withBackupEnv) *cobra.Command {
	var ro backup.RestoreOptions
	var targetTime, targetLSN string
	var keep bool
	restore := &cobra.Command{
		Use:   "restore --repository R --data-dir DIR [--backup ID] [--target-time T | --target-lsn L]",
		Short: "Restore a physical backup (optionally to a point in time) into a new data directory",
		Args:  cobra.NoArgs,
		RunE: with(func(cmd *cobra.Command, e *backupEnv, _ []string) error {
			if targetTime != "" {
				t, err := time.Parse(time.RFC3339Nano, targetTime)
				if err != nil {
					return fmt.Errorf("--target-time: want RFC 3339, e.g. 2026-01-02T15:04:05.123Z: %w", err)
				}
				ro.Target.Time = t
			}
			ro.Target.LSN = targetLSN
			if ro.Port == 0 {
				p, err := localhost.FreePort("")
				if err != nil {
					return err
				}
				ro.Port = p
			}
			ro.KeepRunning = keep
			_, m, err := e.svc.Restore(cmd.Context(), e.pgcfg, ro)
			if err != nil {
				return err
			}
			state := "stopped"
			if keep {
				state = fmt.Sprintf("running on 127.0.0.1:%d (the restore command exits: stop it with pg_ctl -D %s stop)", ro.Port, ro.DataDir)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored backup %s into %s, recovered and promoted; %s\n", m.ID, ro.DataDir, state)
			return nil
		}),
	}
	restore.Flags().StringVar(&ro.Repository, "repository", "", "repository name")
	restore.Flags().StringVar(&ro.BackupID, "backup", "", "backup id (default: newest physical)")
	restore.Flags().StringVar(&ro.DataDir, "data-dir", "", "new, empty data directory")
	restore.Flags().IntVar(&ro.Port, "port", 0, "port of the restored server during recovery (default: a free port)")
	restore.Flags().StringVar(&targetTime, "target-time", "", "point in time to recover to (RFC 3339)")
	restore.Flags().StringVar(&targetLSN, "target-lsn", "", "WAL position to recover to")
	restore.Flags().BoolVar(&keep, "keep-running", false, "leave the restored server running")
	restore.Flags().StringVar(&ro.SourceCluster, "source-cluster", "", "restore another cluster's backups: namespace/project/name")
	restore.Flags().StringVar(&ro.WALRepository, "wal-repository", "", "repository of the source's WAL archive (default: backup.wal_archive)")
	_ = restore.MarkFlagRequired("repository")
	_ = restore.MarkFlagRequired("data-dir")
	return restore
}

// newBackupVerifyCmd is `backup verify --repository R [--job JOB]`.
func newBackupVerifyCmd(with withBackupEnv) *cobra.Command {
	var vRepo, vJob string
	verify := &cobra.Command{
		Use:   "verify --repository R [--job JOB]",
		Short: "Restore drill: restore the newest physical backup into a scratch dir, check it, record verified_at",
		Args:  cobra.NoArgs,
		RunE: with(func(cmd *cobra.Command, e *backupEnv, _ []string) error {
			r, err := e.svc.Verify(cmd.Context(), e.pgcfg, backup.Job{Name: "manual-verify", Method: backup.MethodVerify, Repository: vRepo, TargetJob: vJob}, time.Time{})
			fmt.Fprintf(cmd.OutOrStdout(), "verify %s: %s %s %s\n", r.ID, r.Status, r.RepositoryPath, r.Error)
			return err
		}),
	}
	verify.Flags().StringVar(&vRepo, "repository", "", "repository name")
	verify.Flags().StringVar(&vJob, "job", "", "only backups of this job")
	_ = verify.MarkFlagRequired("repository")
	return verify
}

// newBackupSecretCmd is `backup secret set NAME`.
func newBackupSecretCmd(with withBackupEnv) *cobra.Command {
	secret := &cobra.Command{Use: "secret", Short: "Manage secrets sealed with the host key"}
	secret.AddCommand(&cobra.Command{
		Use:   "set NAME",
		Short: "Seal the value read from standard input under NAME (e.g. backup-user, <repo>-secret-key)",
		Args:  cobra.ExactArgs(1),
		RunE: with(func(cmd *cobra.Command, e *backupEnv, args []string) error {
			b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20))
			if err != nil {
				return err
			}
			v := strings.TrimRight(string(b), "\r\n")
			if v == "" {
				return errors.New("empty secret on standard input")
			}
			if err := e.svc.Store.PutSecret(cmd.Context(), args[0], []byte(v)); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "secret %s sealed\n", args[0])
			return nil
		}),
	})
	return secret
}

func listBackups(ctx context.Context, w io.Writer, e *backupEnv, only string) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tBACKUP\tJOB\tMETHOD\tNODE\tFINISHED\tSIZE\tSTOP LSN\tTL")
	var errs []error
	for _, r := range e.cfg.Backup.Repositories {
		if only != "" && r.Name != only {
			continue
		}
		list, err := e.svc.Backups(ctx, r.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, m := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\n", r.Name, m.ID, m.Job, m.Method, m.Node, m.FinishedAt.Format(time.RFC3339), m.SizeBytes, m.StopLSN, m.Timeline)
		}
	}
	tw.Flush()
	runs, err := e.svc.Store.Runs(ctx, "", 20)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "\nrecent runs on this node:")
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tJOB\tSTATUS\tSTARTED\tSIZE\tVERIFIED\tERROR")
	for _, r := range runs {
		ver := ""
		if !r.VerifiedAt.IsZero() {
			ver = r.VerifiedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.Job, r.Status, r.StartedAt.UTC().Format(time.RFC3339), r.SizeBytes, ver, firstLine(r.Error))
	}
	tw.Flush()
	return errors.Join(errs...)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
