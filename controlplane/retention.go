package controlplane

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// Default event retention (server config event_retention and
// state_event_retention).
const (
	// DefaultEventRetention keeps role changes, failovers, fencing,
	// handler failures and backup events for 30 days.
	DefaultEventRetention = 30 * 24 * time.Hour
	// DefaultStateEventRetention keeps member state_changed events, the
	// bulk of the history (one per member per health or lag change), for
	// 2 days.
	DefaultStateEventRetention = 48 * time.Hour
	// DefaultAuditRetention keeps audit log entries for 90 days (server
	// config audit_retention).
	DefaultAuditRetention = 90 * 24 * time.Hour
	// pruneChunk is how many events one delete transaction removes.
	pruneChunk = 5000
)

// EventRetention says how long the store keeps the event history. The
// projection (clusters, nodes, backups) is not affected: only rows of the
// events table older than the cut-off go. A zero duration keeps those
// events forever.
type EventRetention struct {
	// Events applies to every type except member state_changed.
	Events time.Duration
	// StateEvents applies to member state_changed events.
	StateEvents time.Duration
	// Audit applies to audit log entries (by their time); zero keeps them
	// forever.
	Audit time.Duration
}

// PruneEvents deletes the events older than r allows (by their time
// attribute), in chunks of pruneChunk, and returns how many went. Errors:
// the store's; what was deleted before an error stays deleted.
func PruneEvents(ctx context.Context, st *store.Store, r EventRetention, now time.Time) (int64, error) {
	var total int64
	state := []string{proto.TypeMemberState}
	for _, pass := range []struct {
		keep        time.Duration
		types, skip []string
	}{
		{r.StateEvents, state, nil},
		{r.Events, nil, state},
	} {
		if pass.keep <= 0 {
			continue
		}
		for {
			n, err := st.PruneEvents(ctx, now.Add(-pass.keep), pass.types, pass.skip, pruneChunk)
			total += n
			if err != nil {
				return total, err
			}
			if n < pruneChunk {
				break
			}
		}
	}
	return total, nil
}

// PruneAudit deletes the audit entries older than r.Audit (none when it
// is zero), in chunks of pruneChunk, and returns how many went. Errors:
// the store's; what was deleted before an error stays deleted.
func PruneAudit(ctx context.Context, st *store.Store, r EventRetention, now time.Time) (int64, error) {
	if r.Audit <= 0 {
		return 0, nil
	}
	var total int64
	for {
		n, err := st.PruneAudit(ctx, now.Add(-r.Audit), pruneChunk)
		total += n
		if err != nil || n < pruneChunk {
			return total, err
		}
	}
}

// RunEventPruner prunes the event history, the alert history (resolved
// alerts, ended silences, deliveries: event retention) and the audit log
// every interval until ctx ends, logging what it removed. Several server replicas may run it against one
// store: the deletes are idempotent.
func RunEventPruner(ctx context.Context, st *store.Store, r EventRetention, interval time.Duration, log *zap.Logger) {
	log = log.Named("retention")
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := PruneEvents(ctx, st, r, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("event pruning failed; retrying at the next interval", zap.Int64("deleted", n), zap.Error(err))
		case n > 0:
			log.Info("old events pruned", zap.Int64("deleted", n),
				zap.Duration("event_retention", r.Events), zap.Duration("state_event_retention", r.StateEvents))
		}
		if r.Events > 0 {
			// Resolved alerts, ended silences and old deliveries: the
			// same retention as the events recording them.
			n, err = st.PruneAlertHistory(ctx, time.Now().Add(-r.Events))
			switch {
			case err != nil && ctx.Err() == nil:
				log.Warn("alert history pruning failed; retrying at the next interval", zap.Error(err))
			case n > 0:
				log.Info("old alerts, silences and deliveries pruned", zap.Int64("deleted", n), zap.Duration("event_retention", r.Events))
			}
		}
		n, err = PruneAudit(ctx, st, r, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("audit pruning failed; retrying at the next interval", zap.Int64("deleted", n), zap.Error(err))
		case n > 0:
			log.Info("old audit entries pruned", zap.Int64("deleted", n), zap.Duration("audit_retention", r.Audit))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
