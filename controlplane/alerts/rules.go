// Package alerts is the control plane's alert engine (whitepaper Op 3:
// "alert liberally, page judiciously"; alerts are meant for intervention).
//
// It has three layers, outside in:
//
//   - Evaluate (eval.go) is pure: the state of the clusters (the members'
//     summaries as received, the projection's cluster and nodes, facts
//     taken from events) and the time in, the conditions that hold out.
//   - Step (state.go) is the per-fingerprint state machine, pure as well:
//     pending (the condition must hold for the rule's `for` duration) →
//     firing → resolved, with flapping suppression; NotifyDecision says
//     what a transition sends (silences, acknowledgements, page repeats).
//   - Engine (engine.go) runs them every second against the store, keeps
//     the summaries in memory, records alert_firing and alert_resolved
//     events and hands notifications to the Notifier (notify.go), whose
//     queue and workers deliver them to webhooks and Dapr bindings without
//     ever blocking the evaluation.
package alerts

import (
	"time"

	"github.com/dbpilot/dbpilot/proto"
)

// Rule names (proto.Alert.Rule). Each rule has one severity (RuleSeverity).
const (
	// RuleNoWritablePrimary: no member is a writable primary for longer
	// than NoPrimaryFor (page). Not during a planned switchover.
	RuleNoWritablePrimary = "no_writable_primary"
	// RuleReplicaNotStreaming: a replica's WAL receiver is not streaming
	// for ReplicaFor (ticket).
	RuleReplicaNotStreaming = "replica_not_streaming"
	// RuleReplicaLag: a replica is more than ReplicaLagBytes behind for
	// ReplicaFor (ticket).
	RuleReplicaLag = "replica_lag"
	// RuleSyncStandbyMissing: a primary in synchronous mode has no
	// synchronous standby streaming for SyncStandbyFor (page): commits
	// wait.
	RuleSyncStandbyMissing = "sync_standby_missing"
	// RuleFailover: a failover happened (info); fires on primary_changed
	// with reason failover and resolves by itself after FailoverInfoFor.
	RuleFailover = "failover"
	// RuleNodeRepairFailing: node repairs keep failing (page): a failed
	// node_repair of attempt >= RepairFailures, until one succeeds.
	RuleNodeRepairFailing = "node_repair_failing"
	// RuleBackupFailed: a backup job's last run failed (ticket; subject:
	// the job).
	RuleBackupFailed = "backup_failed"
	// RuleBackupMissed: a scheduled backup job's next run is overdue by
	// more than BackupGrace (ticket; subject: the job).
	RuleBackupMissed = "backup_missed"
	// RuleBackupStale: no successful backup for BackupMaxAge in a cluster
	// with scheduled backups (ticket).
	RuleBackupStale = "backup_stale"
	// RuleArchiveFailing: WAL archiving fails on the primary (ticket, for
	// ArchiveTicketFor).
	RuleArchiveFailing = "wal_archive_failing"
	// RuleArchiveFailingLong: WAL archiving has failed for
	// ArchivePageAfter (page).
	RuleArchiveFailingLong = "wal_archive_failing_long"
	// RuleDrillStale: no successful restore drill for DrillMaxAge in a
	// cluster with backups (ticket).
	RuleDrillStale = "restore_drill_stale"
	// RuleFilesystemHigh: a data or WAL filesystem is above DiskTicketPct
	// (ticket; subject: data or wal).
	RuleFilesystemHigh = "filesystem_usage_high"
	// RuleFilesystemCritical: above DiskPagePct (page; subject: data or
	// wal).
	RuleFilesystemCritical = "filesystem_usage_critical"
	// RuleAgentSilent: no summary from a provisioned node for
	// SilentHeartbeats × its summary interval (page); a node never heard
	// from counts from when its cluster was first seen Ready (or the
	// engine started, whichever is later).
	RuleAgentSilent = "agent_silent"
)

// RuleSeverity maps every rule to its severity.
var RuleSeverity = map[string]string{
	RuleNoWritablePrimary:   proto.SeverityPage,
	RuleReplicaNotStreaming: proto.SeverityTicket,
	RuleReplicaLag:          proto.SeverityTicket,
	RuleSyncStandbyMissing:  proto.SeverityPage,
	RuleFailover:            proto.SeverityInfo,
	RuleNodeRepairFailing:   proto.SeverityPage,
	RuleBackupFailed:        proto.SeverityTicket,
	RuleBackupMissed:        proto.SeverityTicket,
	RuleBackupStale:         proto.SeverityTicket,
	RuleArchiveFailing:      proto.SeverityTicket,
	RuleArchiveFailingLong:  proto.SeverityPage,
	RuleDrillStale:          proto.SeverityTicket,
	RuleFilesystemHigh:      proto.SeverityTicket,
	RuleFilesystemCritical:  proto.SeverityPage,
	RuleAgentSilent:         proto.SeverityPage,
}

