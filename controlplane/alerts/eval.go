package alerts

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	"github.com/dbpilot/dbpilot/proto"
)

// ClusterState is what Evaluate knows of one cluster.
type ClusterState struct {
	// ID is the store's cluster id; Namespace, Project and Name name it.
	ID, Namespace, Project, Name string
	// ReadySince is when the cluster was first seen Ready (or Degraded)
	// by the engine, or when the engine started if later; zero: the
	// cluster is not live (provisioning, deleting, failed), and no rule
	// is evaluated for it.
	ReadySince time.Time
	// Planned is true while a planned change (switchover, rolling
	// restart, settings update) runs: primary-related rules hold off.
	Planned bool
	// Thresholds are the cluster's resolved tunables.
	Thresholds Thresholds
	// Nodes are the provisioned nodes.
	Nodes []NodeState
	// LastFailoverAt is the time of the last primary_changed with reason
	// failover (zero: none seen); FailoverTo its new primary.
	LastFailoverAt time.Time
	FailoverTo     string
	// RepairFailed maps a node to the attempt of its last node_repair if
	// that one failed (a success removes the node).
	RepairFailed map[string]int
	// BackupEvents are the last backup outcomes per job seen in events.
	BackupEvents map[string]BackupOutcome
	// SilentBefore names the nodes whose agent_silent alert was firing
	// when the engine (re)started: one not heard from since stays silent
	// (its grace from ReadySince does not apply).
	SilentBefore map[string]bool
}

// BackupOutcome is the last success and failure of a backup job.
type BackupOutcome struct {
	LastSuccess, LastFailure time.Time
}

// NodeState is one provisioned node.
type NodeState struct {
	// Name is the node's name.
	Name string
	// Summary is the last summary received (nil: none since the engine
	// started); SummaryAt when it was received.
	Summary   *proto.MemberSummary
	SummaryAt time.Time
	// Role, Healthy and MemberState are the projection's view (from
	// state_changed events), used for the primary when no member of the
	// cluster has sent a summary.
	Role        string
	Healthy     bool
	MemberState string
}

// Condition is one rule's condition holding now.
type Condition struct {
	// Rule and Severity: see RuleSeverity.
	Rule, Severity string
	// ClusterID, Namespace, Project, Cluster name the cluster; Node the
	// member ("" cluster-wide); Subject the job or filesystem kind.
	ClusterID, Namespace, Project, Cluster, Node, Subject string
	// Summary is a sentence for humans.
	Summary string
	// For is how long it must hold before it fires.
	For time.Duration
}

// Fingerprint is the condition's identity: 16 hex digits of the SHA-256
// of rule, namespace, project, cluster, node and subject.
func (c Condition) Fingerprint() string {
	return Fingerprint(c.Rule, c.Namespace, c.Project, c.Cluster, c.Node, c.Subject)
}

// Fingerprint hashes an alert's identity (see Condition.Fingerprint).
func Fingerprint(rule, ns, project, cluster, node, subject string) string {
	h := sha256.Sum256([]byte(rule + "\x00" + ns + "\x00" + project + "\x00" + cluster + "\x00" + node + "\x00" + subject))
	return hex.EncodeToString(h[:8])
}

// silent reports whether n has not been heard from for the silent span
// at now, and that span.
func silent(c ClusterState, n NodeState, now time.Time) (bool, time.Duration) {
	interval := DefaultSummaryInterval
	last := c.ReadySince
	if n.Summary != nil {
		interval = time.Duration(n.Summary.IntervalMS) * time.Millisecond
		last = n.SummaryAt
	}
	span := time.Duration(max(c.Thresholds.SilentHeartbeats, 1)) * interval
	return now.Sub(last) > span, span
}

// Evaluate returns the conditions holding at now, sorted by fingerprint.
// It is pure: the same clusters and now give the same conditions.
func Evaluate(clusters []ClusterState, now time.Time) []Condition {
	var out []Condition
	for _, c := range clusters {
		if c.ReadySince.IsZero() {
			continue
		}
		out = append(out, evalCluster(c, now)...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Fingerprint() < out[j].Fingerprint() })
	return out
}

