package proto

import "time"

// Backup is a backup record of a cluster (OpenAPI schema Backup), in GET
// …/clusters/{cluster}/backups: the projection of the agents' backup.*
// events (TypeBackupStarted and the ones after it).
type Backup struct {
	// ID is the agent's run id (it starts with the UTC start time); a
	// restore names it in backup_id.
	ID string `json:"id"`
	// Cluster is the cluster's name.
	Cluster string `json:"cluster"`
	// Node is the node that took it.
	Node string `json:"node"`
	// Job is the template's backup job that ran.
	Job string `json:"job"`
	// Method is "physical" (restorable, with the WAL for PITR) or
	// "logical" (a dump).
	Method string `json:"method"`
	// State is running, succeeded or failed.
	State string `json:"state"`
	// RequestID is the backup operation that asked for it; omitted for a
	// scheduled run.
	RequestID string `json:"request_id,omitempty"`
	// StartedAt is when the run started; omitted when unknown.
	StartedAt *time.Time `json:"started_at,omitempty"`
	// FinishedAt is when it completed or failed; omitted while running.
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// SizeBytes is the number of bytes stored (compressed).
	SizeBytes int64 `json:"size_bytes"`
	// Checksum is "sha256:<hex>" of the stored bytes.
	Checksum string `json:"checksum,omitempty"`
	// StartLSN and StopLSN bound the WAL a physical backup needs
	// ("0/5000028").
	StartLSN string `json:"start_lsn,omitempty"`
	// StopLSN: see StartLSN.
	StopLSN string `json:"stop_lsn,omitempty"`
	// Timeline is the PostgreSQL timeline the backup was taken on; omitted
	// when unknown.
	Timeline uint32 `json:"timeline,omitempty"`
	// Repository is the backup repository's configured name.
	Repository string `json:"repository"`
	// RepositoryPath is the backup's location in the repository.
	RepositoryPath string `json:"repository_path,omitempty"`
	// Error says why the run failed; omitted unless it did.
	Error string `json:"error,omitempty"`
	// VerifiedAt is when the last restore drill of the backup finished;
	// omitted when none ran.
	VerifiedAt *time.Time `json:"verified_at,omitempty"`
	// VerifyError says why that drill failed; omitted unless it did.
	VerifyError string `json:"verify_error,omitempty"`
}

// BackupRunRequest is the optional body of POST
// …/clusters/{cluster}/backups (OpenAPI schema BackupRun; an empty body
// is the same as {}). The answer is 202 with an [Operation] of kind
// backup.
type BackupRunRequest struct {
	// Job is the template's backup job to run (not a verify job); empty:
	// its first physical job.
	Job string `json:"job,omitempty"`
}

// RestoreRequest is the body of POST …/clusters/{cluster}/restore (OpenAPI
// schema Restore): create a new cluster, with the source's template, plan,
// replicas and project, whose first primary starts from one of the
// source's physical backups. The answer is 202 with an [Operation] of kind
// restore.
type RestoreRequest struct {
	// Target is the new cluster's name (1-40 of a-z, 0-9 and '-').
	// Required.
	Target string `json:"target"`
	// BackupID selects the backup; empty: the newest completed physical
	// backup (finished before TargetTime when given).
	BackupID string `json:"backup_id,omitempty"`
	// TargetTime is the point-in-time recovery target (RFC 3339, not in
	// the future, after the backup's end); nil: the end of the archived
	// WAL.
	TargetTime *time.Time `json:"target_time,omitempty"`
}
