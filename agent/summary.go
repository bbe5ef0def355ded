package agent

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/backup"
	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/httpapi"
	"github.com/dbpilot/dbpilot/agent/pgmetrics"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/proto"
)

// maxSummaryBudget caps the time one summary may take to gather.
const maxSummaryBudget = 2 * time.Second

// summaryBudget is the time budget of one summary round: half the
// interval, at most maxSummaryBudget, so a slow database or store delays
// no more than that and rounds never overlap.
func summaryBudget(interval time.Duration) time.Duration {
	return min(interval/2, maxSummaryBudget)
}

// summaryRuns bounds the backup runs read per job for a summary.
const summaryRuns = 200

// summaryLoop runs every report.summary_interval until ctx ends, on its own
// goroutine (never the HA loop's, whose state it only reads): on a
// writable primary it makes sure pg_stat_statements exists, and when an
// events transport is configured it publishes the member summary (once
// the agent has read etcd: the header carries its revision). Each
// round has a time budget (summaryBudget); what does not answer within it
// is left out of that round's summary.
func (a *Agent) summaryLoop(ctx context.Context) {
	interval := a.cfg.Report.SummaryInterval
	if interval <= 0 {
		interval = config.DefaultSummaryInterval
	}
	send := a.cfg.Events.Dapr != nil || a.cfg.Events.HTTP != nil
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, summaryBudget(interval))
		s := a.Snapshot()
		a.ensureStatements(rctx, s)
		// Not before a cycle recorded an etcd read: every event carries
		// the term and the etcd revision it was derived from, in order
		// with this member's earlier events (docs/events.md).
		if send && a.termKnown.Load() && a.etcdRev.Load() > 0 {
			if e, ok := a.envelope(proto.TypeMemberSummary, a.summary(rctx, s, interval)); ok {
				a.rep.PublishLatest(e)
			}
		}
		cancel()
	}
}

// publishStoppedSummary sends, on a graceful stop once PostgreSQL is down,
// a last member summary saying so (state stopped, not writable, not
// streaming). The control plane then knows the silence that follows is a
// planned stop, not a lost host: a stopped replica is a ticket
// (replica_not_streaming), not an agent_silent page (docs/observability.md).
func (a *Agent) publishStoppedSummary(ctx context.Context) {
	if (a.cfg.Events.Dapr == nil && a.cfg.Events.HTTP == nil) || !a.termKnown.Load() || a.etcdRev.Load() == 0 {
		return
	}
	interval := a.cfg.Report.SummaryInterval
	if interval <= 0 {
		interval = config.DefaultSummaryInterval
	}
	s := a.Snapshot()
	s.State, s.Writable, s.Streaming, s.Healthy = proto.StateStopped, false, false, false
	rctx, cancel := context.WithTimeout(ctx, summaryBudget(interval))
	defer cancel()
	if e, ok := a.envelope(proto.TypeMemberSummary, a.summary(rctx, s, interval)); ok {
		a.rep.PublishLatest(e)
	}
}

// summaryInput is what a member summary is built from.
type summaryInput struct {
	interval    time.Duration
	state       httpapi.NodeState // Snapshot: HoldsLease is computed now
	syncMode    bool
	replicas    []postgres.ReplicaStat
	filesystems []proto.FilesystemUsage
	archive     *proto.ArchiveStatus
	backups     []proto.BackupJobStatus
}

// buildSummary turns the agent's state into a MemberSummary (header left
// to the envelope). Writable: a running primary holding a provably valid
// lease. Streaming is set on a replica only; the lag is 0 on a primary, the
// cycle's figure (-1 unknown) on a replica and -1 otherwise. Sync standbys
// are, on a writable primary, the streaming WAL senders whose sync_state is
// sync or quorum, sorted.
func buildSummary(in summaryInput) proto.MemberSummary {
	s := in.state
	out := proto.MemberSummary{
		IntervalMS: in.interval.Milliseconds(), Role: s.Role, State: s.State, Healthy: s.Healthy,
		SynchronousMode: in.syncMode, Filesystems: in.filesystems, Backups: in.backups, LagBytes: -1,
	}
	switch s.Role {
	case proto.RolePrimary, proto.RoleReplica:
	default:
		out.Role = proto.RoleUnknown
	}
	switch s.State {
	case proto.StateRunning, proto.StateStarting, proto.StateStopped, proto.StateFenced, proto.StateUnhealthy:
	case "":
		out.State = proto.StateStarting // no cycle yet
	default:
		out.State = proto.StateUnhealthy
	}
	switch out.Role {
	case proto.RolePrimary:
		out.LagBytes = 0
		out.Writable = s.Writable && s.HoldsLease && out.State != proto.StateFenced
		if out.Writable {
			for _, r := range in.replicas {
				if r.State == "streaming" && (r.SyncState == "sync" || r.SyncState == "quorum") {
					out.SyncStandbys = append(out.SyncStandbys, r.Name)
				}
			}
			slices.Sort(out.SyncStandbys)
			out.Archive = in.archive
		}
	case proto.RoleReplica:
		streaming := s.Streaming
		out.Streaming = &streaming
		out.LagBytes = max(s.LagBytes, -1)
	}
	return out
}