func evalCluster(c ClusterState, now time.Time) []Condition {
	th := c.Thresholds
	var out []Condition
	add := func(rule, node, subject, format string, args ...any) {
		out = append(out, Condition{Rule: rule, Severity: RuleSeverity[rule], ClusterID: c.ID, Namespace: c.Namespace, Project: c.Project,
			Cluster: c.Name, Node: node, Subject: subject, Summary: fmt.Sprintf(format, args...), For: th.For(rule)})
	}
	anySummary := false
	writable := []string{}
	for _, n := range c.Nodes {
		if n.Summary != nil {
			anySummary = true
		}
		quiet, span := silent(c, n, now)
		// A node whose last word was a graceful stop (its agent's final
		// summary, state stopped) was stopped on purpose: its silence
		// is no lost host, so no page; a stopped replica is a replica not
		// streaming (a ticket, below).
		stopped := n.Summary != nil && n.Summary.State == proto.StateStopped
		if stopped {
			quiet = false
		}
		if !quiet && n.Summary == nil && c.SilentBefore[n.Name] {
			add(RuleAgentSilent, n.Name, "", "node %s: silent before the control plane restarted, and not heard from since", n.Name)
		} else if quiet {
			if n.Summary == nil {
				add(RuleAgentSilent, n.Name, "", "node %s: no summary heard from its agent since the cluster was ready (%s ago; silent after %s)",
					n.Name, now.Sub(c.ReadySince).Round(time.Second), span)
			} else {
				add(RuleAgentSilent, n.Name, "", "node %s: no summary from its agent for %s (silent after %d × %s)",
					n.Name, now.Sub(n.SummaryAt).Round(time.Second), th.SilentHeartbeats, time.Duration(n.Summary.IntervalMS)*time.Millisecond)
			}
		}
		s := n.Summary
		if s == nil {
			continue
		}
		// Disks: the last summary counts even from a silent agent (the
		// disk did not empty itself).
		for _, fs := range s.Filesystems {
			switch {
			case fs.UsedPct >= th.DiskPagePct:
				add(RuleFilesystemCritical, n.Name, fs.Kind, "node %s: %s filesystem %s is %.1f%% full (page at %g%%)", n.Name, fs.Kind, fs.Path, fs.UsedPct, th.DiskPagePct)
			case fs.UsedPct >= th.DiskTicketPct:
				add(RuleFilesystemHigh, n.Name, fs.Kind, "node %s: %s filesystem %s is %.1f%% full (ticket at %g%%)", n.Name, fs.Kind, fs.Path, fs.UsedPct, th.DiskTicketPct)
			}
		}
		if quiet {
			continue
		}
		if s.Writable {
			writable = append(writable, n.Name)
			if s.SynchronousMode && len(s.SyncStandbys) == 0 && !c.Planned {
				add(RuleSyncStandbyMissing, n.Name, "", "primary %s runs in synchronous mode with no synchronous standby streaming: commits wait", n.Name)
			}
			if a := s.Archive; a != nil && a.Failing {
				since := ""
				if a.LastFailedAt != nil {
					since = ", last failure " + a.LastFailedAt.UTC().Format(time.RFC3339)
				}
				add(RuleArchiveFailing, n.Name, "", "primary %s: WAL archiving fails (%d failures%s)", n.Name, a.FailedCount, since)
				add(RuleArchiveFailingLong, n.Name, "", "primary %s: WAL archiving has failed for over %s (%d failures%s)", n.Name, th.ArchivePageAfter, a.FailedCount, since)
			}
		}
		if s.Role == proto.RoleReplica && stopped {
			add(RuleReplicaNotStreaming, n.Name, "", "replica %s is stopped (its agent reported a graceful stop), not streaming from the primary", n.Name)
		}
		if s.Role == proto.RoleReplica && s.State == proto.StateRunning {
			if s.Streaming != nil && !*s.Streaming {
				add(RuleReplicaNotStreaming, n.Name, "", "replica %s is not streaming from the primary", n.Name)
			}
			if s.LagBytes > th.ReplicaLagBytes {
				add(RuleReplicaLag, n.Name, "", "replica %s is %d bytes behind the primary (threshold %d)", n.Name, s.LagBytes, th.ReplicaLagBytes)
			}
		}
	}
	if !anySummary {
		// No member sends summaries (older agents): the projection's view.
		for _, n := range c.Nodes {
			if n.Role == proto.RolePrimary && n.Healthy && n.MemberState == proto.StateRunning {
				writable = append(writable, n.Name)
			}
		}
	}
	if len(writable) == 0 && !c.Planned && len(c.Nodes) > 0 {
		add(RuleNoWritablePrimary, "", "", "cluster %s has no writable primary (for more than %s)", c.Name, th.NoPrimaryFor)
	}
	if !c.LastFailoverAt.IsZero() && now.Sub(c.LastFailoverAt) < th.FailoverInfoFor {
		add(RuleFailover, "", "", "failover at %s: %s is the new primary", c.LastFailoverAt.UTC().Format(time.RFC3339), c.FailoverTo)
	}
	for _, node := range sortedKeys(c.RepairFailed) {
		if a := c.RepairFailed[node]; a >= th.RepairFailures {
			add(RuleNodeRepairFailing, node, "", "node %s: repair attempt %d failed (paging from attempt %d)", node, a, th.RepairFailures)
		}
	}
	evalBackups(c, now, add)
	return out
}

