package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/backup"
	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/agent/report"
	"github.com/dbpilot/dbpilot/proto"
)

// backups is the agent's backup subsystem (nil when backup: is absent).
type backups struct {
	cfg   *config.Backup
	svc   *backup.Service
	pgcfg postgres.Config
	login *postgres.Credentials // dedicated backup role, nil: the replication role is used
}

// SecretBackupUser is the sealed secret holding the backup role's password.
const SecretBackupUser = "backup-user"

// OpenBackups opens the backup store and repositories described by cfg for
// the agent binary and the `backup` CLI. pgcfg is the local PostgreSQL's
// configuration (without archive settings); pg the local instance. The
// caller closes svc.Store.
func OpenBackups(ctx context.Context, cfg *config.Config, pgcfg postgres.Config, pg *postgres.Instance, log *zap.Logger) (*backup.Service, *postgres.Credentials, error) {
	b := cfg.Backup
	sealer, err := backup.LoadKey(b.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("backup: %w", err)
	}
	store, err := backup.OpenStore(ctx, filepath.Join(cfg.StateDir, backup.StoreFile), sealer)
	if err != nil {
		return nil, nil, fmt.Errorf("backup: %w", err)
	}
	importSecret := func(name, env string) error {
		if v := os.Getenv(env); v != "" {
			return store.PutSecret(ctx, name, []byte(v))
		}
		return nil
	}
	repos := map[string]backup.Repository{}
	for _, rc := range b.Repositories {
		switch rc.Type {
		case "filesystem":
			r, err := backup.NewFSRepository(rc.Name, rc.Path)
			if err != nil {
				store.Close()
				return nil, nil, err
			}
			repos[rc.Name] = r
		case "s3":
			if err := importSecret(rc.SecretName(), config.SecretEnv(rc.SecretName())); err != nil {
				store.Close()
				return nil, nil, err
			}
			secret, err := store.Secret(ctx, rc.SecretName())
			if err != nil {
				repos[rc.Name] = backup.BrokenRepository(rc.Name, fmt.Errorf("secret %q: %w; set it with `dbpilot-agent backup secret set %s` or %s",
					rc.SecretName(), err, rc.SecretName(), config.SecretEnv(rc.SecretName())))
				continue
			}
			r, err := backup.NewS3Repository(rc.Name, backup.S3Options{Endpoint: rc.Endpoint, Bucket: rc.Bucket, Prefix: rc.Prefix, Region: rc.Region,
				AccessKeyID: rc.AccessKeyID, SecretAccessKey: string(secret), Insecure: rc.Insecure})
			if err != nil {
				store.Close()
				return nil, nil, err
			}
			repos[rc.Name] = r
		}
	}
	if err := importSecret(SecretBackupUser, config.EnvBackupPassword); err != nil {
		store.Close()
		return nil, nil, err
	}
	login := pgcfg.Replication
	var dedicated *postgres.Credentials
	if pw, err := store.Secret(ctx, SecretBackupUser); err == nil {
		dedicated = &postgres.Credentials{Username: b.User.Username, Password: string(pw)}
		login = *dedicated
	} else if !errors.Is(err, backup.ErrNotFound) {
		store.Close()
		return nil, nil, err
	} else {
		log.Warn("no backup role password (DBPILOT_BACKUP_PASSWORD or sealed secret backup-user): backups connect as the replication role")
	}
	exe, err := os.Executable()
	if err != nil {
		store.Close()
		return nil, nil, fmt.Errorf("backup: agent binary path: %w", err)
	}
	svc := &backup.Service{
		Node:    cfg.Node.Name,
		Cluster: proto.ClusterRef{Namespace: cfg.Cluster.Namespace, Project: cfg.Cluster.Project, Cluster: cfg.Cluster.Name},
		Store:   store, PG: pg, Login: login, Superuser: pgcfg.Superuser, Repos: repos, ArchiveRepo: b.WALArchive,
		AgentBin: exe, ScratchDir: b.ScratchDir, Log: log.Named("backup"),
	}
	return svc, dedicated, nil
}

