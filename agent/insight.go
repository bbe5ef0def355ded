package agent

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dbpilot/dbpilot/agent/httpapi"
	"github.com/dbpilot/dbpilot/agent/pgmetrics"
	"github.com/dbpilot/dbpilot/proto"
)

// insight answers the agent's query insight endpoints (httpapi.Insight)
// over the metrics connection (agent/postgres MetricsConn: one superuser
// session with a statement_timeout, never the HA loop's), so a request
// competes only with scrapes.
type insight struct {
	node string
	src  pgmetrics.Source
}

var _ httpapi.Insight = insight{}

// ErrStatementsUnavailable: pg_stat_statements cannot be read on this
// node; the wrapping error says why and what to do.
var ErrStatementsUnavailable = errors.New("pg_stat_statements not available")

// qInsightStatements returns the top statements, summed over the rows of
// the same user, database and query id (top-level and nested), the text
// cut in SQL first so that a huge statement is not sent whole.
const qInsightStatements = `SELECT coalesce(s.queryid::text, ''), coalesce(pg_get_userbyid(s.userid), ''), coalesce(d.datname, ''),
	left(coalesce(max(s.query), ''), %d), sum(s.calls)::int8, sum(s.total_exec_time)::float8, sum(s.rows)::int8
FROM %s s LEFT JOIN pg_database d ON d.oid = s.dbid
GROUP BY s.queryid, s.userid, d.datname
ORDER BY 6 DESC
LIMIT $1`

// Statements implements httpapi.Insight.
func (in insight) Statements(ctx context.Context, limit int) (proto.StatementStats, error) {
	out := proto.StatementStats{Node: in.node, Items: []proto.StatementStat{}}
	conn, release, err := in.src.MetricsConn(ctx)
	if err != nil {
		return out, fmt.Errorf("connect to the local PostgreSQL: %w", err)
	}
	defer release()
	var schema string
	err = conn.QueryRow(ctx, `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'`).Scan(&schema)
	if errors.Is(err, pgx.ErrNoRows) {
		return out, fmt.Errorf("%w: the extension is not created in database postgres (the agent creates it on the primary once writable; a replica gets it by replication)", ErrStatementsUnavailable)
	}
	if err != nil {
		return out, err
	}
	q := fmt.Sprintf(qInsightStatements, proto.MaxInsightQueryBytes, pgx.Identifier{schema, "pg_stat_statements"}.Sanitize())
	rows, err := conn.Query(ctx, q, limit)
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "55000" {
		return out, fmt.Errorf("%w: not in shared_preload_libraries yet (the agent adds it; restart PostgreSQL, e.g. with a switchover or dbpilot cluster restart)", ErrStatementsUnavailable)
	}
	if err != nil {
		return out, err
	}
	defer rows.Close()
	for rows.Next() {
		var s proto.StatementStat
		if err := rows.Scan(&s.QueryID, &s.User, &s.Database, &s.Query, &s.Calls, &s.TotalMS, &s.Rows); err != nil {
			return out, err
		}
		s.Query = truncateUTF8(s.Query, proto.MaxInsightQueryBytes)
		if s.Calls > 0 {
			s.MeanMS = s.TotalMS / float64(s.Calls)
		}
		out.Items = append(out.Items, s)
	}
	if err := rows.Err(); err != nil {
		return out, err
	}
	out.CollectedAt = time.Now().UTC()
	return out, nil
}

// qInsightSessions lists client backends but the asking one. The duration
// is the current transaction's, else the running query's, else 0 (idle).
const qInsightSessions = `SELECT pid, coalesce(usename, ''), coalesce(datname, ''), coalesce(application_name, ''),
	coalesce(host(client_addr), ''), coalesce(state, ''), coalesce(wait_event_type || ':' || wait_event, ''),
	xact_start, query_start,
	(extract(epoch FROM clock_timestamp() - CASE WHEN xact_start IS NOT NULL THEN xact_start
		WHEN state = 'active' THEN query_start END) * 1000)::int8,
	left(coalesce(query, ''), %d)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
ORDER BY 10 DESC NULLS LAST, pid
LIMIT %d`

// Sessions implements httpapi.Insight.
func (in insight) Sessions(ctx context.Context) (proto.Sessions, error) {
	out := proto.Sessions{Node: in.node, Items: []proto.Session{}}
	conn, release, err := in.src.MetricsConn(ctx)
	if err != nil {
		return out, fmt.Errorf("connect to the local PostgreSQL: %w", err)
	}
	defer release()
	rows, err := conn.Query(ctx, fmt.Sprintf(qInsightSessions, proto.MaxInsightQueryBytes, proto.MaxSessions))
	if err != nil {
		return out, err
	}
	defer rows.Close()
	for rows.Next() {
		var s proto.Session
		var dur *int64
		if err := rows.Scan(&s.PID, &s.User, &s.Database, &s.Application, &s.ClientAddr, &s.State, &s.WaitEvent,
			&s.XactStart, &s.QueryStart, &dur, &s.Query); err != nil {
			return out, err
		}
		if dur != nil {
			s.DurationMS = max(*dur, 0)
		}
		s.Query = truncateUTF8(s.Query, proto.MaxInsightQueryBytes)
		for _, t := range []*time.Time{s.XactStart, s.QueryStart} {
			if t != nil {
				*t = t.UTC()
			}
		}
		out.Items = append(out.Items, s)
	}
	if err := rows.Err(); err != nil {
		return out, err
	}
	out.CollectedAt = time.Now().UTC()
	return out, nil
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 {
		r, size := utf8.DecodeLastRuneInString(s)
		if r != utf8.RuneError || size > 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}
