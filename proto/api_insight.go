package proto

import "time"

// Query insight: the agent's GET /v1/statements and GET /v1/sessions, and
// the control plane's GET /v1/namespaces/{ns}/clusters/{cluster}/top and
// …/sessions, which relay the current primary's answer.

// Limits of the query insight endpoints.
const (
	// DefaultStatementsLimit is how many statements GET /v1/statements
	// (and …/top) return without ?limit=.
	DefaultStatementsLimit = 20
	// MaxStatementsLimit is the largest ?limit= accepted.
	MaxStatementsLimit = 100
	// MaxInsightQueryBytes bounds the query text of a statement or a
	// session, in bytes (cut on a UTF-8 character boundary).
	MaxInsightQueryBytes = 1024
	// MaxSessions bounds the sessions GET /v1/sessions returns.
	MaxSessions = 1000
)

// StatementStats is the answer of GET /v1/statements (OpenAPI schema
// StatementStats): the node's top statements from pg_stat_statements.
type StatementStats struct {
	// Node is the node that answered (the primary, through the control
	// plane).
	Node string `json:"node"`
	// CollectedAt is when the node read pg_stat_statements.
	CollectedAt time.Time `json:"collected_at"`
	// Items are the statements with the largest total execution time,
	// largest first, at most the limit asked for.
	Items []StatementStat `json:"items"`
}

// StatementStat is one normalised statement of pg_stat_statements, summed
// over its rows for the same user, database and query id (top-level and
// nested executions together). Statistics count since the last
// pg_stat_statements_reset() or server start.
type StatementStat struct {
	// QueryID is pg_stat_statements.queryid as decimal text ("" if none).
	QueryID string `json:"queryid"`
	// User and Database are the role and database that ran it.
	User     string `json:"user"`
	Database string `json:"database"`
	// Query is the normalised statement text (constants as $1, …), cut to
	// MaxInsightQueryBytes.
	Query string `json:"query"`
	// Calls is the number of executions.
	Calls int64 `json:"calls"`
	// TotalMS and MeanMS are the total and mean execution time, in
	// milliseconds.
	TotalMS float64 `json:"total_ms"`
	MeanMS  float64 `json:"mean_ms"`
	// Rows is the number of rows retrieved or affected.
	Rows int64 `json:"rows"`
}

// Sessions is the answer of GET /v1/sessions (OpenAPI schema Sessions):
// the node's client sessions from pg_stat_activity.
type Sessions struct {
	// Node is the node that answered.
	Node string `json:"node"`
	// CollectedAt is when the node read pg_stat_activity.
	CollectedAt time.Time `json:"collected_at"`
	// Items are the client backends (not the asking one), longest running
	// transaction or query first, at most MaxSessions.
	Items []Session `json:"items"`
}

// Session is one client backend of pg_stat_activity.
type Session struct {
	// PID is the backend's process id (pg_cancel_backend takes it).
	PID int32 `json:"pid"`
	// User, Database and Application are usename, datname and
	// application_name ("" when unset).
	User        string `json:"user"`
	Database    string `json:"database"`
	Application string `json:"application"`
	// ClientAddr is the client's IP address; "" for a Unix socket.
	ClientAddr string `json:"client_addr,omitempty"`
	// State is active, idle, idle in transaction, … ("" if unknown).
	State string `json:"state"`
	// WaitEvent is "type:event" (e.g. "Lock:transactionid") while the
	// backend waits; "" otherwise.
	WaitEvent string `json:"wait_event,omitempty"`
	// XactStart and QueryStart are when the current transaction and the
	// current (or, when idle, last) query started; omitted when none.
	XactStart  *time.Time `json:"xact_start,omitempty"`
	QueryStart *time.Time `json:"query_start,omitempty"`
	// DurationMS is how long the current transaction has run, else the
	// current query (state active); 0 for an idle session. Milliseconds.
	DurationMS int64 `json:"duration_ms"`
	// Query is the current or last query's text, cut to
	// MaxInsightQueryBytes.
	Query string `json:"query"`
}
