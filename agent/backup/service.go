// Package backup is the agent's autonomous backup system (whitepaper Op 4):
// a local SQLite store of jobs, runs, logs and an event outbox; methods
// (PostgreSQL physical and logical backups, continuous WAL archiving);
// repositories (filesystem and S3-compatible); a scheduler that runs each
// occurrence on exactly one node through an etcd claim; retention; restore,
// point-in-time recovery and restore drills. See docs/backups.md.
package backup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/proto"
)

// ManifestFile is the name of the file that completes a backup: it is
// written last, so a backup without it is partial and never listed.
const ManifestFile = "backup.json"

// Manifest describes one complete backup in a repository.
type Manifest struct {
	ID         string     `json:"id"`
	Job        string     `json:"job"`
	Node       string     `json:"node"`
	Method     string     `json:"method"`
	SystemID   string     `json:"system_id"`
	PGVersion  string     `json:"pg_version"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt time.Time  `json:"finished_at"`
	StartLSN   string     `json:"start_lsn,omitempty"`
	StopLSN    string     `json:"stop_lsn,omitempty"`
	Timeline   uint32     `json:"timeline,omitempty"`
	StartWAL   string     `json:"start_wal,omitempty"` // first WAL segment a restore needs
	Files      []FileInfo `json:"files"`
	SizeBytes  int64      `json:"size_bytes"`
	Checksum   string     `json:"checksum"`
	// Path is the backup's directory in the repository (not stored; filled
	// in when listing).
	Path string `json:"-"`
}

// Service runs backups, restores and drills for one node. Create it with
// its exported fields set; its methods are safe for concurrent use.
type Service struct {
	Node    string
	Cluster proto.ClusterRef
	Store   *Store
	// PG is the local PostgreSQL (source of backups; its OS user owns
	// restored files).
	PG *postgres.Instance
	// Login is the backup role the methods connect with.
	Login postgres.Credentials
	// Superuser logs into restored clusters (drills, PITR) to check them.
	Superuser postgres.Credentials
	// Repos are the configured repositories by name.
	Repos map[string]Repository
	// ArchiveRepo names the repository holding the WAL archive ("" = none).
	ArchiveRepo string
	// AgentBin is the dbpilot-agent binary used in restore_command.
	AgentBin string
	// ScratchDir holds restore-drill data directories (must be traversable
	// by the PostgreSQL OS user).
	ScratchDir string
	Log        *zap.Logger
}

// Prefix is the cluster's key prefix in every repository.
func (s *Service) Prefix() string {
	return s.Cluster.Namespace + "/" + s.Cluster.Project + "/" + s.Cluster.Cluster + "/"
}

// Archive returns the cluster's WAL archive. Errors: no archive configured.
func (s *Service) Archive() (WALArchive, error) {
	r, ok := s.Repos[s.ArchiveRepo]
	if !ok {
		return WALArchive{}, errors.New("no WAL archive repository configured (backup.wal_archive)")
	}
	return WALArchive{Repo: r, Prefix: s.Prefix()}, nil
}

func (s *Service) header(at time.Time) proto.Header {
	return proto.Header{ClusterRef: s.Cluster, Node: s.Node, TimestampMS: at.UnixMilli()}
}

func runRef(r Run) proto.BackupRun {
	var occ int64
	if !r.Occurrence.IsZero() {
		occ = r.Occurrence.UnixMilli()
	}
	return proto.BackupRun{RunID: r.ID, Job: r.Job, Method: r.Method, Repository: r.Repository, OccurrenceMS: occ, RequestID: r.RequestID}
}

func backupID(now time.Time, node string) string {
	return now.UTC().Format("20060102T150405Z") + "-" + node + "-" + NewID()[:6]
}

// RunBackup runs one backup of job (occurrence zero for a manual run) and
// records it: a "running" row and a backup.started event first, then the
// outcome and backup.completed or backup.failed. A failure (unknown or
// unreachable repository, wrong credentials, pg_basebackup error) is
// recorded as a failed run and returned; it never panics. After a success
// the job's retention is applied. Errors: ErrOccurrenceTaken if this node
// already ran that occurrence.
func (s *Service) RunBackup(ctx context.Context, job Job, occurrence time.Time) (Run, error) {
	return s.runBackup(ctx, job, occurrence, "")
}

// RunBackupRequest is RunBackup for the control plane's on-demand request
// requestID: a manual run whose events carry the request id.
func (s *Service) RunBackupRequest(ctx context.Context, job Job, requestID string) (Run, error) {
	return s.runBackup(ctx, job, time.Time{}, requestID)
}

func (s *Service) runBackup(ctx context.Context, job Job, occurrence time.Time, requestID string) (Run, error) {
	now := time.Now()
	id := backupID(now, s.Node)
	r := Run{ID: id, Job: job.Name, Occurrence: occurrence, Node: s.Node, Method: job.Method, Repository: job.Repository,
		StartedAt: now, RepositoryPath: s.Prefix() + "base/" + id + "/", RequestID: requestID}
	if err := s.Store.StartRun(ctx, &r, proto.TypeBackupStarted, proto.BackupStarted{Header: s.header(now), BackupRun: runRef(r)}); err != nil {
		return r, err
	}
	log := s.Log.With(zap.String("job", job.Name), zap.String("run", r.ID), zap.String("method", job.Method), zap.String("repository", job.Repository))
	log.Info("backup started")
	m, err := s.backup(ctx, job, &r)
	r.FinishedAt = time.Now()
	dur := r.FinishedAt.Sub(r.StartedAt).Milliseconds()
	if err != nil {
		r.Status, r.Error = StatusFailed, err.Error()
		s.removeBackup(context.WithoutCancel(ctx), job.Repository, r.RepositoryPath)
		_ = s.Store.AddLog(context.WithoutCancel(ctx), r.ID, "error", r.Error)
		if ferr := s.Store.FinishRun(context.WithoutCancel(ctx), &r, proto.TypeBackupFailed,
			proto.BackupFailed{Header: s.header(r.FinishedAt), BackupRun: runRef(r), Error: r.Error, DurationMS: dur}); ferr != nil {
			err = errors.Join(err, ferr)
		}
		log.Error("backup failed", zap.Error(err))
		return r, fmt.Errorf("backup %s: %w", job.Name, err)
	}
	r.Status, r.SizeBytes, r.Checksum = StatusSucceeded, m.SizeBytes, m.Checksum
	r.StartLSN, r.StopLSN, r.Timeline = m.StartLSN, m.StopLSN, m.Timeline
	if err := s.Store.FinishRun(ctx, &r, proto.TypeBackupCompleted, proto.BackupCompleted{Header: s.header(r.FinishedAt), BackupRun: runRef(r),
		Path: r.RepositoryPath, SizeBytes: r.SizeBytes, Checksum: r.Checksum, StartLSN: r.StartLSN, StopLSN: r.StopLSN, Timeline: r.Timeline, DurationMS: dur}); err != nil {
		return r, fmt.Errorf("backup %s: %w", job.Name, err)
	}
	log.Info("backup completed", zap.Int64("size_bytes", r.SizeBytes), zap.String("stop_lsn", r.StopLSN), zap.Duration("took", r.FinishedAt.Sub(r.StartedAt)))
	if err := s.ApplyRetention(ctx, job); err != nil {
		log.Warn("retention failed", zap.Error(err))
		_ = s.Store.AddLog(ctx, r.ID, "warn", "retention: "+err.Error())
	}
	return r, nil
}

// method returns the Method for a job.
func (s *Service) method(job Job, id string) (Method, error) {
	src := PGSource{PG: s.PG, Login: s.Login, Label: "dbpilot " + id}
	switch job.Method {
	case MethodPhysical:
		return Physical{Src: src, MaxRate: job.MaxRate, Compression: job.Compression}, nil
	case MethodLogical:
		return Logical{Src: src}, nil
	}
	return nil, fmt.Errorf("unknown backup method %q", job.Method)
}

func (s *Service) backup(ctx context.Context, job Job, r *Run) (Manifest, error) {
	repo, ok := s.Repos[job.Repository]
	if !ok {
		return Manifest{}, fmt.Errorf("repository %q is not configured", job.Repository)
	}
	meth, err := s.method(job, r.ID)
	if err != nil {
		return Manifest{}, err
	}
	cd, err := s.PG.ControlData(ctx)
	if err != nil {
		return Manifest{}, err
	}
	put := func(ctx context.Context, name string, src io.Reader) (FileInfo, error) {
		h := newHashingReader(src)
		if _, err := repo.Put(ctx, r.RepositoryPath+name, h); err != nil {
			return FileInfo{}, err
		}
		return FileInfo{Name: name, Size: h.n, SHA256: h.sum()}, nil
	}
	res, err := meth.Backup(ctx, put)
	if err != nil {
		return Manifest{}, err
	}
	pgv, _ := os.ReadFile(filepath.Join(s.PG.DataDir(), "PG_VERSION"))
	m := Manifest{ID: r.ID, Job: job.Name, Node: s.Node, Method: job.Method, SystemID: cd.SystemIdentifier, PGVersion: strings.TrimSpace(string(pgv)),
		StartedAt: r.StartedAt.UTC(), FinishedAt: time.Now().UTC(), StartLSN: res.StartLSN, StopLSN: res.StopLSN, Timeline: res.Timeline, Files: res.Files}
	if res.StartLSN != "" {
		if m.StartWAL, err = WALSegmentName(res.Timeline, res.StartLSN); err != nil {
			return Manifest{}, err
		}
	}
	sum := sha256.New()
	for _, f := range res.Files {
		m.SizeBytes += f.Size
		fmt.Fprintf(sum, "%s %s\n", f.SHA256, f.Name)
	}
	if len(res.Files) == 1 {
		m.Checksum = "sha256:" + res.Files[0].SHA256
	} else {
		m.Checksum = "sha256:" + hex.EncodeToString(sum.Sum(nil))
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if _, err := repo.Put(ctx, r.RepositoryPath+ManifestFile, strings.NewReader(string(b))); err != nil {
		return Manifest{}, fmt.Errorf("write manifest: %w", err)
	}
	m.Path = r.RepositoryPath
	return m, nil
}

// removeBackup deletes everything under a backup's path: the manifest
// first (so the backup stops being listed), then its files and partial
// uploads. Best effort, logged.
func (s *Service) removeBackup(ctx context.Context, repoName, path string) {
	repo, ok := s.Repos[repoName]
	if !ok || path == "" {
		return
	}
	_ = repo.Delete(ctx, path+ManifestFile)
	objs, err := repo.List(ctx, path)
	if err == nil {
		for _, o := range objs {
			_ = repo.Delete(ctx, o.Key)
		}
	}
	if err := repo.RemovePartial(ctx, path); err != nil {
		s.Log.Warn("cannot remove partial backup files", zap.String("path", path), zap.Error(err))
	}
}

// RecoverInterrupted marks runs left "running" by a crash as failed (with a
// backup.failed event) and removes their partial files. Call it once at
// start-up, before the scheduler runs. It returns the runs it failed.
func (s *Service) RecoverInterrupted(ctx context.Context) ([]Run, error) {
	runs, err := s.Store.RunningRuns(ctx)
	if err != nil {
		return nil, err
	}
	for i := range runs {
		r := &runs[i]
		s.removeBackup(ctx, r.Repository, r.RepositoryPath)
		r.Status, r.Error, r.FinishedAt = StatusFailed, "interrupted: the agent stopped during the run; partial files removed", time.Now()
		if err := s.Store.FinishRun(ctx, r, proto.TypeBackupFailed, proto.BackupFailed{Header: s.header(r.FinishedAt), BackupRun: runRef(*r),
			Error: r.Error, DurationMS: r.FinishedAt.Sub(r.StartedAt).Milliseconds()}); err != nil {
			return nil, err
		}
		s.Log.Warn("interrupted backup run marked failed", zap.String("run", r.ID), zap.String("job", r.Job))
	}
	return runs, nil
}

// Backups lists the complete backups of this cluster in repository
// repoName, oldest first (by finish time). Only backups with a manifest are
// listed.
func (s *Service) Backups(ctx context.Context, repoName string) ([]Manifest, error) {
	return s.backupsOf(ctx, repoName, s.Prefix())
}

// backupsOf lists the complete backups of the cluster at prefix.
func (s *Service) backupsOf(ctx context.Context, repoName, prefix string) ([]Manifest, error) {
	repo, ok := s.Repos[repoName]
	if !ok {
		return nil, fmt.Errorf("list backups: repository %q is not configured", repoName)
	}
	objs, err := repo.List(ctx, prefix+"base/")
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	var out []Manifest
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, "/"+ManifestFile) {
			continue
		}
		rc, err := repo.Get(ctx, o.Key)
		if err != nil {
			return nil, fmt.Errorf("list backups: %w", err)
		}
		var m Manifest
		err = json.NewDecoder(rc).Decode(&m)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("list backups: manifest %s: %w", o.Key, err)
		}
		m.Path = strings.TrimSuffix(o.Key, ManifestFile)
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FinishedAt.Before(out[j].FinishedAt) })
	return out, nil
}

// ApplyRetention deletes the job's backups that no rule keeps: a backup is
// kept when it is among the newest RetentionCount, or younger than
// RetentionAge; the newest backup is always kept; with neither rule set
// nothing is deleted. Then WAL older than the oldest physical backup still
// in the archive repository is deleted (history files are kept).
func (s *Service) ApplyRetention(ctx context.Context, job Job) error {
	if job.RetentionCount <= 0 && job.RetentionAge <= 0 {
		return nil
	}
	all, err := s.Backups(ctx, job.Repository)
	if err != nil {
		return err
	}
	var mine []Manifest
	for _, m := range all {
		if m.Job == job.Name {
			mine = append(mine, m)
		}
	}
	now := time.Now()
	for i := range mine {
		m := mine[len(mine)-1-i] // newest first
		keep := i == 0 ||
			(job.RetentionCount > 0 && i < job.RetentionCount) ||
			(job.RetentionAge > 0 && now.Sub(m.FinishedAt) < job.RetentionAge)
		if keep {
			continue
		}
		s.Log.Info("retention: deleting backup", zap.String("job", job.Name), zap.String("backup", m.ID), zap.Time("finished_at", m.FinishedAt))
		s.removeBackup(ctx, job.Repository, m.Path)
	}
	return s.PruneWAL(ctx)
}

// PruneWAL deletes archived WAL segments that no remaining physical backup
// needs: those before the start segment of the oldest physical backup in
// the archive repository. With no physical backup nothing is deleted.
// History files are always kept.
func (s *Service) PruneWAL(ctx context.Context) error {
	arch, err := s.Archive()
	if err != nil {
		return nil // no archive: nothing to prune
	}
	backups, err := s.Backups(ctx, s.ArchiveRepo)
	if err != nil {
		return err
	}
	var oldest uint64
	found := false
	for _, m := range backups {
		if m.StartWAL == "" {
			continue
		}
		if seg, ok := walSegNo(m.StartWAL); ok && (!found || seg < oldest) {
			oldest, found = seg, true
		}
	}
	if !found {
		return nil
	}
	names, err := arch.List(ctx)
	if err != nil {
		return err
	}
	for _, n := range names {
		if seg, ok := walSegNo(n); ok && seg < oldest {
			if err := arch.Repo.Delete(ctx, arch.key(n)); err != nil {
				return fmt.Errorf("prune WAL: %w", err)
			}
		}
	}
	return nil
}

// extractBackup streams a physical backup's tar from the repository into
// dir (created 0700, owned by the PostgreSQL OS user of pg), verifying the
// sha256 recorded in the manifest.
func extractBackup(ctx context.Context, repo Repository, m Manifest, pg *postgres.Instance) error {
	var base FileInfo
	for _, f := range m.Files {
		if strings.HasPrefix(f.Name, "base.tar") {
			base = f
		}
	}
	if base.Name == "" {
		return fmt.Errorf("backup %s has no base.tar* file (method %s): only physical backups restore a data directory", m.ID, m.Method)
	}
	want := base.SHA256
	rc, err := repo.Get(ctx, m.Path+base.Name)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := newHashingReader(ctxReader{ctx, rc})
	dec, closeDec, err := decompressor(base.Name, h) // synchronous: h is read on this goroutine only
	if err != nil {
		return err
	}
	defer closeDec()
	if err := pg.EnsureDataDir(); err != nil {
		return err
	}
	uid, gid, chown := pg.Owner()
	root := pg.DataDir()
	tr := tar.NewReader(dec)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read backup tar: %w", err)
		}
		name := filepath.Clean(hdr.Name)
		if name == "." || strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			return fmt.Errorf("read backup tar: unsafe entry %q", hdr.Name)
		}
		target := filepath.Join(root, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			_, cerr := io.Copy(f, tr)
			serr := f.Sync()
			if err := errors.Join(cerr, serr, f.Close()); err != nil {
				return fmt.Errorf("extract %s: %w", name, err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return err
			}
		default:
			continue
		}
		if chown {
			if err := os.Lchown(target, uid, gid); err != nil {
				return err
			}
		}
	}
	// Drain to the end so the checksum covers every byte.
	if _, err := io.Copy(io.Discard, dec); err != nil {
		return fmt.Errorf("read backup: %w", err)
	}
	if _, err := io.Copy(io.Discard, h); err != nil {
		return fmt.Errorf("read backup: %w", err)
	}
	if got := h.sum(); got != want {
		return fmt.Errorf("backup %s: checksum mismatch: stored sha256 %s, read %s", m.ID, want, got)
	}
	return nil
}

// FindBackup returns the backup with id in repoName, or the newest physical
// one when id is "". Errors: ErrNotFound.
func (s *Service) FindBackup(ctx context.Context, repoName, id string) (Manifest, error) {
	return s.findBackup(ctx, repoName, s.Prefix(), id)
}

func (s *Service) findBackup(ctx context.Context, repoName, prefix, id string) (Manifest, error) {
	all, err := s.backupsOf(ctx, repoName, prefix)
	if err != nil {
		return Manifest{}, err
	}
	for i := len(all) - 1; i >= 0; i-- {
		m := all[i]
		if (id == "" && m.Method == MethodPhysical) || m.ID == id {
			return m, nil
		}
	}
	if id == "" {
		return Manifest{}, fmt.Errorf("no physical backup of %s in repository %s: %w", strings.TrimSuffix(prefix, "/"), repoName, ErrNotFound)
	}
	return Manifest{}, fmt.Errorf("backup %s in repository %s: %w", id, repoName, ErrNotFound)
}