// summary gathers a member summary for the state s within ctx's budget.
func (a *Agent) summary(ctx context.Context, s httpapi.NodeState, interval time.Duration) proto.MemberSummary {
	a.mu.Lock()
	replicas := a.replicas
	a.mu.Unlock()
	in := summaryInput{
		interval: interval, state: s, replicas: replicas,
		syncMode:    a.syncModeLoad() == string(config.SyncOn),
		filesystems: filesystems(a.cfg.Postgres.DataDir),
	}
	if s.Role == proto.RolePrimary && s.Writable {
		arch, err := a.archiveStatus(ctx)
		if err != nil && ctx.Err() == nil {
			a.log.Debug("member summary: archiver not read", zap.Error(err))
		}
		in.archive = arch
	}
	if a.bk != nil {
		bs, err := backupStatuses(ctx, a.bk.svc.Store, time.Now())
		if err != nil {
			a.log.Debug("member summary: backup jobs not read", zap.Error(err))
		}
		in.backups = bs
	}
	return buildSummary(in)
}

// syncModeLoad is the effective synchronous_mode as the last cycle knew it,
// read from the published member state (the loop's own field is not safe
// to read here).
func (a *Agent) syncModeLoad() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.syncModeSeen
}

// filesystems measures the data directory's and pg_wal's filesystems; a
// directory that cannot be measured (not created yet) is left out.
func filesystems(dataDir string) []proto.FilesystemUsage {
	var out []proto.FilesystemUsage
	for _, d := range []struct{ kind, path string }{{proto.FilesystemData, dataDir}, {proto.FilesystemWAL, filepath.Join(dataDir, "pg_wal")}} {
		u, err := pgmetrics.Statfs(d.path)
		if err != nil || u.SizeBytes <= 0 {
			continue
		}
		used := max(u.SizeBytes-u.AvailBytes, 0)
		out = append(out, proto.FilesystemUsage{Kind: d.kind, Path: d.path, SizeBytes: u.SizeBytes, UsedBytes: used,
			UsedPct: min(100, 100*float64(used)/float64(u.SizeBytes))})
	}
	return out
}

// archiveStatus reads pg_stat_archiver; nil when archive_mode is off.
func (a *Agent) archiveStatus(ctx context.Context) (*proto.ArchiveStatus, error) {
	if a.pgm == nil {
		return nil, nil
	}
	conn, release, err := a.pgm.MetricsConn(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	var mode string
	var st proto.ArchiveStatus
	err = conn.QueryRow(ctx, `SELECT current_setting('archive_mode'), archived_count, failed_count, last_archived_time, last_failed_time
FROM pg_stat_archiver`).Scan(&mode, &st.ArchivedCount, &st.FailedCount, &st.LastArchivedAt, &st.LastFailedAt)
	if err != nil {
		return nil, err
	}
	if mode == "off" {
		return nil, nil
	}
	st.Failing = archiveFailing(st.LastArchivedAt, st.LastFailedAt)
	return &st, nil
}

// archiveFailing: the last archiving attempt failed (a failure, and no
// success after it).
func archiveFailing(lastArchived, lastFailed *time.Time) bool {
	return lastFailed != nil && (lastArchived == nil || lastFailed.After(*lastArchived))
}

// backupStatuses reads every local backup job's last results from the
// backup store: the ends of the last successful and failed runs, the next
// scheduled occurrence after now and the last successful restore drill of
// the job's backups (the newest verification without error; for a verify
// job, its own last success).
func backupStatuses(ctx context.Context, st *backup.Store, now time.Time) ([]proto.BackupJobStatus, error) {
	jobs, err := st.Jobs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]proto.BackupJobStatus, 0, len(jobs))
	var errs []error
	for _, j := range jobs {
		runs, err := st.Runs(ctx, j.Name, summaryRuns)
		if err != nil {
			errs = append(errs, err)
		}
		b := jobStatus(j, runs)
		if next, ok, err := backup.NextOccurrence(j, now); err != nil {
			errs = append(errs, err)
		} else if ok {
			b.NextDueAt = &next
		}
		out = append(out, b)
	}
	return out, errors.Join(errs...)
}

// jobStatus summarises a job's runs (any order).
func jobStatus(j backup.Job, runs []backup.Run) proto.BackupJobStatus {
	b := proto.BackupJobStatus{Job: j.Name, Schedule: j.Schedule}
	later := func(cur **time.Time, t time.Time) {
		if !t.IsZero() && (*cur == nil || t.After(**cur)) {
			t := t.UTC()
			*cur = &t
		}
	}
	for _, r := range runs {
		switch r.Status {
		case backup.StatusSucceeded:
			later(&b.LastSuccessAt, r.FinishedAt)
			if r.VerifyError == "" {
				later(&b.LastDrillAt, r.VerifiedAt)
			}
		case backup.StatusFailed:
			later(&b.LastFailureAt, r.FinishedAt)
		}
	}
	if j.Method == "verify" {
		b.LastDrillAt = b.LastSuccessAt
	}
	return b
}

// ensureStatements creates pg_stat_statements in database postgres once
// per term on a writable primary (replicas get it through WAL). A failure
// is logged and retried at the next round; it never touches the HA loop.
func (a *Agent) ensureStatements(ctx context.Context, s httpapi.NodeState) {
	if a.pgm == nil || !a.statements || s.Role != proto.RolePrimary || !s.Writable || !s.HoldsLease || s.Term == 0 || a.extTerm == s.Term {
		return
	}
	conn, release, err := a.pgm.MetricsConn(ctx)
	if err == nil {
		_, err = conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
		release()
	}
	if err != nil {
		// Logged once per distinct error, not every interval.
		if msg := err.Error(); msg != a.extErr {
			a.extErr = msg
			a.log.Warn("CREATE EXTENSION pg_stat_statements failed; retrying every summary interval", zap.Error(err))
		}
		return
	}
	if a.extErr != "" {
		a.log.Info("pg_stat_statements created after earlier failures")
	}
	a.extTerm, a.extErr = s.Term, ""
	a.log.Debug("pg_stat_statements present", zap.Uint64("term", s.Term))
}
