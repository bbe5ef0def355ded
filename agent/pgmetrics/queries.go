package pgmetrics

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// Every query returns numbers as float8 and labels as non-null text, so
// that scanning cannot fail on a NULL or an unexpected type.

const qDatabase = `SELECT datid::text, datname, numbackends::float8,
	xact_commit::float8, xact_rollback::float8, blks_read::float8, blks_hit::float8,
	tup_returned::float8, tup_fetched::float8, tup_inserted::float8, tup_updated::float8, tup_deleted::float8,
	conflicts::float8, temp_files::float8, temp_bytes::float8, deadlocks::float8,
	blk_read_time::float8, blk_write_time::float8
FROM pg_stat_database WHERE datname IS NOT NULL`

func (c *Collector) collectDatabase(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) error {
	rows, err := conn.Query(ctx, qDatabase)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, name string
		var backends float64
		vals := make([]float64, len(descDBCounters))
		dest := []any{&id, &name, &backends}
		for i := range vals {
			dest = append(dest, &vals[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		*out = append(*out, gauge(descDBNumbackends, backends, id, name))
		for i, col := range descDBCounters {
			*out = append(*out, counter(col.d, vals[i], id, name))
		}
	}
	return rows.Err()
}

func (c *Collector) collectDatabaseSize(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) error {
	rows, err := conn.Query(ctx, `SELECT datname, pg_database_size(oid)::float8 FROM pg_database WHERE datallowconn`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var size float64
		if err := rows.Scan(&name, &size); err != nil {
			return err
		}
		*out = append(*out, gauge(descDBSize, size, name))
	}
	return rows.Err()
}

// qActivity reports every database × the states of pg_stat_activity, with
// 0 for combinations without backends (as postgres_exporter), so that a
// series does not vanish when its last backend leaves. The metrics
// session itself is left out.
const qActivity = `SELECT d.datname, s.state, coalesce(a.n, 0)::float8, coalesce(a.max_tx, 0)::float8
FROM pg_database d
CROSS JOIN (VALUES ('active'), ('idle'), ('idle in transaction'), ('idle in transaction (aborted)'),
	('fastpath function call'), ('disabled')) AS s(state)
LEFT JOIN (
	SELECT datname, state, count(*) AS n,
		extract(epoch FROM max(clock_timestamp() - xact_start)) AS max_tx
	FROM pg_stat_activity
	WHERE datname IS NOT NULL AND state IS NOT NULL AND pid <> pg_backend_pid()
	GROUP BY datname, state
) a ON a.datname = d.datname AND a.state = s.state
WHERE d.datallowconn`

const qOldestXmin = `SELECT coalesce(age(backend_xmin), 0)::float8,
	coalesce(extract(epoch FROM clock_timestamp() - xact_start), 0)::float8
FROM pg_stat_activity
WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()
ORDER BY age(backend_xmin) DESC LIMIT 1`

func (c *Collector) collectActivity(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) error {
	rows, err := conn.Query(ctx, qActivity)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var db, state string
		var n, maxTx float64
		if err := rows.Scan(&db, &state, &n, &maxTx); err != nil {
			return err
		}
		*out = append(*out, gauge(descActivityCount, n, db, state), gauge(descActivityMaxTx, maxTx, db, state))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var age, secs float64
	err = conn.QueryRow(ctx, qOldestXmin).Scan(&age, &secs)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	*out = append(*out, gauge(descOldestXminAge, age), gauge(descOldestXminSecs, secs))
	return nil
}

// qLocks reports every database × lock mode, 0 where none (as
// postgres_exporter), and the number of locks awaited on the server.
const qLocks = `SELECT d.datname, m.mode, coalesce(l.n, 0)::float8
FROM pg_database d
CROSS JOIN (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'), ('shareupdateexclusivelock'),
	('sharelock'), ('sharerowexclusivelock'), ('exclusivelock'), ('accessexclusivelock'),
	('sireadlock')) AS m(mode)
LEFT JOIN (
	SELECT database, lower(mode) AS mode, count(*) AS n FROM pg_locks
	WHERE database IS NOT NULL GROUP BY database, lower(mode)
) l ON l.database = d.oid AND l.mode = m.mode
WHERE d.datallowconn`

func (c *Collector) collectLocks(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) error {
	rows, err := conn.Query(ctx, qLocks)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var db, mode string
		var n float64
		if err := rows.Scan(&db, &mode, &n); err != nil {
			return err
		}
		*out = append(*out, gauge(descLocksCount, n, db, mode))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var waiting float64
	if err := conn.QueryRow(ctx, `SELECT count(*)::float8 FROM pg_locks WHERE NOT granted`).Scan(&waiting); err != nil {
		return err
	}
	*out = append(*out, gauge(descLocksWaiting, waiting))
	return nil
}

// qRecovery: whether the server is a replica, its WAL position, and on a
// replica the replay lag as postgres_exporter computes it (0 when replay
// has caught up with what was received) and the bytes not yet replayed.
const qRecovery = `SELECT pg_is_in_recovery(),
	(CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_replay_lsn(), '0/0') ELSE pg_current_wal_lsn() END - '0/0')::float8,
	CASE WHEN NOT pg_is_in_recovery() THEN 0
		WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
		ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8,
	CASE WHEN NOT pg_is_in_recovery() THEN 0
		ELSE greatest(coalesce(pg_last_wal_receive_lsn() - pg_last_wal_replay_lsn(), 0), 0) END::float8`

// qReplication: one row per standby connected to this primary. Lags are
// NULL in PostgreSQL when the standby is idle and caught up: 0 here.
const qReplication = `SELECT coalesce(application_name, ''), coalesce(client_addr::text, ''), coalesce(state, ''), coalesce(sync_state, ''),
	(pg_current_wal_lsn() - '0/0')::float8,
	coalesce(greatest(pg_current_wal_lsn() - write_lsn, 0), 0)::float8,
	coalesce(greatest(pg_current_wal_lsn() - flush_lsn, 0), 0)::float8,
	coalesce(greatest(pg_current_wal_lsn() - replay_lsn, 0), 0)::float8,
	coalesce(extract(epoch FROM write_lag), 0)::float8,
	coalesce(extract(epoch FROM flush_lag), 0)::float8,
	coalesce(extract(epoch FROM replay_lag), 0)::float8
FROM pg_stat_replication`

func (c *Collector) collectReplication(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) error {
	var replica bool
	var lsn, lag, replayBytes float64
	if err := conn.QueryRow(ctx, qRecovery).Scan(&replica, &lsn, &lag, &replayBytes); err != nil {
		return err
	}
	*out = append(*out, gauge(descWALLSN, lsn), gauge(descIsReplica, b2f(replica)),
		gauge(descReplicaLag, lag), gauge(descReplicaReplayBytes, replayBytes))
	if replica {
		return nil
	}
	rows, err := conn.Query(ctx, qReplication)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var app, addr, state, sync string
		var cur, wb, fb, rb, ws, fs, rs float64
		if err := rows.Scan(&app, &addr, &state, &sync, &cur, &wb, &fb, &rb, &ws, &fs, &rs); err != nil {
			return err
		}
		l := []string{app, addr, state, sync}
		*out = append(*out,
			gauge(descReplCurrentLSN, cur, l...), gauge(descReplLSNDiff, rb, l...),
			gauge(descReplLagBytes["write"], wb, l...), gauge(descReplLagBytes["flush"], fb, l...), gauge(descReplLagBytes["replay"], rb, l...),
			gauge(descReplLagSeconds["write"], ws, l...), gauge(descReplLagSeconds["flush"], fs, l...), gauge(descReplLagSeconds["replay"], rs, l...))
	}
	return rows.Err()
}

const qWALReceiver = `SELECT coalesce(sender_host, ''), coalesce(slot_name, ''), coalesce(status, ''),
	coalesce(flushed_lsn - '0/0', 0)::float8, coalesce(latest_end_lsn - '0/0', 0)::float8,
	coalesce(received_tli, 0)::float8, coalesce(extract(epoch FROM last_msg_receipt_time), 0)::float8
FROM pg_stat_wal_receiver`

func (c *Collector) collectWALReceiver(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) error {
	rows, err := conn.Query(ctx, qWALReceiver)
	if err != nil {
		return err
	}
	defer rows.Close()
	streaming := false
	for rows.Next() {
		var host, slot, status string
		var flushed, latest, tli, lastMsg float64
		if err := rows.Scan(&host, &slot, &status, &flushed, &latest, &tli, &lastMsg); err != nil {
			return err
		}
		streaming = streaming || status == "streaming"
		l := []string{host, slot, status}
		*out = append(*out, gauge(descWALRFlushedLSN, flushed, l...), gauge(descWALRLatestEnd, latest, l...),
			gauge(descWALRReceivedTLI, tli, l...), gauge(descWALRLastMsg, lastMsg, l...))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	*out = append(*out, gauge(descWALRStreaming, b2f(streaming)))
	return nil
}

// Before PostgreSQL 17 everything is in pg_stat_bgwriter; from 17 the
// checkpoint columns moved to pg_stat_checkpointer and the backend columns
// are gone (NULL here, left out).
const (
	qBgwriter = `SELECT checkpoints_timed::float8, checkpoints_req::float8, checkpoint_write_time::float8,
	checkpoint_sync_time::float8, buffers_checkpoint::float8, buffers_clean::float8, maxwritten_clean::float8,
	buffers_backend::float8, buffers_backend_fsync::float8, buffers_alloc::float8
FROM pg_stat_bgwriter`
	qBgwriter17 = `SELECT c.num_timed::float8, c.num_requested::float8, c.write_time::float8,
	c.sync_time::float8, c.buffers_written::float8, b.buffers_clean::float8, b.maxwritten_clean::float8,
	NULL::float8, NULL::float8, b.buffers_alloc::float8
FROM pg_stat_bgwriter b, pg_stat_checkpointer c`
)

func (c *Collector) collectBgwriter(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) error {
	var version int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return err
	}
	q := qBgwriter
	if version >= 170000 {
		q = qBgwriter17
	}
	vals := make([]*float64, len(bgwCols))
	dest := make([]any, len(bgwCols))
	for i := range vals {
		dest[i] = &vals[i]
	}
	if err := conn.QueryRow(ctx, q).Scan(dest...); err != nil {
		return fmt.Errorf("bgwriter: %w", err)
	}
	for i, col := range bgwCols {
		if vals[i] != nil {
			*out = append(*out, counter(col.d, *vals[i]))
		}
	}
	return nil
}

func (c *Collector) collectArchiver(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) error {
	var archived, failed float64
	var age *float64
	err := conn.QueryRow(ctx, `SELECT archived_count::float8, failed_count::float8,
	extract(epoch FROM now() - last_archived_time)::float8 FROM pg_stat_archiver`).Scan(&archived, &failed, &age)
	if err != nil {
		return err
	}
	*out = append(*out, counter(descArchived, archived), counter(descArchiveFailed, failed))
	if age != nil {
		*out = append(*out, gauge(descLastArchiveAge, *age))
	}
	return nil
}

// TopStatements is how many statements pg_stat_statements_* report: those
// with the largest total execution time, as postgres_exporter's default.
const TopStatements = 100

// qStatementsSchema finds the schema pg_stat_statements is installed in,
// in the database the metrics connection uses (postgres); no row if the
// extension is not created there.
const qStatementsSchema = `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'`

// qStatements sums over toplevel (and any other duplicate dimension) so
// that each user × database × queryid is one series.
const qStatements = `SELECT coalesce(pg_get_userbyid(s.userid), ''), coalesce(d.datname, ''), coalesce(s.queryid::text, ''),
	sum(s.calls)::float8, (sum(s.total_exec_time) / 1000)::float8, sum(s.rows)::float8
FROM %s s LEFT JOIN pg_database d ON d.oid = s.dbid
GROUP BY 1, 2, 3
ORDER BY 5 DESC
LIMIT %d`

func (c *Collector) collectStatements(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) error {
	var schema string
	err := conn.QueryRow(ctx, qStatementsSchema).Scan(&schema)
	if errors.Is(err, pgx.ErrNoRows) {
		*out = append(*out, gauge(descStatementsEnabled, 0))
		return nil
	}
	if err != nil {
		return err
	}
	view := pgx.Identifier{schema, "pg_stat_statements"}.Sanitize()
	rows, err := conn.Query(ctx, fmt.Sprintf(qStatements, view, TopStatements))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55000" {
		// Created but not in shared_preload_libraries: a configuration
		// choice, not a failing scrape.
		*out = append(*out, gauge(descStatementsEnabled, 0))
		return nil
	}
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var user, db, id string
		var calls, secs, nrows float64
		if err := rows.Scan(&user, &db, &id, &calls, &secs, &nrows); err != nil {
			return err
		}
		*out = append(*out, counter(descStmtCalls, calls, user, db, id),
			counter(descStmtSeconds, secs, user, db, id), counter(descStmtRows, nrows, user, db, id))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	*out = append(*out, gauge(descStatementsEnabled, 1))
	return nil
}
