package proto

import (
	"fmt"
	"time"
)

// Alert severities (Alert.Severity): a page wakes someone up, a ticket is
// work for office hours, info is a record.
const (
	SeverityPage   = "page"
	SeverityTicket = "ticket"
	SeverityInfo   = "info"
)

// Alert states (Alert.State).
const (
	// AlertPending: the condition holds but not yet for the rule's `for`
	// duration; nothing is notified.
	AlertPending = "pending"
	// AlertFiring: the condition held for `for`; notified.
	AlertFiring = "firing"
	// AlertResolved: the condition no longer holds; notified.
	AlertResolved = "resolved"
)

// Alert is one alert of a namespace (OpenAPI schema Alert), in GET
// /v1/namespaces/{ns}/alerts: a rule's condition about a cluster, a node
// or a backup job, with its state machine (pending → firing → resolved)
// and the operator's acknowledgement and silence.
type Alert struct {
	// ID is the alert's fingerprint: 16 hex digits of the SHA-256 of the
	// rule, namespace, project, cluster, node and subject. The same
	// condition always has the same id; a resolved alert that fires again
	// keeps it.
	ID string `json:"id"`
	// Rule names the rule (no_writable_primary, agent_silent, …;
	// docs/api.md lists them).
	Rule string `json:"rule"`
	// Severity is page, ticket or info.
	Severity string `json:"severity"`
	// State is pending, firing or resolved.
	State string `json:"state"`
	// Namespace, Project, Cluster name the cluster; Node is the member
	// ("" for a cluster-wide alert); Subject is what else identifies it (a
	// backup job, a filesystem kind; "" when nothing).
	Namespace string `json:"namespace"`
	Project   string `json:"project"`
	Cluster   string `json:"cluster"`
	Node      string `json:"node,omitempty"`
	Subject   string `json:"subject,omitempty"`
	// Summary is a sentence saying what is wrong, with the numbers.
	Summary string `json:"summary"`
	// FirstSeen is when the condition was first seen holding (this
	// episode); LastSeen is the last evaluation that saw it holding (kept
	// in the store at most 30 s behind).
	FirstSeen *time.Time `json:"first_seen,omitempty"`
	LastSeen  *time.Time `json:"last_seen,omitempty"`
	// FiredAt is when it last started firing; ResolvedAt when it last
	// resolved (omitted while firing).
	FiredAt    *time.Time `json:"fired_at,omitempty"`
	ResolvedAt *time.Time `json:"resolved_at,omitempty"`
	// Flapping is true while the alert fired and resolved too often in
	// the flapping window: it then stays firing until the condition has
	// been clear for the hold-down.
	Flapping bool `json:"flapping,omitempty"`
	// AckedAt and AckedBy record the acknowledgement (a page is no longer
	// repeated); cleared when the alert resolves.
	AckedAt *time.Time `json:"acked_at,omitempty"`
	AckedBy string     `json:"acked_by,omitempty"`
	// SilencedUntil, SilenceReason and SilencedBy describe the active
	// silence: the alert stays visible but notifies nothing until then.
	SilencedUntil *time.Time `json:"silenced_until,omitempty"`
	SilenceReason string     `json:"silence_reason,omitempty"`
	SilencedBy    string     `json:"silenced_by,omitempty"`
}

// SilenceRequest is the body of POST /v1/namespaces/{ns}/alerts/{id}/silence
// (OpenAPI schema SilenceRequest; operator role). The answer is the
// silenced Alert.
type SilenceRequest struct {
	// Duration is how long the silence lasts, a Go duration from 1m to
	// 720h ("2h"). Required.
	Duration string `json:"duration"`
	// Reason says why, 1 to 200 characters. Required.
	Reason string `json:"reason"`
}

// Notification channel kinds (NotificationChannel.Kind).
const (
	// ChannelWebhook POSTs the AlertNotification as JSON to URL, signed
	// with the channel's secret (header X-Dbpilot-Signature).
	ChannelWebhook = "webhook"
	// ChannelDaprBinding invokes a Dapr output binding through the
	// server's sidecar (needs bus.kind dapr).
	ChannelDaprBinding = "dapr_binding"
)

