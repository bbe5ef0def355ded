package postgres

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Initdb creates a new cluster in the data directory (created 0700, owned by
// the OS user, if absent): initdb --data-checksums --encoding=UTF8
// --locale=C, superuser Config.Superuser (password via a temporary --pwfile
// removed afterwards), scram-sha-256 for host connections, followed by
// Config.InitdbArgs. The pg_hba.conf and postgresql.conf initdb writes are
// replaced at Start. Data checksums also let pg_rewind work; C collation is
// immune to glibc collation changes.
//
// Errors: ErrAlreadyInitialized; ErrDataDirNotEmpty; initdb's failure with
// its last output lines; ctx's error (initdb is killed).
func (p *Instance) Initdb(ctx context.Context) error {
	if p.IsInitialized() {
		return fmt.Errorf("initdb: %w", ErrAlreadyInitialized)
	}
	if empty, err := p.dataDirEmpty(); err != nil {
		return fmt.Errorf("initdb: %w", err)
	} else if !empty {
		return fmt.Errorf("initdb: %w", ErrDataDirNotEmpty)
	}
	if err := p.ensureDataDir(); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	pwfile, remove, err := p.writeSecretFile("pwfile", p.cfg.Superuser.Password+"\n")
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	defer remove()
	args := append([]string{
		"-D", p.cfg.DataDir,
		"-U", p.cfg.Superuser.Username,
		"--pwfile=" + pwfile,
		"--auth-local=trust",
		"--auth-host=scram-sha-256",
		"--data-checksums",
		"--encoding=UTF8",
		"--locale=C",
	}, p.cfg.InitdbArgs...)
	start := time.Now()
	if _, err := p.runTool(ctx, "initdb", args); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	p.log.Info("initdb done", zap.Duration("took", time.Since(start)))
	return nil
}

// BaseBackup clones the data directory from the primary up with
// pg_basebackup -X stream --checkpoint=fast as Config.Replication (password
// through a temporary PGPASSFILE). The data directory must be absent or
// empty; it is created 0700 and owned by the OS user. This node's
// replication slot is created on up first if missing (best effort, see
// [SlotName]). pg_basebackup removes
// what it wrote if it fails. The copied configuration files are replaced at
// Start. See https://www.postgresql.org/docs/15/app-pgbasebackup.html.
//
// Errors: ErrAlreadyRunning; ErrDataDirNotEmpty; pg_basebackup's failure
// with its last output lines; ctx's error (pg_basebackup is killed).
func (p *Instance) BaseBackup(ctx context.Context, up Upstream) error {
	if err := validUpstream(&up); err != nil {
		return fmt.Errorf("base backup: %w", err)
	}
	if p.Running() {
		return fmt.Errorf("base backup from %s: %w", up.Name, ErrAlreadyRunning)
	}
	if empty, err := p.dataDirEmpty(); err != nil {
		return fmt.Errorf("base backup from %s: %w", up.Name, err)
	} else if !empty {
		return fmt.Errorf("base backup from %s: %w", up.Name, ErrDataDirNotEmpty)
	}
	if err := p.ensureDataDir(); err != nil {
		return fmt.Errorf("base backup from %s: %w", up.Name, err)
	}
	// The slot first: it retains the WAL from before the backup's
	// checkpoint until the new replica streams through it.
	p.ensureUpstreamSlot(ctx, up)
	passfile, remove, err := p.writeSecretFile("pgpass", passfileLine(p.cfg.Replication.Username, p.cfg.Replication.Password))
	if err != nil {
		return fmt.Errorf("base backup from %s: %w", up.Name, err)
	}
	defer remove()
	args := []string{
		"-h", up.Host,
		"-p", strconv.Itoa(up.Port),
		"-U", p.cfg.Replication.Username,
		"-D", p.cfg.DataDir,
		"-X", "stream",
		"--checkpoint=fast",
		"--no-password",
	}
	start := time.Now()
	p.log.Info("base backup starting", zap.String("upstream", up.Name),
		zap.String("upstream_host", up.Host), zap.Int("upstream_port", up.Port))
	if _, err := p.runTool(ctx, "pg_basebackup", args, "PGPASSFILE="+passfile); err != nil {
		return fmt.Errorf("base backup from %s: %w", up.Name, err)
	}
	if err := os.Chmod(p.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("base backup from %s: %w", up.Name, err)
	}
	p.log.Info("base backup done", zap.String("upstream", up.Name), zap.Duration("took", time.Since(start)))
	return nil
}

// Rewind resynchronises this stopped former primary with the new primary up
// using pg_rewind, so it can then be started as a replica of up (the caller
// does that with Start). Steps:
//
//  1. standby.signal and recovery.signal are removed: if the target was not
//     shut down cleanly, pg_rewind (PostgreSQL 13+) first runs crash
//     recovery in single-user mode, which refuses standby mode.
//  2. CHECKPOINT on the source: after a promotion the source's control file
//     shows the new timeline only after a checkpoint, and pg_rewind decides
//     from it whether a rewind is needed ("it is necessary to execute a
//     CHECKPOINT after promotion", pg_rewind notes).
//  3. pg_rewind --target-pgdata DataDir --source-server 'host port
//     user=<superuser> dbname=postgres', password through a temporary
//     PGPASSFILE. pg_rewind needs wal_log_hints or data checksums on the
//     target (both are on) and the WAL since the divergence point on both
//     sides (wal_keep_size). "No rewind required" is success.
//
// See https://www.postgresql.org/docs/15/app-pgrewind.html. If Rewind fails
// the data directory may be unusable: RemoveDataDir and BaseBackup.
//
// Errors: ErrAlreadyRunning; ErrNotInitialized; a failed CHECKPOINT on the
// source; pg_rewind's failure with its last output lines; ctx's error.
func (p *Instance) Rewind(ctx context.Context, up Upstream) error {
	if err := validUpstream(&up); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	if p.Running() {
		return fmt.Errorf("rewind from %s: %w", up.Name, ErrAlreadyRunning)
	}
	if !p.IsInitialized() {
		return fmt.Errorf("rewind from %s: %w", up.Name, ErrNotInitialized)
	}
	for _, f := range []string{"standby.signal", "recovery.signal"} {
		if err := removeIfExists(filepath.Join(p.cfg.DataDir, f)); err != nil {
			return fmt.Errorf("rewind from %s: %w", up.Name, err)
		}
	}
	if err := p.checkpointSource(ctx, up); err != nil {
		return fmt.Errorf("rewind from %s: %w", up.Name, err)
	}
	passfile, remove, err := p.writeSecretFile("pgpass", passfileLine(p.cfg.Superuser.Username, p.cfg.Superuser.Password))
	if err != nil {
		return fmt.Errorf("rewind from %s: %w", up.Name, err)
	}
	defer remove()
	source := strings.Join([]string{
		"host=" + quoteConninfo(up.Host),
		"port=" + strconv.Itoa(up.Port),
		"user=" + quoteConninfo(p.cfg.Superuser.Username),
		"dbname=postgres",
		"connect_timeout=10",
	}, " ")
	args := []string{"--target-pgdata=" + p.cfg.DataDir, "--source-server=" + source}
	start := time.Now()
	p.log.Info("rewind starting", zap.String("upstream", up.Name),
		zap.String("upstream_host", up.Host), zap.Int("upstream_port", up.Port))
	out, err := p.runTool(ctx, "pg_rewind", args, "PGPASSFILE="+passfile)
	if err != nil {
		return fmt.Errorf("rewind from %s: %w", up.Name, err)
	}
	if err := os.Chmod(p.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("rewind from %s: %w", up.Name, err)
	}
	p.log.Info("rewind done", zap.String("upstream", up.Name), zap.Duration("took", time.Since(start)),
		zap.String("output", lastLines(out, 10)))
	return nil
}

// Checkpoint runs CHECKPOINT on the local server, so that a shutdown right
// after it has little left to write (a planned switchover stops the primary
// with a shutdown checkpoint, during which no write is accepted).
// Errors: ErrNotRunning, or the connection's or the command's error.
func (p *Instance) Checkpoint(ctx context.Context) error {
	conn, release, err := p.localConn(ctx)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer release()
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// checkpointSource runs CHECKPOINT on the rewind source.
func (p *Instance) checkpointSource(ctx context.Context, up Upstream) error {
	conn, err := p.connectTo(ctx, up.Host, up.Port)
	if err != nil {
		return fmt.Errorf("connect to source: %w", err)
	}
	defer closeConn(ctx, conn)
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint on source: %w", err)
	}
	return nil
}

// RemoveDataDir deletes the data directory and everything in it, e.g. before
// a fresh BaseBackup after a failed Rewind. It refuses with
// ErrAlreadyRunning while a postmaster is running. A missing directory is
// not an error.
func (p *Instance) RemoveDataDir() error {
	if p.Running() {
		return fmt.Errorf("remove data dir: %w", ErrAlreadyRunning)
	}
	if err := os.RemoveAll(p.cfg.DataDir); err != nil {
		return fmt.Errorf("remove data dir: %w", err)
	}
	p.log.Info("data directory removed")
	return nil
}