// Thresholds are the rules' tunables, resolved (defaults, then the
// template's alerts block, then the cluster's overrides).
type Thresholds struct {
	// NoPrimaryFor: see RuleNoWritablePrimary (default ttl + 5s).
	NoPrimaryFor time.Duration
	// ReplicaLagBytes (bytes) and ReplicaFor: see RuleReplicaLag.
	ReplicaLagBytes int64
	ReplicaFor      time.Duration
	// SyncStandbyFor: see RuleSyncStandbyMissing.
	SyncStandbyFor time.Duration
	// FailoverInfoFor is how long the failover info alert stays firing.
	FailoverInfoFor time.Duration
	// RepairFailures: see RuleNodeRepairFailing.
	RepairFailures int
	// BackupMaxAge, BackupGrace: see RuleBackupStale, RuleBackupMissed.
	BackupMaxAge time.Duration
	BackupGrace  time.Duration
	// ArchiveTicketFor and ArchivePageAfter: see RuleArchiveFailing and
	// RuleArchiveFailingLong.
	ArchiveTicketFor time.Duration
	ArchivePageAfter time.Duration
	// DrillMaxAge: see RuleDrillStale.
	DrillMaxAge time.Duration
	// DiskTicketPct and DiskPagePct are percentages; DiskFor how long the
	// usage must stay above them.
	DiskTicketPct float64
	DiskPagePct   float64
	DiskFor       time.Duration
	// SilentHeartbeats: see RuleAgentSilent.
	SilentHeartbeats int
	// RepeatInterval: how often a firing, unacknowledged page is notified
	// again.
	RepeatInterval time.Duration
}

// DefaultAgentTTL is the agents' ttl assumed when the server's agent_ttl
// is not set (the agent's own default).
const DefaultAgentTTL = 10 * time.Second

// DefaultSummaryInterval is the summary interval assumed for a node never
// heard from (the agent's report.summary_interval default).
const DefaultSummaryInterval = 3 * time.Second

// DefaultThresholds returns the defaults for agents with lease ttl (<= 0:
// DefaultAgentTTL).
func DefaultThresholds(ttl time.Duration) Thresholds {
	if ttl <= 0 {
		ttl = DefaultAgentTTL
	}
	return Thresholds{
		NoPrimaryFor:     ttl + 5*time.Second,
		ReplicaLagBytes:  64 << 20,
		ReplicaFor:       5 * time.Minute,
		SyncStandbyFor:   30 * time.Second,
		FailoverInfoFor:  5 * time.Minute,
		RepairFailures:   3,
		BackupMaxAge:     26 * time.Hour,
		BackupGrace:      time.Hour,
		ArchiveTicketFor: 5 * time.Minute,
		ArchivePageAfter: time.Hour,
		DrillMaxAge:      8 * 24 * time.Hour,
		DiskTicketPct:    85,
		DiskPagePct:      95,
		DiskFor:          time.Minute,
		SilentHeartbeats: 3,
		RepeatInterval:   4 * time.Hour,
	}
}

// With returns t with the fields o sets replaced (o validated with
// proto.AlertThresholds.Check; a field that does not parse is ignored).
func (t Thresholds) With(o *proto.AlertThresholds) Thresholds {
	if o == nil {
		return t
	}
	dur := func(dst *time.Duration, v string) {
		if d, err := time.ParseDuration(v); v != "" && err == nil {
			*dst = d
		}
	}
	dur(&t.NoPrimaryFor, o.NoPrimaryFor)
	dur(&t.ReplicaFor, o.ReplicaFor)
	dur(&t.SyncStandbyFor, o.SyncStandbyFor)
	dur(&t.BackupMaxAge, o.BackupMaxAge)
	dur(&t.BackupGrace, o.BackupGrace)
	dur(&t.ArchivePageAfter, o.ArchivePageAfter)
	dur(&t.DrillMaxAge, o.DrillMaxAge)
	dur(&t.RepeatInterval, o.RepeatInterval)
	if o.ReplicaLagBytes != nil {
		t.ReplicaLagBytes = *o.ReplicaLagBytes
	}
	if o.DiskTicketPct != nil {
		t.DiskTicketPct = *o.DiskTicketPct
	}
	if o.DiskPagePct != nil {
		t.DiskPagePct = *o.DiskPagePct
	}
	if o.SilentHeartbeats != nil {
		t.SilentHeartbeats = *o.SilentHeartbeats
	}
	if o.RepairFailures != nil {
		t.RepairFailures = *o.RepairFailures
	}
	return t
}

// For returns how long rule's condition must hold before it fires.
func (t Thresholds) For(rule string) time.Duration {
	switch rule {
	case RuleNoWritablePrimary:
		return t.NoPrimaryFor
	case RuleReplicaNotStreaming, RuleReplicaLag:
		return t.ReplicaFor
	case RuleSyncStandbyMissing:
		return t.SyncStandbyFor
	case RuleArchiveFailing:
		return t.ArchiveTicketFor
	case RuleArchiveFailingLong:
		return t.ArchivePageAfter
	case RuleFilesystemHigh, RuleFilesystemCritical:
		return t.DiskFor
	}
	return 0
}