// NotificationChannel is where a namespace's alert transitions are sent
// (OpenAPI schema NotificationChannel): GET and POST
// /v1/namespaces/{ns}/notification-channels. The webhook secret is
// write-only: it is accepted in a request and never returned.
type NotificationChannel struct {
	// Name identifies the channel in its namespace (a name, 1-40 of a-z,
	// 0-9 and '-').
	Name string `json:"name"`
	// Kind is webhook or dapr_binding.
	Kind string `json:"kind"`
	// URL is the webhook's http(s) URL (webhook only).
	URL string `json:"url,omitempty"`
	// Secret is the webhook's HMAC key, at least 16 characters (webhook
	// only; write-only, never returned).
	Secret string `json:"secret,omitempty"`
	// Binding and Operation name the Dapr output binding and its
	// operation ("create", "post", …) (dapr_binding only; Operation
	// defaults to "create").
	Binding   string `json:"binding,omitempty"`
	Operation string `json:"operation,omitempty"`
	// HasSecret is true when the channel has a secret (answers only).
	HasSecret bool `json:"has_secret,omitempty"`
	// CreatedAt is when the channel was created (answers only).
	CreatedAt *time.Time `json:"created_at,omitempty"`
}

// Delivery states (NotificationDelivery.Status).
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// NotificationDelivery is one notification sent (or being sent) to a
// channel (OpenAPI schema NotificationDelivery), in GET
// …/notification-channels/{name}/deliveries, newest first.
type NotificationDelivery struct {
	// ID identifies the delivery; it is also the notification's id.
	ID string `json:"id"`
	// Channel is the channel's name.
	Channel string `json:"channel"`
	// AlertID is the alert's fingerprint; Transition is firing, resolved
	// or repeat.
	AlertID    string `json:"alert_id"`
	Transition string `json:"transition"`
	// Status is pending, delivered or failed (retries exhausted).
	Status string `json:"status"`
	// Attempts is how many times it was tried.
	Attempts int `json:"attempts"`
	// LastError is the last attempt's error ("" after a success).
	LastError string `json:"last_error,omitempty"`
	// CreatedAt and UpdatedAt: when it was queued, when it last changed.
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Notification transitions (AlertNotification.Transition).
const (
	TransitionFiring   = "firing"
	TransitionResolved = "resolved"
	// TransitionRepeat: a page still firing and not acknowledged, sent
	// again every repeat_interval.
	TransitionRepeat = "repeat"
)

// AlertNotification is the body a channel receives (a webhook's POST
// JSON, a Dapr binding's data).
type AlertNotification struct {
	// ID is unique per notification (the delivery id): receivers
	// deduplicate on it (a retry after a lost answer repeats it).
	ID string `json:"id"`
	// Transition is firing, resolved or repeat.
	Transition string `json:"transition"`
	// At is when the transition happened.
	At time.Time `json:"at"`
	// Alert is the alert as of the transition.
	Alert Alert `json:"alert"`
}

// AlertThresholds are the alert rules' tunables (OpenAPI schema
// AlertThresholds): a catalog template's `alerts:` block and a cluster's
// overrides (PUT …/clusters/{cluster}/alert-thresholds). Every field is
// optional: an unset one keeps the template's value, else the default
// (docs/api.md, "Alerts"). Durations are Go durations ("90s", "26h").
type AlertThresholds struct {
	// NoPrimaryFor is how long a cluster may have no writable primary
	// before no_writable_primary pages; default the agents' ttl + 5s.
	NoPrimaryFor string `yaml:"no_primary_for" json:"no_primary_for,omitempty"`
	// ReplicaLagBytes is the replay lag beyond which a replica is behind
	// (default 67108864, 64 MiB); ReplicaFor how long a replica may be
	// behind or not streaming before replica_not_streaming tickets
	// (default 5m).
	ReplicaLagBytes *int64 `yaml:"replica_lag_bytes" json:"replica_lag_bytes,omitempty"`
	ReplicaFor      string `yaml:"replica_for" json:"replica_for,omitempty"`
	// SyncStandbyFor is how long a synchronous-mode primary may have no
	// synchronous standby before sync_standby_missing pages (default 30s).
	SyncStandbyFor string `yaml:"sync_standby_for" json:"sync_standby_for,omitempty"`
	// DiskTicketPct and DiskPagePct are the data/WAL filesystem usage
	// thresholds in percent (defaults 85 and 95; ticket < page <= 100).
	DiskTicketPct *float64 `yaml:"disk_ticket_pct" json:"disk_ticket_pct,omitempty"`
	DiskPagePct   *float64 `yaml:"disk_page_pct" json:"disk_page_pct,omitempty"`
	// BackupMaxAge is the longest a cluster with scheduled backups may go
	// without a successful one (default 26h); BackupGrace how late a
	// scheduled run may be (default 1h).
	BackupMaxAge string `yaml:"backup_max_age" json:"backup_max_age,omitempty"`
	BackupGrace  string `yaml:"backup_grace" json:"backup_grace,omitempty"`
	// ArchivePageAfter is how long WAL archiving may fail before the
	// ticket becomes a page (default 1h).
	ArchivePageAfter string `yaml:"archive_page_after" json:"archive_page_after,omitempty"`
	// DrillMaxAge is the longest a cluster with backups may go without a
	// successful restore drill (default 192h, 8 days).
	DrillMaxAge string `yaml:"drill_max_age" json:"drill_max_age,omitempty"`
	// SilentHeartbeats is how many summary intervals without a summary
	// make an agent silent (default 3, 2 to 100).
	SilentHeartbeats *int `yaml:"silent_heartbeats" json:"silent_heartbeats,omitempty"`
	// RepairFailures is the node repair attempt from which failed repairs
	// page (default 3).
	RepairFailures *int `yaml:"repair_failures" json:"repair_failures,omitempty"`
	// RepeatInterval is how often a firing, unacknowledged page is sent
	// again (default 4h, at least 1m).
	RepeatInterval string `yaml:"repeat_interval" json:"repeat_interval,omitempty"`
}

// Check reports every problem of t through add(field, problem), field
// prefixed with prefix ("alerts." in a template, "" in a request).
func (t AlertThresholds) Check(prefix string, add func(field, problem string)) {
	dur := func(f, v string, lo time.Duration) {
		if v == "" {
			return
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < lo {
			add(prefix+f, fmt.Sprintf("must be a duration of at least %s like \"90s\" or \"26h\" (got %q)", lo, v))
		}
	}
	dur("no_primary_for", t.NoPrimaryFor, time.Second)
	dur("replica_for", t.ReplicaFor, 0)
	dur("sync_standby_for", t.SyncStandbyFor, 0)
	dur("backup_max_age", t.BackupMaxAge, time.Hour)
	dur("backup_grace", t.BackupGrace, time.Minute)
	dur("archive_page_after", t.ArchivePageAfter, time.Minute)
	dur("drill_max_age", t.DrillMaxAge, time.Hour)
	dur("repeat_interval", t.RepeatInterval, time.Minute)
	if t.ReplicaLagBytes != nil && *t.ReplicaLagBytes < 1 {
		add(prefix+"replica_lag_bytes", fmt.Sprintf("must be > 0 bytes (got %d)", *t.ReplicaLagBytes))
	}
	pct := func(f string, v *float64) {
		if v != nil && (*v <= 0 || *v > 100) {
			add(prefix+f, fmt.Sprintf("must be a percentage in (0, 100] (got %g)", *v))
		}
	}
	pct("disk_ticket_pct", t.DiskTicketPct)
	pct("disk_page_pct", t.DiskPagePct)
	if t.DiskTicketPct != nil && t.DiskPagePct != nil && *t.DiskTicketPct >= *t.DiskPagePct {
		add(prefix+"disk_ticket_pct", fmt.Sprintf("must be below disk_page_pct (%g >= %g)", *t.DiskTicketPct, *t.DiskPagePct))
	}
	if v := t.SilentHeartbeats; v != nil && (*v < 2 || *v > 100) {
		add(prefix+"silent_heartbeats", fmt.Sprintf("must be in [2, 100] (got %d)", *v))
	}
	if v := t.RepairFailures; v != nil && (*v < 1 || *v > 100) {
		add(prefix+"repair_failures", fmt.Sprintf("must be in [1, 100] (got %d)", *v))
	}
}
