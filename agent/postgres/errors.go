package postgres

import "errors"

// Sentinel errors returned (wrapped) by [Instance] methods. Test with
// errors.Is.
var (
	// ErrAlreadyRunning is returned when an operation needs a stopped
	// instance (Start, BaseBackup, Rewind, RemoveDataDir) but a postmaster is
	// running for the data directory, whether this Instance started it or it
	// was found through postmaster.pid.
	ErrAlreadyRunning = errors.New("postgres is already running for this data directory")

	// ErrNotRunning is returned by operations that need a running server
	// (Bootstrap, Promote).
	ErrNotRunning = errors.New("postgres is not running")

	// ErrNotInitialized is returned when the data directory has no
	// PG_VERSION file.
	ErrNotInitialized = errors.New("data directory is not initialized")

	// ErrAlreadyInitialized is returned by Initdb when PG_VERSION exists.
	ErrAlreadyInitialized = errors.New("data directory is already initialized")

	// ErrDataDirNotEmpty is returned by Initdb and BaseBackup when the data
	// directory exists and is not empty.
	ErrDataDirNotEmpty = errors.New("data directory is not empty")

	// ErrWrongRole is returned when the running server's role does not fit
	// the operation: Follow on a primary, Bootstrap on a replica, or
	// starting a former standby's data directory as a primary.
	ErrWrongRole = errors.New("postgres has the wrong role for this operation")

	// ErrPostmasterExited is returned by Start when the postmaster exits
	// before accepting connections; the error text carries the tail of the
	// log file.
	ErrPostmasterExited = errors.New("postmaster exited before accepting connections")
)
