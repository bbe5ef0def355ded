package proto

import "time"

// TypeMemberSummary: a member's periodic summary (heartbeat), sent every
// [MemberSummary.IntervalMS] whether or not anything changed. The control
// plane's alert engine reads it (docs/observability.md); a member whose
// summaries stop for three intervals is "silent". Payload:
// [MemberSummary]. Term may be 0 (no leader observed yet).
const TypeMemberSummary = "io.dbpilot.member.summary.v1"

// Filesystem kinds in [FilesystemUsage.Kind].
const (
	FilesystemData = "data" // the data directory
	FilesystemWAL  = "wal"  // the WAL directory (pg_wal), when on its own filesystem or not
)

// MemberSummary is the payload of [TypeMemberSummary]: the emitting
// member's state as of Header.TimestampMS, for alerting (whitepaper Op 3).
type MemberSummary struct {
	Header
	// IntervalMS is the agent's summary interval in milliseconds (>= 1000):
	// the next summary is due within it.
	IntervalMS int64 `json:"interval_ms"`
	// Role is one of RolePrimary, RoleReplica, RoleUnknown.
	Role string `json:"role"`
	// State is one of StateRunning, StateStarting, StateStopped,
	// StateFenced, StateUnhealthy.
	State string `json:"state"`
	// Healthy is the outcome of the last health cycle.
	Healthy bool `json:"healthy"`
	// Writable is true when the member is a primary that holds the leader
	// key and accepts writes (not fenced, not in recovery).
	Writable bool `json:"writable"`
	// Streaming is, on a replica, whether its WAL receiver is streaming
	// from the primary (pg_stat_wal_receiver.status = 'streaming'); omitted
	// on a primary.
	Streaming *bool `json:"streaming,omitempty"`
	// LagBytes is a replica's replay lag behind the primary, in bytes; -1
	// when unknown, 0 on a primary.
	LagBytes int64 `json:"lag_bytes"`
	// SynchronousMode is true when the cluster runs in synchronous mode
	// (the cluster spec's synchronous_mode, docs/keyspace.md).
	SynchronousMode bool `json:"synchronous_mode"`
	// SyncStandbys are, on a primary, the members named in
	// synchronous_standby_names that are currently streaming (PostgreSQL
	// pg_stat_replication.sync_state 'sync' or 'quorum'); omitted elsewhere.
	SyncStandbys []string `json:"sync_standbys,omitempty"`
	// Filesystems are the usage of the data and WAL directories'
	// filesystems (statfs).
	Filesystems []FilesystemUsage `json:"filesystems,omitempty"`
	// Archive is the WAL archiver's state (pg_stat_archiver) on a primary
	// with archiving on; omitted otherwise.
	Archive *ArchiveStatus `json:"archive,omitempty"`
	// Backups are the member's local backup jobs (docs/backups.md); omitted
	// when none are configured.
	Backups []BackupJobStatus `json:"backups,omitempty"`
}

// FilesystemUsage is one filesystem's use, from statfs(2).
type FilesystemUsage struct {
	// Kind is FilesystemData or FilesystemWAL.
	Kind string `json:"kind"`
	// Path is the directory measured (absolute).
	Path string `json:"path"`
	// SizeBytes is the filesystem's size in bytes (> 0).
	SizeBytes int64 `json:"size_bytes"`
	// UsedBytes is the space in use, in bytes: size minus what an
	// unprivileged user may still allocate (statfs f_bavail), as df(1)
	// reports it.
	UsedBytes int64 `json:"used_bytes"`
	// UsedPct is UsedBytes/SizeBytes×100, in percent (0–100).
	UsedPct float64 `json:"used_pct"`
}

// ArchiveStatus is the WAL archiver's state (PostgreSQL pg_stat_archiver).
type ArchiveStatus struct {
	// ArchivedCount and FailedCount are the archiver's counters since the
	// statistics were last reset.
	ArchivedCount int64 `json:"archived_count"`
	FailedCount   int64 `json:"failed_count"`
	// LastArchivedAt and LastFailedAt are the times of the last success and
	// failure; omitted when there was none.
	LastArchivedAt *time.Time `json:"last_archived_at,omitempty"`
	LastFailedAt   *time.Time `json:"last_failed_at,omitempty"`
	// Failing is true when the last attempt failed (LastFailedAt after
	// LastArchivedAt).
	Failing bool `json:"failing"`
}

// BackupJobStatus is one local backup job's record (the agent's SQLite
// store, docs/backups.md).
type BackupJobStatus struct {
	// Job is the backup job's name. Required.
	Job string `json:"job"`
	// Schedule is the job's cron schedule; "" for a job run on request only.
	Schedule string `json:"schedule,omitempty"`
	// LastSuccessAt and LastFailureAt are the ends of the last successful
	// and the last failed run; omitted when there was none.
	LastSuccessAt *time.Time `json:"last_success_at,omitempty"`
	LastFailureAt *time.Time `json:"last_failure_at,omitempty"`
	// NextDueAt is the next scheduled run; omitted for an unscheduled job.
	NextDueAt *time.Time `json:"next_due_at,omitempty"`
	// LastDrillAt is the end of the last successful restore drill of this
	// job's backups; omitted when none ran.
	LastDrillAt *time.Time `json:"last_drill_at,omitempty"`
}
