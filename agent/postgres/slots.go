package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// Physical replication slots (see
// https://www.postgresql.org/docs/15/warm-standby.html#STREAMING-REPLICATION-SLOTS):
// the primary keeps one slot per member, so WAL a replica has not received
// yet is not removed while it is down or slow; max_slot_wal_keep_size
// (https://www.postgresql.org/docs/15/runtime-config-replication.html#GUC-MAX-SLOT-WAL-KEEP-SIZE)
// bounds what the slots may retain, so a dead replica cannot fill the
// primary's disk. A replica names its slot with primary_slot_name.

// SlotPrefix starts the name of every slot the agent manages. Slots without
// it (logical slots of an application, slots of a backup tool) are never
// created, changed or dropped by the agent.
const SlotPrefix = "dbpilot_"

// slotHashHex is how many hex digits of SHA-256 a hashed slot name carries
// (48 bits).
const slotHashHex = 12

// SlotName returns the physical replication slot name of node. PostgreSQL
// slot names may hold only lower-case letters, digits and underscores and
// be at most NAMEDATALEN-1 = 63 bytes long
// (https://www.postgresql.org/docs/15/warm-standby.html#STREAMING-REPLICATION-SLOTS-MANIPULATION).
// The mapping:
//
//   - a node name made only of [a-z0-9_] that fits (at most 55 bytes) is
//     kept verbatim: "node1" → "dbpilot_node1";
//   - any other name (with '-', '.', upper case, or longer) is lower-cased,
//     every other character becomes '_', the result is cut to 41 bytes and
//     followed by '_' and the first 12 hex digits of the SHA-256 of the
//     original name, after the prefix "dbpilot__" (two underscores):
//     "db-node-1" → "dbpilot__db_node_1_<12 hex>".
//
// Node names start with a letter or digit, so a verbatim name never starts
// with "dbpilot__": the two forms cannot collide. Verbatim names are
// injective; two hashed names collide only if their cut, sanitised forms
// and 48-bit hashes are equal. The result always satisfies [ValidSlotName].
func SlotName(node string) string {
	verbatim := node != "" && len(SlotPrefix)+len(node) <= 63
	for i := 0; verbatim && i < len(node); i++ {
		c := node[i]
		verbatim = 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' && i > 0
	}
	if verbatim {
		return SlotPrefix + node
	}
	var b strings.Builder
	for _, c := range []byte(strings.ToLower(node)) {
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	sum := sha256.Sum256([]byte(node))
	const hashed = SlotPrefix + "_"
	base := b.String()
	if max := 63 - len(hashed) - 1 - slotHashHex; len(base) > max {
		base = base[:max]
	}
	return hashed + base + "_" + hex.EncodeToString(sum[:])[:slotHashHex]
}

// ValidSlotName reports whether s is a valid replication slot name: 1-63
// bytes of lower-case letters, digits and underscores.
func ValidSlotName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// ManagedSlot reports whether the agent manages the slot called name (it
// starts with [SlotPrefix]).
func ManagedSlot(name string) bool { return strings.HasPrefix(name, SlotPrefix) }

// ReplicationSlot is one row of pg_replication_slots, see
// https://www.postgresql.org/docs/15/view-pg-replication-slots.html.
type ReplicationSlot struct {
	// Name is slot_name.
	Name string
	// Type is slot_type: "physical" or "logical".
	Type string
	// Temporary: the slot lives only as long as its session (pg_basebackup's).
	Temporary bool
	// Active: a WAL sender is streaming from the slot now.
	Active bool
	// RestartLSN is the oldest WAL position the slot retains; 0 when none
	// (never used without immediately_reserve, or invalidated).
	RestartLSN LSN
	// WALStatus is wal_status: "reserved" or "extended" (its WAL is all
	// there), "unreserved" (beyond max_slot_wal_keep_size: removed at the
	// next checkpoint), "lost" (already removed; the slot no longer
	// retains anything); "" when unknown.
	WALStatus string
	// SafeWALSize is safe_wal_size in bytes: how much more WAL may be
	// written before the slot is at risk of becoming "lost"; -1 when
	// unbounded (max_slot_wal_keep_size = -1) or unknown.
	SafeWALSize int64
	// XminAge is age(xmin) in transactions: how far the slot holds back
	// VACUUM's horizon (set by a standby's hot_standby_feedback, and kept
	// while it is disconnected); -1 when the slot has no xmin.
	XminAge int64
}

// SlotState is the replication slots of the local server.
type SlotState struct {
	// InRecovery: the server is a standby.
	InRecovery bool
	// WriteLSN is pg_current_wal_lsn() on a primary, 0 on a standby.
	WriteLSN LSN
	// Slots are every slot of the server, sorted by name.
	Slots []ReplicationSlot
}

// RetainedBytes is how much WAL s holds back on a server at position
// write: write - restart_lsn, or -1 when either is unknown.
func (s ReplicationSlot) RetainedBytes(write LSN) int64 {
	if s.RestartLSN == 0 || write == 0 {
		return -1
	}
	if write < s.RestartLSN {
		return 0
	}
	return int64(write - s.RestartLSN)
}

// ReplicationSlots reads pg_replication_slots from the local server.
//
// Errors: ErrNotRunning; connection or query errors.
func (p *Instance) ReplicationSlots(ctx context.Context) (SlotState, error) {
	var st SlotState
	conn, release, err := p.localConn(ctx)
	if err != nil {
		return st, fmt.Errorf("replication slots: %w", err)
	}
	defer release()
	if st, err = readSlots(ctx, conn); err != nil {
		return st, fmt.Errorf("replication slots: %w", err)
	}
	return st, nil
}

func readSlots(ctx context.Context, conn *pgx.Conn) (SlotState, error) {
	var st SlotState
	var write *string
	if err := conn.QueryRow(ctx,
		"SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END",
	).Scan(&st.InRecovery, &write); err != nil {
		return st, err
	}
	var err error
	if st.WriteLSN, err = parseNullLSN(write); err != nil {
		return st, err
	}
	rows, err := conn.Query(ctx, `SELECT slot_name::text, slot_type, temporary, active, restart_lsn::text,
		coalesce(wal_status, ''), coalesce(safe_wal_size, -1), coalesce(age(xmin), -1)::int8
		FROM pg_replication_slots ORDER BY slot_name`)
	if err != nil {
		return st, fmt.Errorf("pg_replication_slots: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s ReplicationSlot
		var restart *string
		if err := rows.Scan(&s.Name, &s.Type, &s.Temporary, &s.Active, &restart, &s.WALStatus, &s.SafeWALSize, &s.XminAge); err != nil {
			return st, fmt.Errorf("pg_replication_slots: %w", err)
		}
		if s.RestartLSN, err = parseNullLSN(restart); err != nil {
			return st, err
		}
		st.Slots = append(st.Slots, s)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("pg_replication_slots: %w", err)
	}
	return st, nil
}

// SlotChanges is what [Instance.ApplySlots] did.
type SlotChanges struct {
	// Created are the slots created; Dropped the slots dropped.
	Created, Dropped []string
}

// ApplySlots drops, then creates, managed physical replication slots on the
// local primary, over one connection. Every name must satisfy
// [ValidSlotName] and [ManagedSlot].
//
//   - Drop runs pg_drop_replication_slot only while the slot is inactive (a
//     slot a WAL sender uses is never dropped: it is skipped, not an
//     error); a slot that no longer exists is skipped too.
//   - Create runs pg_create_physical_replication_slot(name, true):
//     immediately_reserve, so the slot retains WAL from the last
//     checkpoint's redo position on, before any replica has used it. A
//     slot that already exists is not an error (a replica may have created
//     it a moment earlier, see [Instance.Start]).
//
// A name in both lists is recreated (a slot whose WAL was lost). Each
// statement's failure is collected; the others are still tried.
//
// Errors: invalid names; ErrNotRunning; ErrWrongRole if the server is in
// recovery (slots are kept by the primary only); the joined failures.
func (p *Instance) ApplySlots(ctx context.Context, create, drop []string) (SlotChanges, error) {
	var done SlotChanges
	for _, n := range append(append([]string(nil), create...), drop...) {
		if !ValidSlotName(n) || !ManagedSlot(n) {
			return done, fmt.Errorf("apply slots: %q is not a managed slot name", n)
		}
	}
	conn, release, err := p.localConn(ctx)
	if err != nil {
		return done, fmt.Errorf("apply slots: %w", err)
	}
	defer release()
	rec, err := inRecovery(ctx, conn)
	if err != nil {
		return done, fmt.Errorf("apply slots: %w", err)
	}
	if rec {
		return done, fmt.Errorf("apply slots: server is in recovery: %w", ErrWrongRole)
	}
	var errs []error
	for _, n := range drop {
		var dropped bool
		err := conn.QueryRow(ctx, `SELECT count(pg_drop_replication_slot(slot_name)) > 0
			FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'physical' AND NOT active`, n).Scan(&dropped)
		switch {
		case isSQLState(err, "55006"): // object_in_use: became active meanwhile
			p.log.Info("replication slot in use; not dropped", zap.String("slot", n))
		case err != nil:
			errs = append(errs, fmt.Errorf("drop slot %s: %w", n, err))
		case dropped:
			done.Dropped = append(done.Dropped, n)
			p.log.Info("replication slot dropped", zap.String("slot", n))
		}
	}
	for _, n := range create {
		created, err := createSlot(ctx, conn, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if created {
			done.Created = append(done.Created, n)
			p.log.Info("replication slot created", zap.String("slot", n))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return done, fmt.Errorf("apply slots: %w", err)
	}
	return done, nil
}

// createSlot creates the physical slot name (immediately_reserve) unless it
// exists; created reports whether this call made it.
func createSlot(ctx context.Context, conn *pgx.Conn, name string) (created bool, err error) {
	_, err = conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true)", name)
	switch {
	case isSQLState(err, "42710"): // duplicate_object
		return false, nil
	case err != nil:
		return false, fmt.Errorf("create slot %s: %w", name, err)
	}
	return true, nil
}

func isSQLState(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

// upstreamSlotTimeout bounds ensureUpstreamSlot, so an unreachable upstream
// delays a start or a re-point by at most this much.
const upstreamSlotTimeout = 3 * time.Second

// ensureUpstreamSlot creates this node's slot ([SlotName] of NodeName) on
// the upstream up if it does not exist yet, so the WAL receiver finds it on
// its first connection (otherwise it fails with "replication slot does not
// exist" and retries every wal_retrieve_retry_interval, 500 ms as rendered,
// until the primary's agent has created it). Best effort: a failure is
// logged and left to the primary's agent, which keeps a slot for every
// member. A standby upstream (a new leader not promoted yet) accepts the
// slot too; it survives the promotion.
func (p *Instance) ensureUpstreamSlot(ctx context.Context, up Upstream) {
	name := SlotName(p.cfg.NodeName)
	ctx, cancel := context.WithTimeout(ctx, upstreamSlotTimeout)
	defer cancel()
	conn, err := p.connectTo(ctx, up.Host, up.Port)
	if err == nil {
		defer closeConn(ctx, conn)
		var created bool
		if created, err = createSlot(ctx, conn, name); err == nil && created {
			p.log.Info("replication slot created on the upstream", zap.String("slot", name), zap.String("upstream", up.Name))
		}
	}
	if err != nil {
		p.log.Warn("cannot ensure the replication slot on the upstream; its agent will create it",
			zap.String("slot", name), zap.String("upstream", up.Name), zap.Error(err))
	}
}