// JobsFromConfig converts the configured jobs to store jobs.
func JobsFromConfig(cfg *config.Config) []backup.Job {
	var out []backup.Job
	for _, j := range cfg.Backup.Jobs {
		out = append(out, backup.Job{Name: j.Name, Description: j.Description, Schedule: j.Schedule, TimeZone: j.TimeZone, Window: j.Window,
			RetentionCount: j.Retention.Count, RetentionAge: j.Retention.Age, SourceType: "postgresql",
			SourceLocation: fmt.Sprintf("%s:%d", cfg.Postgres.ListenAddress, cfg.Postgres.Port), Method: j.Method, Repository: j.Repository, TargetJob: j.Verifies, MaxRate: j.MaxRate, Compression: j.Compression})
	}
	return out
}

// syncJobs makes the store's jobs those of the configuration.
func (b *backups) syncJobs(ctx context.Context, cfg *config.Config) error {
	jobs := JobsFromConfig(cfg)
	names := make([]string, 0, len(jobs))
	for _, j := range jobs {
		if err := b.svc.Store.PutJob(ctx, j); err != nil {
			return err
		}
		names = append(names, j.Name)
	}
	return b.svc.Store.DeleteJobsExcept(ctx, names)
}

// archiveSettings sets archive_command and restore_command on pgcfg when a
// WAL archive is configured.
func archiveSettings(cfg *config.Config, pgcfg *postgres.Config) error {
	if cfg.Backup == nil || cfg.Backup.WALArchive == "" {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("backup: agent binary path: %w", err)
	}
	pgcfg.ArchiveCommand = backup.ArchiveCommand(exe, cfg.Backup.ArchiveSocket)
	pgcfg.RestoreCommand = backup.RestoreCommand(exe, cfg.Backup.ArchiveSocket)
	return nil
}

// startBackups runs the archive socket, recovers interrupted runs, syncs the
// jobs and starts the scheduler and the outbox drain. It returns the
// function that stops them, waits for them, stops the archive socket and
// closes the store: call it after PostgreSQL stopped (PostgreSQL archives
// its last WAL while stopping).
func (a *Agent) startBackups(ctx, bg context.Context) (func(), error) {
	b := a.bk
	bctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	stopArchive := func() {}
	stop := func() {
		cancel()
		wg.Wait()
		stopArchive()
		_ = b.svc.Store.Close()
	}
	if b.cfg.WALArchive != "" {
		arch, err := b.svc.Archive()
		if err != nil {
			return stop, err
		}
		uid, gid, chown := a.pg.Owner()
		srv := &backup.ArchiveServer{Archive: arch, DataDir: a.cfg.Postgres.DataDir, Chown: a.pg.Chown, Log: b.svc.Log.Named("archive")}
		if stopArchive, err = srv.Serve(bg, b.cfg.ArchiveSocket, uid, gid, chown); err != nil {
			stopArchive = func() {}
			return stop, err
		}
	}
	if _, err := b.svc.RecoverInterrupted(ctx); err != nil {
		a.log.Error("cannot recover interrupted backup runs", zap.Error(err))
	}
	if err := b.syncJobs(ctx, a.cfg); err != nil {
		return stop, err
	}
	sched := &backup.Scheduler{
		Svc: b.svc, Claims: claimer{a.dcs}, RunOn: b.cfg.RunOn, Grace: b.cfg.PreferReplicaGrace, PGConfig: b.pgcfg, Log: b.svc.Log.Named("scheduler"),
		Role: func() (string, bool) {
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.state.Role, a.state.Healthy
		},
	}
	sched.Requests = requester{a.dcs}
	sched.SwitchWAL = a.switchWAL
	if b.login != nil {
		login := *b.login
		sched.EnsureRole = func(ctx context.Context) error {
			return a.pg.EnsureRole(ctx, login, []string{"REPLICATION"}, []string{"pg_read_all_data"})
		}
	}
	source := proto.AgentSource(a.cfg.Cluster.Namespace, a.cfg.Cluster.Name, a.cfg.Node.Name)
	wg.Go(func() { sched.Run(bctx) })
	wg.Go(func() {
		b.svc.DrainOutbox(bctx, a.rep.Deliver, func(err error) bool { return errors.Is(err, report.ErrPermanent) }, source, time.Second, 30*time.Second)
	})
	return stop, nil
}

// claimer adapts the etcd client to backup.Claimer.
type claimer struct{ d coordinator }

