package proto

import "fmt"

// Backup event types (agent-side backups, docs/backups.md). Term may be 0:
// backups run whether or not a leader is known. They are sent from the
// agent's SQLite outbox: the id is fixed when the event is recorded and is
// the same on every retry, across agent restarts.
const (
	// TypeBackupStarted: a backup run started. Payload: [BackupStarted].
	TypeBackupStarted = "io.dbpilot.backup.started.v1"
	// TypeBackupCompleted: a backup run stored a complete backup. Payload:
	// [BackupCompleted].
	TypeBackupCompleted = "io.dbpilot.backup.completed.v1"
	// TypeBackupFailed: a backup run failed (or was interrupted by an agent
	// crash, recorded at the next start). Payload: [BackupFailed].
	TypeBackupFailed = "io.dbpilot.backup.failed.v1"
	// TypeBackupVerified: a restore drill of a backup finished, successfully
	// or not. Payload: [BackupVerified].
	TypeBackupVerified = "io.dbpilot.backup.verified.v1"
)

// BackupRun identifies one run of a backup job; every backup payload
// embeds it.
type BackupRun struct {
	// RunID is the run's id in the agent's store (unique per node). Required.
	RunID string `json:"run_id"`
	// Job is the backup job's name. Required.
	Job string `json:"job"`
	// Method is "physical", "logical" or "verify". Required.
	Method string `json:"method"`
	// Repository is the repository's configured name. Required.
	Repository string `json:"repository"`
	// OccurrenceMS is the scheduled occurrence the run belongs to, in
	// milliseconds since the Unix epoch; 0 for a manual run.
	OccurrenceMS int64 `json:"occurrence_ms"`
	// RequestID is the on-demand request the run answers (the control
	// plane's backup/requests/{id} key, docs/keyspace.md); "" for a
	// scheduled or local manual run.
	RequestID string `json:"request_id,omitempty"`
}

// BackupStarted is the payload of [TypeBackupStarted].
type BackupStarted struct {
	Header
	BackupRun
}

// BackupCompleted is the payload of [TypeBackupCompleted].
type BackupCompleted struct {
	Header
	BackupRun
	// Path is the backup's location in the repository. Required.
	Path string `json:"path"`
	// SizeBytes is the number of bytes stored (compressed).
	SizeBytes int64 `json:"size_bytes"`
	// Checksum is "sha256:<hex>" of the stored bytes. Required.
	Checksum string `json:"checksum"`
	// StartLSN and StopLSN bound the WAL the backup needs (physical only).
	StartLSN string `json:"start_lsn,omitempty"`
	StopLSN  string `json:"stop_lsn,omitempty"`
	// Timeline is the PostgreSQL timeline the backup was taken on (physical).
	Timeline uint32 `json:"timeline"`
	// DurationMS is how long the run took, in milliseconds.
	DurationMS int64 `json:"duration_ms"`
}

// BackupFailed is the payload of [TypeBackupFailed].
type BackupFailed struct {
	Header
	BackupRun
	// Error says what failed, in a sentence; it never holds a secret.
	// Required.
	Error string `json:"error"`
	// DurationMS is how long the run took before failing, in milliseconds.
	DurationMS int64 `json:"duration_ms"`
}

// BackupVerified is the payload of [TypeBackupVerified].
type BackupVerified struct {
	Header
	BackupRun
	// Path is the repository path of the backup that was restored. Required.
	Path string `json:"path"`
	// OK is true when the restore started, passed pg_amcheck and the
	// row-count probe.
	OK bool `json:"ok"`
	// Error says what failed when OK is false.
	Error string `json:"error,omitempty"`
	// Rows is the row count the probe found in all user tables.
	Rows int64 `json:"rows"`
	// DurationMS is how long the drill took, in milliseconds.
	DurationMS int64 `json:"duration_ms"`
}

func (p *BackupRun) checkRun(v *validator) {
	v.required("data.run_id", p.RunID)
	v.required("data.job", p.Job)
	v.oneOf("data.method", p.Method, "physical", "logical", "verify")
	v.required("data.repository", p.Repository)
	v.nonNegative("data.occurrence_ms", p.OccurrenceMS)
}

func (p *BackupStarted) value() any { return *p }
func (p *BackupStarted) check(v *validator) {
	p.checkRun(v)
}

func (p *BackupCompleted) value() any { return *p }
func (p *BackupCompleted) check(v *validator) {
	p.checkRun(v)
	v.required("data.path", p.Path)
	v.required("data.checksum", p.Checksum)
	v.nonNegative("data.size_bytes", p.SizeBytes)
	v.lsn("data.start_lsn", p.StartLSN)
	v.lsn("data.stop_lsn", p.StopLSN)
	v.nonNegative("data.duration_ms", p.DurationMS)
}

func (p *BackupFailed) value() any { return *p }
func (p *BackupFailed) check(v *validator) {
	p.checkRun(v)
	v.required("data.error", p.Error)
	v.nonNegative("data.duration_ms", p.DurationMS)
}

func (p *BackupVerified) value() any { return *p }
func (p *BackupVerified) check(v *validator) {
	p.checkRun(v)
	v.required("data.path", p.Path)
	if !p.OK {
		v.required("data.error", p.Error)
	}
	v.nonNegative("data.duration_ms", p.DurationMS)
}

// NewEnvelopeWithID is NewEnvelope with a caller-chosen id instead of a
// random one: an event recorded in a durable outbox keeps its id across
// retries and restarts, so consumers deduplicate it. id must be non-empty.
func NewEnvelopeWithID(id, typ, source string, h Header, data any) (Envelope, error) {
	e, err := NewEnvelope(typ, source, h, data)
	if err != nil {
		return Envelope{}, err
	}
	e.ID = id
	if err := e.Validate(); err != nil {
		return Envelope{}, fmt.Errorf("new %s event: %w", typ, err)
	}
	return e, nil
}