// jobAgg is one backup job across the members' summaries and the events.
type jobAgg struct {
	scheduled                      bool
	success, failure, due, drilled time.Time
}

func later(a time.Time, b *time.Time) time.Time {
	if b != nil && b.After(a) {
		return *b
	}
	return a
}

func evalBackups(c ClusterState, now time.Time, add func(rule, node, subject, format string, args ...any)) {
	th := c.Thresholds
	jobs := map[string]*jobAgg{}
	get := func(name string) *jobAgg {
		if jobs[name] == nil {
			jobs[name] = &jobAgg{}
		}
		return jobs[name]
	}
	// Every member reports its local view of a job; only one runs each
	// occurrence (the backup claim), so the latest times across members
	// are the job's.
	for _, n := range c.Nodes {
		if n.Summary == nil {
			continue
		}
		for _, b := range n.Summary.Backups {
			j := get(b.Job)
			j.scheduled = j.scheduled || b.Schedule != ""
			j.success, j.failure = later(j.success, b.LastSuccessAt), later(j.failure, b.LastFailureAt)
			j.due, j.drilled = later(j.due, b.NextDueAt), later(j.drilled, b.LastDrillAt)
		}
	}
	for name, o := range c.BackupEvents {
		j := get(name)
		j.success, j.failure = later(j.success, &o.LastSuccess), later(j.failure, &o.LastFailure)
	}
	if len(jobs) == 0 {
		return
	}
	var lastSuccess, lastDrill time.Time
	scheduled := false
	for _, name := range sortedKeys(jobs) {
		j := jobs[name]
		if j.failure.After(j.success) {
			add(RuleBackupFailed, "", name, "backup job %s: last run failed at %s", name, j.failure.UTC().Format(time.RFC3339))
		}
		if j.scheduled && !j.due.IsZero() && now.Sub(j.due) > th.BackupGrace {
			add(RuleBackupMissed, "", name, "backup job %s: the run due at %s has not happened (%s late)", name, j.due.UTC().Format(time.RFC3339), now.Sub(j.due).Round(time.Minute))
		}
		scheduled = scheduled || j.scheduled
		lastSuccess = later(lastSuccess, &j.success)
		lastDrill = later(lastDrill, &j.drilled)
	}
	stale := func(last time.Time, maxAge time.Duration) bool {
		if last.IsZero() {
			return now.Sub(c.ReadySince) > maxAge
		}
		return now.Sub(last) > maxAge
	}
	if scheduled && stale(lastSuccess, th.BackupMaxAge) {
		add(RuleBackupStale, "", "", "no successful backup for over %s (last: %s)", th.BackupMaxAge, fmtTime(lastSuccess))
	}
	if stale(lastDrill, th.DrillMaxAge) {
		add(RuleDrillStale, "", "", "no successful restore drill for over %s (last: %s)", th.DrillMaxAge, fmtTime(lastDrill))
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