func (c claimer) Claim(ctx context.Context, key, value string) (bool, error) {
	return c.d.Claim(ctx, key, value)
}
func (c claimer) CompleteClaim(ctx context.Context, key, value string, ttl time.Duration) error {
	return c.d.CompleteClaim(ctx, key, value, ttl)
}
func (c claimer) ClaimKey(job string, occ int64) string { return c.d.Keys().BackupClaim(job, occ) }

// requester adapts the etcd client to backup.Requests.
type requester struct{ d coordinator }

func (r requester) Pending(ctx context.Context) (map[string]string, error) {
	return r.d.BackupRequests(ctx)
}
func (r requester) ClaimKey(id string) string { return r.d.Keys().BackupRequestClaim(id) }
func (r requester) Done(ctx context.Context, id string) error {
	return r.d.DeleteBackupRequest(ctx, id)
}

// switchWAL closes the current WAL segment (pg_switch_wal) and waits, up to
// a minute, until PostgreSQL archived it.
func (a *Agent) switchWAL(ctx context.Context) error {
	conn, err := a.pg.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var seg string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&seg); err != nil {
		return fmt.Errorf("switch WAL: %w", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var last *string
		if err := conn.QueryRow(ctx, "SELECT last_archived_wal FROM pg_stat_archiver").Scan(&last); err != nil {
			return fmt.Errorf("switch WAL: %w", err)
		}
		if last != nil && *last >= seg {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("switch WAL: segment %s not archived within a minute", seg)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// restoreForBootstrap restores the newest backup of backup.bootstrap_from
// into the empty data directory, replaying all archived WAL. It returns
// false (and nothing changed) when the repository holds no backup.
func (a *Agent) restoreForBootstrap(ctx context.Context) (bool, error) {
	b := a.bk
	if b == nil || b.cfg.BootstrapFrom == nil {
		return false, nil
	}
	src := b.cfg.BootstrapFrom
	wal := src.WALRepository
	if wal == "" {
		wal = src.Repository
	}
	var target postgres.RecoveryTarget
	if src.TargetTime != nil {
		target.Time = *src.TargetTime
	}
	_, m, err := b.svc.Restore(ctx, b.pgcfg, backup.RestoreOptions{Repository: src.Repository, WALRepository: wal, SourceCluster: src.Cluster,
		BackupID: src.BackupID, Target: target, DataDir: a.cfg.Postgres.DataDir, Port: a.cfg.Postgres.Port})
	if errors.Is(err, backup.ErrNotFound) && src.BackupID == "" {
		a.log.Info("no backup to bootstrap from; running initdb", zap.String("repository", src.Repository), zap.String("source_cluster", src.Cluster))
		return false, nil
	}
	if err != nil {
		if rerr := a.pg.RemoveDataDir(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return false, err
	}
	a.log.Info("bootstrapped from backup", zap.String("backup", m.ID), zap.String("source_system_id", m.SystemID))
	return true, nil
}

// restoreReplica extracts the newest backup of this cluster (same system
// identifier) from backup.replica_from_backup into the empty data
// directory; the caller starts it as a replica, which replays archived WAL
// through restore_command and then streams from the primary. false: no
// usable backup (clone from the primary instead).
func (a *Agent) restoreReplica(ctx context.Context, systemID string) (bool, error) {
	b := a.bk
	if b == nil || b.cfg.ReplicaFromBackup == "" {
		return false, nil
	}
	all, err := b.svc.Backups(ctx, b.cfg.ReplicaFromBackup)
	if err != nil {
		return false, err
	}
	id := ""
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Method == backup.MethodPhysical && all[i].SystemID == systemID {
			id = all[i].ID
			break
		}
	}
	if id == "" {
		return false, nil
	}
	if _, _, err := b.svc.Restore(ctx, b.pgcfg, backup.RestoreOptions{Repository: b.cfg.ReplicaFromBackup, BackupID: id,
		DataDir: a.cfg.Postgres.DataDir, ExtractOnly: true}); err != nil {
		_ = a.pg.RemoveDataDir()
		return false, err
	}
	a.log.Info("replica data directory restored from backup; catching up from the archive, then streaming", zap.String("backup", id))
	return true, nil
}
