package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/backup"
	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/internal/localhost"
	"github.com/dbpilot/dbpilot/proto"
)

func newBackupBenchCmd() *cobra.Command {
	var (
		scale    int
		rounds   int
		dir      string
		agentBin string
		compress string
	)
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Full backup vs plain pg_basebackup, restore and PITR times on a pgbench database",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if agentBin == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				agentBin = filepath.Join(filepath.Dir(exe), "dbpilot-agent")
			}
			return benchBackup(cmd.Context(), cmd.OutOrStdout(), dir, agentBin, compress, scale, rounds)
		},
	}
	cmd.Flags().IntVar(&scale, "scale", 70, "pgbench scale (70 ≈ 1 GiB)")
	cmd.Flags().StringVar(&compress, "compression", "s2", "compression of the dbpilot backup: s2 (the default of backup jobs), zstd or none")
	cmd.Flags().IntVar(&rounds, "rounds", 5, "alternating rounds of plain pg_basebackup and dbpilot backup (median reported)")
	cmd.Flags().StringVar(&dir, "dir", ".dbpilot/bench-backup", "work folder (wiped)")
	cmd.Flags().StringVar(&agentBin, "agent-bin", "", "dbpilot-agent binary (default: next to dbpilot-bench)")
	return cmd
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("agent binary: %w (run make build)", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func benchBackup(ctx context.Context, w io.Writer, dir, agentBin, compress string, scale, rounds int) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for d := dir; d != "/"; d = filepath.Dir(d) { // PostgreSQL's OS user must reach its data dir
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			_ = os.Chmod(d, st.Mode().Perm()|0o011)
		}
	}
	bin := filepath.Join(dir, "dbpilot-agent")
	if err := copyExecutable(agentBin, bin); err != nil {
		return err
	}
	log := zap.NewNop()
	port, err := localhost.FreePort("")
	if err != nil {
		return err
	}
	sock := filepath.Join(dir, "archive.sock")
	osUser := ""
	if os.Geteuid() == 0 {
		osUser = "postgres"
	}
	su := postgres.Credentials{Username: "postgres", Password: "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	cfg := postgres.Config{
		NodeName: "bench", BinDir: config.DetectBinDir(), DataDir: filepath.Join(dir, "data"), ListenAddress: "127.0.0.1", Port: port,
		OSUser: osUser, Superuser: su, Replication: su,
		Parameters:     map[string]string{"shared_buffers": "256MB", "max_wal_size": "4GB", "synchronous_commit": "off", "max_connections": "50"},
		ArchiveCommand: backup.ArchiveCommand(bin, sock),
	}
	pg, err := postgres.New(cfg, log)
	if err != nil {
		return err
	}
	if err := pg.Initdb(ctx); err != nil {
		return err
	}
	repoDir := filepath.Join(dir, "repo")
	if err := os.Mkdir(repoDir, 0o700); err != nil {
		return err
	}
	repo, _ := backup.NewFSRepository("fs", repoDir)
	sealer, err := backup.LoadKey(filepath.Join(dir, "state", "backup.key"))
	if err != nil {
		return err
	}
	store, err := backup.OpenStore(ctx, filepath.Join(dir, "state", backup.StoreFile), sealer)
	if err != nil {
		return err
	}
	defer store.Close()
	svc := &backup.Service{Node: "bench", Cluster: proto.ClusterRef{Namespace: "bench", Project: "default", Cluster: "bench"}, Store: store, PG: pg,
		Login: su, Superuser: su, Repos: map[string]backup.Repository{"fs": repo}, ArchiveRepo: "fs", AgentBin: bin, ScratchDir: dir, Log: log}
	arch, _ := svc.Archive()
	uid, gid, chown := pg.Owner()
	srv := &backup.ArchiveServer{Archive: arch, DataDir: cfg.DataDir, Chown: pg.Chown, Log: log}
	stopSrv, err := srv.Serve(ctx, sock, uid, gid, chown)
	if err != nil {
		return err
	}
	defer stopSrv()
	if err := pg.Start(ctx, postgres.RolePrimary, nil); err != nil {
		return err
	}
	defer pg.Stop(context.WithoutCancel(ctx), postgres.StopImmediate)

	fmt.Fprintf(w, "bench-backup: pgbench -i -s %d ...\n", scale)
	t0 := time.Now()
	if _, err := pg.StreamTool(ctx, "pgbench", append(pg.ConnArgs(su.Username)[:6:6], "-i", "-q", "-s", strconv.Itoa(scale), "postgres"), postgres.ToolOptions{Login: &su}); err != nil {
		return err
	}
	if _, err := pg.QueryInt(ctx, "postgres", "SELECT count(*) FROM (SELECT pg_switch_wal()) x"); err != nil {
		return err
	}
	sizeB, err := pg.QueryInt(ctx, "postgres", "SELECT sum(pg_database_size(oid))::bigint FROM pg_database")
	if err != nil {
		return err
	}
	sizeMB := float64(sizeB) / (1 << 20)
	fmt.Fprintf(w, "bench-backup: generated %.0f MB in %s\n", sizeMB, time.Since(t0).Round(time.Second))

	job := backup.Job{Name: "full", Schedule: "@daily", TimeZone: "UTC", Window: time.Hour, SourceType: "postgresql", Method: backup.MethodPhysical, Repository: "fs", Compression: compress}
	var raw, ours []time.Duration
	var last backup.Run
	runRaw := func() error {
		rawDir := filepath.Join(dir, "raw")
		if err := os.MkdirAll(rawDir, 0o755); err != nil {
			return err
		}
		defer os.RemoveAll(rawDir)
		if err := pg.Chown(rawDir); err != nil {
			return err
		}
		syscall.Sync() // start from a clean page cache writeback state
		t := time.Now()
		if _, err := pg.StreamTool(ctx, "pg_basebackup", append(pg.ConnArgs(su.Username), "-D", rawDir, "-Ft", "-X", "fetch", "--checkpoint=fast", "--no-manifest"),
			postgres.ToolOptions{Login: &su}); err != nil {
			return err
		}
		raw = append(raw, time.Since(t))
		return nil
	}
	runOurs := func() error {
		syscall.Sync()
		t := time.Now()
		r, err := svc.RunBackup(ctx, job, time.Time{})
		if err != nil {
			return err
		}
		ours = append(ours, time.Since(t))
		last = r
		return nil
	}
	for i := 0; i < rounds; i++ {
		// Alternate the order so neither side always follows the other's writes.
		first, second := runRaw, runOurs
		if i%2 == 1 {
			first, second = runOurs, runRaw
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
		fmt.Fprintf(w, "bench-backup: round %d: pg_basebackup %.1fs, dbpilot %.1fs (%d MB stored)\n", i+1, raw[i].Seconds(), ours[i].Seconds(), last.SizeBytes>>20)
	}

	// WAL after the backup for PITR: two pgbench bursts around the target time.
	burst := func() error {
		_, err := pg.StreamTool(ctx, "pgbench", append(pg.ConnArgs(su.Username)[:6:6], "-c", "2", "-T", "5", "postgres"), postgres.ToolOptions{Login: &su})
		return err
	}
	if err := burst(); err != nil {
		return err
	}
	target := time.Now()
	if err := burst(); err != nil {
		return err
	}
	if err := waitArchived(ctx, pg); err != nil {
		return err
	}

	restore := func(name string, t postgres.RecoveryTarget) (time.Duration, error) {
		p, _ := localhost.FreePort("")
		start := time.Now()
		inst, _, err := svc.Restore(ctx, cfg, backup.RestoreOptions{Repository: "fs", BackupID: last.ID, DataDir: filepath.Join(dir, name), Port: p, Target: t, KeepRunning: true})
		d := time.Since(start)
		if err != nil {
			return d, err
		}
		_ = inst.Stop(ctx, postgres.StopImmediate)
		os.RemoveAll(filepath.Join(dir, name))
		return d, nil
	}
	restoreD, err := restore("restore", postgres.RecoveryTarget{Immediate: true})
	if err != nil {
		return err
	}
	pitrD, err := restore("pitr", postgres.RecoveryTarget{Time: target})
	if err != nil {
		return err
	}
	r, o := durations(raw).median(), durations(ours).median()
	fmt.Fprintf(w, "bench-backup: size_mb=%.0f backup_s=%.1f raw_pg_basebackup_s=%.1f ratio=%.2f restore_s=%.1f pitr_s=%.1f\n",
		sizeMB, o.Seconds(), r.Seconds(), o.Seconds()/r.Seconds(), restoreD.Seconds(), pitrD.Seconds())
	return nil
}

// waitArchived switches WAL and waits until the switched segment is archived.
func waitArchived(ctx context.Context, pg *postgres.Instance) error {
	conn, err := pg.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var seg string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&seg); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		var last *string
		if err := conn.QueryRow(ctx, "SELECT last_archived_wal FROM pg_stat_archiver").Scan(&last); err != nil {
			return err
		}
		if last != nil && *last >= seg {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("segment %s not archived within 5 minutes", seg)
}
