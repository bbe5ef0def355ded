package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/internal/localhost"
	"github.com/dbpilot/dbpilot/proto"
)

// RestoreOptions select what Restore restores and where.
type RestoreOptions struct {
	// Repository names the repository holding the backup.
	Repository string
	// BackupID selects a backup; "" is the newest physical backup.
	BackupID string
	// DataDir is the new data directory; it must be absent or empty.
	DataDir string
	// Port is the port the restored server listens on (127.0.0.1).
	Port int
	// Target is the recovery target; zero replays all archived WAL.
	// RestoreCommand is filled in by Restore.
	Target postgres.RecoveryTarget
	// KeepRunning leaves the restored server running (the caller stops it
	// with the returned Instance); otherwise it is stopped cleanly.
	KeepRunning bool
	// ExtractOnly only extracts the backup (no recovery, no start): for a
	// replica that the caller starts in standby mode.
	ExtractOnly bool
	// SourceCluster is the "namespace/project/name" whose backups and WAL
	// are restored ("" = this service's cluster).
	SourceCluster string
	// WALRepository holds the source's WAL archive ("" = the service's
	// archive repository).
	WALRepository string
}

// quoteShell quotes s for /bin/sh.
func quoteShell(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// RestoreCommand returns the restore_command that fetches archived WAL
// through the agent listening on socketPath.
func RestoreCommand(agentBin, socketPath string) string {
	return quoteShell(agentBin) + " wal-fetch --socket " + quoteShell(socketPath) + " %f %p"
}

// ArchiveCommand returns the archive_command that pushes WAL through the
// agent listening on socketPath.
func ArchiveCommand(agentBin, socketPath string) string {
	return quoteShell(agentBin) + " wal-push --socket " + quoteShell(socketPath) + " %p"
}

// Restore restores a physical backup into a new data directory: it
// extracts the backup (checking its sha256), then starts PostgreSQL in
// targeted recovery with WAL fetched from the archive through a temporary
// archive socket, waits for the promotion at the target, and stops it
// unless o.KeepRunning. The superuser's password is reset to tmpl's
// (single-user mode), so a restore of another cluster's backup is reachable
// with this agent's credentials. PITR: set o.Target.Time or o.Target.LSN; a target
// beyond the archived WAL fails with the server's "recovery ended before
// configured recovery target was reached". The restored cluster keeps the
// source's roles and passwords and system identifier.
//
// tmpl is the PostgreSQL configuration to derive the restored instance's
// from (binaries, OS user, parameters, superuser).
func (s *Service) Restore(ctx context.Context, tmpl postgres.Config, o RestoreOptions) (*postgres.Instance, Manifest, error) {
	prefix := s.Prefix()
	if o.SourceCluster != "" {
		prefix = strings.Trim(o.SourceCluster, "/") + "/"
	}
	m, err := s.findBackup(ctx, o.Repository, prefix, o.BackupID)
	if err != nil {
		return nil, Manifest{}, fmt.Errorf("restore: %w", err)
	}
	cfg := tmpl
	cfg.NodeName, cfg.DataDir, cfg.Port, cfg.ListenAddress = "restore", o.DataDir, o.Port, "127.0.0.1"
	cfg.ArchiveCommand, cfg.RestoreCommand, cfg.LogFile = "", "", filepath.Join(filepath.Dir(o.DataDir), filepath.Base(o.DataDir)+".log")
	if o.ExtractOnly {
		cfg.Port = tmpl.Port
	}
	inst, err := postgres.New(cfg, s.Log)
	if err != nil {
		return nil, m, fmt.Errorf("restore: %w", err)
	}
	if empty, err := inst.DataDirEmpty(); err != nil || !empty {
		return nil, m, fmt.Errorf("restore: data directory %s must be absent or empty (%v)", o.DataDir, err)
	}
	log := s.Log.With(zap.String("backup", m.ID), zap.String("data_dir", o.DataDir))
	start := time.Now()
	if err := extractBackup(ctx, s.Repos[o.Repository], m, inst); err != nil {
		_ = os.RemoveAll(o.DataDir)
		return nil, m, fmt.Errorf("restore %s: %w", m.ID, err)
	}
	log.Info("backup extracted", zap.Duration("took", time.Since(start)))
	if o.ExtractOnly {
		return inst, m, nil
	}
	walRepo := o.WALRepository
	if walRepo == "" {
		walRepo = s.ArchiveRepo
	}
	if walRepo == "" {
		walRepo = o.Repository
	}
	ar, ok := s.Repos[walRepo]
	if !ok {
		return nil, m, fmt.Errorf("restore %s: WAL repository %q is not configured", m.ID, walRepo)
	}
	arch := WALArchive{Repo: ar, Prefix: prefix}
	sock := filepath.Join(filepath.Dir(o.DataDir), ".dbpilot-restore-"+NewID()[:8]+".sock")
	uid, gid, chown := inst.Owner()
	srv := &ArchiveServer{Archive: arch, DataDir: o.DataDir, Chown: inst.Chown, Log: log}
	stop, err := srv.Serve(ctx, sock, uid, gid, chown)
	if err != nil {
		return nil, m, fmt.Errorf("restore %s: %w", m.ID, err)
	}
	defer stop()
	t := o.Target
	t.RestoreCommand = RestoreCommand(s.AgentBin, sock)
	if err := inst.StartRecovery(ctx, t); err != nil {
		_ = inst.Stop(context.WithoutCancel(ctx), postgres.StopImmediate)
		return nil, m, fmt.Errorf("restore %s: %w", m.ID, err)
	}
	log.Info("restore recovered and promoted", zap.Duration("took", time.Since(start)))
	// The restored cluster has the source's roles: make it reachable with
	// our superuser credentials (single-user mode needs it stopped).
	if err := inst.Stop(ctx, postgres.StopFast); err != nil {
		return nil, m, fmt.Errorf("restore %s: stop: %w", m.ID, err)
	}
	if err := inst.ResetSuperuser(ctx); err != nil {
		return nil, m, fmt.Errorf("restore %s: %w", m.ID, err)
	}
	if o.KeepRunning {
		if err := inst.Start(ctx, postgres.RolePrimary, nil); err != nil {
			return nil, m, fmt.Errorf("restore %s: start: %w", m.ID, err)
		}
	}
	return inst, m, nil
}

// rowProbe counts the rows of every user table of the current database.
const rowProbe = `SELECT coalesce(sum((xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, relname), false, true, '')))[1]::text::bigint), 0)::bigint FROM pg_stat_user_tables`

// Verify runs a restore drill of the newest physical backup of
// job.TargetJob ("" = any job) in job.Repository: restore into a scratch
// directory on a spare port, replay to the backup's end, start, run
// pg_amcheck on every database and a row-count probe, record verified_at
// (or the failure) on the backup's runs and a backup.verified event, then
// remove the scratch directory. The drill itself is recorded as a run of
// job with method verify.
func (s *Service) Verify(ctx context.Context, tmpl postgres.Config, job Job, occurrence time.Time) (Run, error) {
	now := time.Now()
	r := Run{ID: "verify-" + NewID()[:12], Job: job.Name, Occurrence: occurrence, Node: s.Node, Method: MethodVerify, Repository: job.Repository, StartedAt: now}
	if err := s.Store.StartRun(ctx, &r, proto.TypeBackupStarted, proto.BackupStarted{Header: s.header(now), BackupRun: runRef(r)}); err != nil {
		return r, err
	}
	rows, path, err := s.drill(ctx, tmpl, job, &r)
	r.FinishedAt = time.Now()
	ev := proto.BackupVerified{Header: s.header(r.FinishedAt), BackupRun: runRef(r), Path: path, OK: err == nil, Rows: rows,
		DurationMS: r.FinishedAt.Sub(r.StartedAt).Milliseconds()}
	if path == "" {
		ev.Path = "(none)"
	}
	r.Status = StatusSucceeded
	verr := ""
	if err != nil {
		r.Status, r.Error, verr, ev.Error = StatusFailed, err.Error(), err.Error(), err.Error()
	}
	bg := context.WithoutCancel(ctx)
	if ferr := s.Store.FinishRun(bg, &r, "", nil); ferr != nil {
		return r, ferr
	}
	if merr := s.Store.MarkVerified(bg, path, r.FinishedAt, verr, proto.TypeBackupVerified, ev); merr != nil {
		return r, merr
	}
	if err != nil {
		s.Log.Error("restore drill failed", zap.String("backup_path", path), zap.Error(err))
		return r, fmt.Errorf("verify %s: %w", job.Name, err)
	}
	s.Log.Info("restore drill passed", zap.String("backup_path", path), zap.Int64("rows", rows), zap.Duration("took", r.FinishedAt.Sub(r.StartedAt)))
	return r, nil
}

func (s *Service) drill(ctx context.Context, tmpl postgres.Config, job Job, r *Run) (int64, string, error) {
	var m Manifest
	all, err := s.Backups(ctx, job.Repository)
	if err != nil {
		return 0, "", err
	}
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Method == MethodPhysical && (job.TargetJob == "" || all[i].Job == job.TargetJob) {
			m = all[i]
			break
		}
	}
	if m.ID == "" {
		return 0, "", fmt.Errorf("no physical backup to verify in repository %s: %w", job.Repository, ErrNotFound)
	}
	r.RepositoryPath = m.Path
	_ = s.Store.SetRepositoryPath(ctx, r.ID, m.Path)
	port, err := localhost.FreePort("")
	if err != nil {
		return 0, m.Path, err
	}
	dir := filepath.Join(s.ScratchDir, "verify-"+r.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, m.Path, fmt.Errorf("scratch dir: %w", err)
	}
	defer os.RemoveAll(dir)
	inst, _, err := s.Restore(ctx, tmpl, RestoreOptions{Repository: job.Repository, BackupID: m.ID, DataDir: filepath.Join(dir, "data"), Port: port,
		Target: postgres.RecoveryTarget{Immediate: true}, KeepRunning: true})
	if err != nil {
		return 0, m.Path, err
	}
	defer inst.Stop(context.WithoutCancel(ctx), postgres.StopImmediate)
	su := inst.SuperuserLogin()
	if _, err := inst.StreamTool(ctx, "pg_amcheck", append(inst.ConnArgs(su.Username), "--all", "--install-missing", "--heapallindexed"),
		postgres.ToolOptions{Login: &su}); err != nil {
		return 0, m.Path, fmt.Errorf("pg_amcheck: %w", err)
	}
	dbs, err := inst.Databases(ctx)
	if err != nil {
		return 0, m.Path, err
	}
	var total int64
	for _, db := range dbs {
		n, err := inst.QueryInt(ctx, db, rowProbe)
		if err != nil {
			return 0, m.Path, fmt.Errorf("row-count probe: %w", err)
		}
		total += n
	}
	if err := inst.Stop(ctx, postgres.StopFast); err != nil && !errors.Is(err, postgres.ErrNotRunning) {
		return total, m.Path, err
	}
	return total, m.Path, nil
}
