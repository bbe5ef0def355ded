package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Alert is one alert row, keyed by its fingerprint ID (package
// controlplane/alerts owns every field but AckedAt and AckedBy, which the
// API sets; SaveAlert clears them when the alert resolves).
type Alert struct {
	ID        string
	Namespace string
	Project   string
	Cluster   string
	ClusterID string
	Node      string
	Subject   string
	Rule      string
	Severity  string
	// State is pending, firing or resolved (proto.Alert*).
	State        string
	Summary      string
	FirstSeen    time.Time
	LastSeen     time.Time
	FiredAt      time.Time
	ResolvedAt   time.Time
	Flapping     bool
	AckedAt      time.Time
	AckedBy      string
	LastNotified time.Time
	UpdatedAt    time.Time
}

// AlertFilter selects alerts of a namespace; empty fields match all.
// Limit is 1..1000 (default 100).
type AlertFilter struct {
	Namespace string
	State     string
	Severity  string
	// Cluster is the cluster's name.
	Cluster string
	Limit   int
}

// Silence mutes one alert (its fingerprint) until Until.
type Silence struct {
	ID        string
	Namespace string
	AlertID   string
	Until     time.Time
	Reason    string
	CreatedBy string
	CreatedAt time.Time
}

// Channel is a namespace's notification channel (kind webhook: URL and
// Secret; dapr_binding: Binding and Operation).
type Channel struct {
	Namespace string
	Name      string
	Kind      string
	URL       string
	Secret    string
	Binding   string
	Operation string
	CreatedAt time.Time
}

// Delivery is one notification to one channel.
type Delivery struct {
	ID         string
	Namespace  string
	Channel    string
	AlertID    string
	Transition string
	// Status is pending, delivered or failed (proto.Delivery*).
	Status    string
	Attempts  int
	LastError string
	CreatedAt time.Time
	UpdatedAt time.Time
}

const alertCols = `id, namespace, project, cluster, cluster_id, node, subject, rule, severity, state, summary, first_seen, last_seen,
 fired_at, resolved_at, flapping, acked_at, acked_by, last_notified, updated_at`

func scanAlert(sc interface{ Scan(...any) error }) (Alert, error) {
	var a Alert
	var first, last, fired, resolved, flapping, acked, notified, updated int64
	err := sc.Scan(&a.ID, &a.Namespace, &a.Project, &a.Cluster, &a.ClusterID, &a.Node, &a.Subject, &a.Rule, &a.Severity, &a.State, &a.Summary,
		&first, &last, &fired, &resolved, &flapping, &acked, &a.AckedBy, &notified, &updated)
	a.FirstSeen, a.LastSeen, a.FiredAt, a.ResolvedAt = fromMS(first), fromMS(last), fromMS(fired), fromMS(resolved)
	a.Flapping, a.AckedAt, a.LastNotified, a.UpdatedAt = flapping != 0, fromMS(acked), fromMS(notified), fromMS(updated)
	return a, err
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// SaveAlert inserts or updates a's row (every field but AckedAt and
// AckedBy, which are kept, except that a resolved alert loses its
// acknowledgement). UpdatedAt is set to a.UpdatedAt, or now when zero.
func (s *Store) SaveAlert(ctx context.Context, a Alert) error {
	if a.UpdatedAt.IsZero() {
		a.UpdatedAt = time.Now()
	}
	_, err := s.exec(ctx, `INSERT INTO alerts (`+alertCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '', ?, ?)
 ON CONFLICT (id) DO UPDATE SET state = excluded.state, summary = excluded.summary, severity = excluded.severity,
 first_seen = excluded.first_seen, last_seen = excluded.last_seen, fired_at = excluded.fired_at, resolved_at = excluded.resolved_at,
 flapping = excluded.flapping, last_notified = excluded.last_notified, updated_at = excluded.updated_at,
 acked_at = CASE WHEN excluded.state = 'resolved' THEN 0 ELSE alerts.acked_at END,
 acked_by = CASE WHEN excluded.state = 'resolved' THEN '' ELSE alerts.acked_by END`,
		a.ID, a.Namespace, a.Project, a.Cluster, a.ClusterID, a.Node, a.Subject, a.Rule, a.Severity, a.State, a.Summary,
		ms(a.FirstSeen), ms(a.LastSeen), ms(a.FiredAt), ms(a.ResolvedAt), b2i(a.Flapping), ms(a.LastNotified), ms(a.UpdatedAt))
	if err != nil {
		return fmt.Errorf("save alert %s: %w", a.ID, err)
	}
	return nil
}

// DeleteAlert removes an alert row (one that was only ever pending).
func (s *Store) DeleteAlert(ctx context.Context, id string) error {
	if _, err := s.exec(ctx, `DELETE FROM alerts WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete alert %s: %w", id, err)
	}
	return nil
}

// ListAlerts lists a namespace's alerts (every namespace when
// f.Namespace is empty), most recently changed first.
func (s *Store) ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error) {
	query := `SELECT ` + alertCols + ` FROM alerts WHERE 1 = 1`
	var args []any
	for _, c := range []struct{ col, v string }{{"namespace", f.Namespace}, {"state", f.State}, {"severity", f.Severity}, {"cluster", f.Cluster}} {
		if c.v != "" {
			query += ` AND ` + c.col + ` = ?`
			args = append(args, c.v)
		}
	}
	query += ` ORDER BY updated_at DESC, id LIMIT ?`
	args = append(args, limit(f.Limit, 100, 100000))
	rows, err := s.readQuery(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		a, err := scanAlert(rows)
		if err != nil {
			return nil, fmt.Errorf("list alerts: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// GetAlert returns alert id of namespace ns (ErrNotFound).
func (s *Store) GetAlert(ctx context.Context, ns, id string) (Alert, error) {
	a, err := scanAlert(s.readRow(ctx, `SELECT `+alertCols+` FROM alerts WHERE namespace = ? AND id = ?`, ns, id))
	if err != nil {
		return Alert{}, notFound("alert "+id, err)
	}
	return a, nil
}

// AckAlert acknowledges a pending or firing alert (by: who, at: when).
// Errors: ErrNotFound; ErrConflict when the alert is resolved.
func (s *Store) AckAlert(ctx context.Context, ns, id, by string, at time.Time) (Alert, error) {
	res, err := s.exec(ctx, `UPDATE alerts SET acked_at = ?, acked_by = ? WHERE namespace = ? AND id = ? AND state <> 'resolved'`, ms(at), by, ns, id)
	if err != nil {
		return Alert{}, fmt.Errorf("ack alert %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		a, err := s.GetAlert(ctx, ns, id)
		if err != nil {
			return Alert{}, err
		}
		return a, fmt.Errorf("ack alert %s: it is %s: %w", id, a.State, ErrConflict)
	}
	return s.GetAlert(ctx, ns, id)
}

// CreateSilence records a silence (ErrConflict on a duplicate id).
func (s *Store) CreateSilence(ctx context.Context, si Silence) error {
	_, err := s.exec(ctx, `INSERT INTO alert_silences (id, namespace, alert_id, until_ms, reason, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		si.ID, si.Namespace, si.AlertID, ms(si.Until), si.Reason, si.CreatedBy, ms(si.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("silence %s: %w", si.ID, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create silence: %w", err)
	}
	return nil
}

// ActiveSilences returns, per alert id, the silence ending last among
// those still active at now, of namespace ns ("" every namespace).
func (s *Store) ActiveSilences(ctx context.Context, ns string, now time.Time) (map[string]Silence, error) {
	query := `SELECT id, namespace, alert_id, until_ms, reason, created_by, created_at FROM alert_silences WHERE until_ms > ?`
	args := []any{ms(now)}
	if ns != "" {
		query += ` AND namespace = ?`
		args = append(args, ns)
	}
	rows, err := s.readQuery(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("active silences: %w", err)
	}
	defer rows.Close()
	out := map[string]Silence{}
	for rows.Next() {
		var si Silence
		var until, created int64
		if err := rows.Scan(&si.ID, &si.Namespace, &si.AlertID, &until, &si.Reason, &si.CreatedBy, &created); err != nil {
			return nil, fmt.Errorf("active silences: %w", err)
		}
		si.Until, si.CreatedAt = fromMS(until), fromMS(created)
		if cur, ok := out[si.AlertID]; !ok || si.Until.After(cur.Until) {
			out[si.AlertID] = si
		}
	}
	return out, rows.Err()
}

// PruneAlertHistory deletes what is older than cutoff: alerts resolved
// before it, silences that ended before it and deliveries queued before
// it. It returns how many rows went.
func (s *Store) PruneAlertHistory(ctx context.Context, cutoff time.Time) (int64, error) {
	var total int64
	for _, q := range []string{
		`DELETE FROM alerts WHERE state = 'resolved' AND resolved_at < ?`,
		`DELETE FROM alert_silences WHERE until_ms < ?`,
		`DELETE FROM notification_deliveries WHERE created_at < ?`,
	} {
		res, err := s.exec(ctx, q, ms(cutoff))
		if err != nil {
			return total, fmt.Errorf("prune alert history: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

// PutAlertThresholds sets a cluster's alert threshold overrides (body: a
// proto.AlertThresholds as JSON).
func (s *Store) PutAlertThresholds(ctx context.Context, clusterID string, body json.RawMessage) error {
	_, err := s.exec(ctx, `INSERT INTO alert_thresholds (cluster_id, body, updated_at) VALUES (?, ?, ?)
 ON CONFLICT (cluster_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at`, clusterID, string(body), ms(time.Now()))
	if err != nil {
		return fmt.Errorf("put alert thresholds of %s: %w", clusterID, err)
	}
	return nil
}

// GetAlertThresholds returns a cluster's overrides (ErrNotFound: none).
func (s *Store) GetAlertThresholds(ctx context.Context, clusterID string) (json.RawMessage, error) {
	var body string
	if err := s.readRow(ctx, `SELECT body FROM alert_thresholds WHERE cluster_id = ?`, clusterID).Scan(&body); err != nil {
		return nil, notFound("alert thresholds of "+clusterID, err)
	}
	return json.RawMessage(body), nil
}

// AllAlertThresholds returns every cluster's overrides, by cluster id.
func (s *Store) AllAlertThresholds(ctx context.Context) (map[string]json.RawMessage, error) {
	rows, err := s.readQuery(ctx, `SELECT cluster_id, body FROM alert_thresholds`)
	if err != nil {
		return nil, fmt.Errorf("alert thresholds: %w", err)
	}
	defer rows.Close()
	out := map[string]json.RawMessage{}
	for rows.Next() {
		var id, body string
		if err := rows.Scan(&id, &body); err != nil {
			return nil, fmt.Errorf("alert thresholds: %w", err)
		}
		out[id] = json.RawMessage(body)
	}
	return out, rows.Err()
}

const channelCols = `namespace, name, kind, url, secret, binding, operation, created_at`

func scanChannel(sc interface{ Scan(...any) error }) (Channel, error) {
	var c Channel
	var created int64
	err := sc.Scan(&c.Namespace, &c.Name, &c.Kind, &c.URL, &c.Secret, &c.Binding, &c.Operation, &created)
	c.CreatedAt = fromMS(created)
	return c, err
}

// CreateChannel adds a notification channel. Errors: ErrConflict when the
// namespace has one of that name.
func (s *Store) CreateChannel(ctx context.Context, c Channel) error {
	_, err := s.exec(ctx, `INSERT INTO notification_channels (`+channelCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Namespace, c.Name, c.Kind, c.URL, c.Secret, c.Binding, c.Operation, ms(c.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("notification channel %s: %w", c.Name, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create notification channel: %w", err)
	}
	return nil
}

// ListChannels lists a namespace's channels by name.
func (s *Store) ListChannels(ctx context.Context, ns string) ([]Channel, error) {
	rows, err := s.readQuery(ctx, `SELECT `+channelCols+` FROM notification_channels WHERE namespace = ? ORDER BY name`, ns)
	if err != nil {
		return nil, fmt.Errorf("list notification channels: %w", err)
	}
	defer rows.Close()
	var out []Channel
	for rows.Next() {
		c, err := scanChannel(rows)
		if err != nil {
			return nil, fmt.Errorf("list notification channels: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// GetChannel returns one channel (ErrNotFound).
func (s *Store) GetChannel(ctx context.Context, ns, name string) (Channel, error) {
	c, err := scanChannel(s.readRow(ctx, `SELECT `+channelCols+` FROM notification_channels WHERE namespace = ? AND name = ?`, ns, name))
	if err != nil {
		return Channel{}, notFound("notification channel "+name, err)
	}
	return c, nil
}

// DeleteChannel removes a channel and its delivery log (ErrNotFound).
func (s *Store) DeleteChannel(ctx context.Context, ns, name string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete notification channel: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, s.q(`DELETE FROM notification_channels WHERE namespace = ? AND name = ?`), ns, name)
	if err != nil {
		return fmt.Errorf("delete notification channel: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("notification channel %s: %w", name, ErrNotFound)
	}
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM notification_deliveries WHERE namespace = ? AND channel = ?`), ns, name); err != nil {
		return fmt.Errorf("delete notification channel: %w", err)
	}
	return tx.Commit()
}

// CreateDelivery records a delivery (normally pending, attempts 0).
func (s *Store) CreateDelivery(ctx context.Context, d Delivery) error {
	_, err := s.exec(ctx, `INSERT INTO notification_deliveries (id, namespace, channel, alert_id, transition, status, attempts, last_error, created_at, updated_at)
 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, d.ID, d.Namespace, d.Channel, d.AlertID, d.Transition, d.Status, d.Attempts, d.LastError, ms(d.CreatedAt), ms(d.UpdatedAt))
	if err != nil {
		return fmt.Errorf("create delivery: %w", err)
	}
	return nil
}

// UpdateDelivery records an attempt's outcome.
func (s *Store) UpdateDelivery(ctx context.Context, id, status string, attempts int, lastError string, at time.Time) error {
	_, err := s.exec(ctx, `UPDATE notification_deliveries SET status = ?, attempts = ?, last_error = ?, updated_at = ? WHERE id = ?`,
		status, attempts, lastError, ms(at), id)
	if err != nil {
		return fmt.Errorf("update delivery %s: %w", id, err)
	}
	return nil
}

// ListDeliveries lists a channel's deliveries, newest first (n: 1..1000,
// default 100).
func (s *Store) ListDeliveries(ctx context.Context, ns, channel string, n int) ([]Delivery, error) {
	rows, err := s.readQuery(ctx, `SELECT id, namespace, channel, alert_id, transition, status, attempts, last_error, created_at, updated_at
 FROM notification_deliveries WHERE namespace = ? AND channel = ? ORDER BY created_at DESC, id DESC LIMIT ?`, ns, channel, limit(n, 100, 1000))
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		var d Delivery
		var created, updated int64
		if err := rows.Scan(&d.ID, &d.Namespace, &d.Channel, &d.AlertID, &d.Transition, &d.Status, &d.Attempts, &d.LastError, &created, &updated); err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		d.CreatedAt, d.UpdatedAt = fromMS(created), fromMS(updated)
		out = append(out, d)
	}
	return out, rows.Err()
}

// deleteNamespaceAlerts removes a namespace's alerts, silences, channels
// and deliveries (DeleteNamespace).
func deleteNamespaceAlerts(ctx context.Context, tx *sql.Tx, q func(string) string, ns string) error {
	for _, t := range []string{"alerts", "alert_silences", "notification_channels", "notification_deliveries"} {
		if _, err := tx.ExecContext(ctx, q(`DELETE FROM `+t+` WHERE namespace = ?`), ns); err != nil {
			return err
		}
	}
	return nil
}

// LastEventSeq returns the store-wide seq of the newest event (0: none),
// where a reader of every namespace's events (ListEvents without a
// namespace) starts.
func (s *Store) LastEventSeq(ctx context.Context) (int64, error) {
	var n int64
	if err := s.readRow(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("last event seq: %w", err)
	}
	return n, nil
}

// NodesByCluster returns every cluster's nodes in one query, by cluster
// id, each list by name (the alert engine reads them every second).
func (s *Store) NodesByCluster(ctx context.Context) (map[string][]Node, error) {
	rows, err := s.readQuery(ctx, `SELECT `+nodeCols+` FROM nodes ORDER BY cluster_id, name`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	out := map[string][]Node{}
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		out[n.ClusterID] = append(out[n.ClusterID], n)
	}
	return out, rows.Err()
}
