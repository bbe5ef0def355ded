package agent

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/postgres"
)

// database is what the agent needs of its local database server:
// *postgres.Instance in production. Tests of view and apply use a fake, so
// the translation between observations, ha.Decide and actions is checked
// without starting processes (the integration tests still do).
type database interface {
	IsInitialized() bool
	Running() bool
	Status(ctx context.Context) (postgres.Status, error)
	Start(ctx context.Context, role postgres.Role, up *postgres.Upstream) error
	Stop(ctx context.Context, mode postgres.StopMode) error
	Promote(ctx context.Context) error
	Follow(ctx context.Context, up postgres.Upstream) error
	Rewind(ctx context.Context, up postgres.Upstream) error
	BaseBackup(ctx context.Context, up postgres.Upstream) error
	RemoveDataDir() error
	Initdb(ctx context.Context) error
	Bootstrap(ctx context.Context) error
	EnsureRole(ctx context.Context, role postgres.Credentials, attrs []string, grants []string) error
	ControlData(ctx context.Context) (postgres.ControlData, error)
	Checkpoint(ctx context.Context) error
	SetSynchronousStandbys(ctx context.Context, names []string) error
	ReplicationSlots(ctx context.Context) (postgres.SlotState, error)
	ApplySlots(ctx context.Context, create, drop []string) (postgres.SlotChanges, error)
	PostmasterPID() (pid int, ok bool)
	Owner() (uid, gid int, ok bool)
	Chown(path string) error
	Connect(ctx context.Context) (*pgx.Conn, error)
	Close()
}

// coordinator is the agent's etcd session (HA lease, lock session, the
// cluster's keys): *dcs.Client in production, a fake in unit tests.
type coordinator interface {
	Session(ctx context.Context) (lease int64, fresh bool, err error)
	Renew(ctx context.Context) error
	LeaseID() int64
	LeaseLeft(now time.Time) time.Duration
	TTLSeconds() int64
	Snapshot(ctx context.Context) (dcs.Snapshot, error)
	Watch(ctx context.Context, relevant func(dcs.Event) bool) <-chan struct{}
	WarmLocks(ctx context.Context) error
	TryLock(ctx context.Context, pfx string) (func(), error)
	Probe(ctx context.Context, timeout time.Duration) error
	PutMember(ctx context.Context, m dcs.Member) error
	Bootstrap(ctx context.Context, systemID string, l dcs.LeaderRecord, doc dcs.ClusterDocument) (int64, bool, error)
	ClaimLeader(ctx context.Context, l dcs.LeaderRecord, prevTerm uint64, termRev int64, h dcs.HistoryRecord, extra ...dcs.Op) (int64, bool, error)
	ReclaimLeader(ctx context.Context, l dcs.LeaderRecord, term uint64) (int64, bool, error)
	UpdateLeader(ctx context.Context, l dcs.LeaderRecord, createRev int64) (bool, error)
	ReleaseLeader(ctx context.Context, createRev int64, extra ...dcs.Op) (bool, error)
	OpAbandonHistory(ctx context.Context, term uint64, reason string) []dcs.Op
	PutIfLeader(ctx context.Context, createRev int64, key string, value any) (bool, error)
	Claim(ctx context.Context, key, value string) (bool, error)
	CompleteClaim(ctx context.Context, key, value string, ttl time.Duration) error
	BackupRequests(ctx context.Context) (map[string]string, error)
	DeleteBackupRequest(ctx context.Context, id string) error
	Keys() dcs.Keys
	Close(ctx context.Context) error
}

var (
	_ database    = (*postgres.Instance)(nil)
	_ coordinator = (*dcs.Client)(nil)
)
