// Package httpapi is the agent's HTTP endpoint for load balancers and
// monitoring, in the manner of Patroni's REST API: HAProxy or pgbouncer
// health checks route writes to the node answering 200 on /primary and
// reads to nodes answering 200 on /replica.
//
// Every answer is computed from one Source.Snapshot taken per request; the
// handler keeps no state of its own.
package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dbpilot/dbpilot/proto"
)

// Roles reported in NodeState.Role.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
	RoleUnknown = "unknown"
)

// Source reports the node's current view; implemented by the agent.
//
// Snapshot is called once per HTTP request, concurrently, and must not block
// on I/O. It must compute HoldsLease against the clock at the time of the
// call (lease deadline still ahead, as the HA loop proved it), not return a
// flag cached by the last HA cycle: a stuck HA loop must stop /primary from
// answering 200 once the lease can no longer be proven.
type Source interface {
	Snapshot() NodeState
}

// NodeState is the node's view, as returned in every JSON response body.
type NodeState struct {
	Node    string `json:"node"`
	Cluster string `json:"cluster"`
	// Role is RolePrimary, RoleReplica or RoleUnknown.
	Role string `json:"role"`
	// Healthy is the outcome of the last health cycle.
	Healthy bool `json:"healthy"`
	// Writable: PostgreSQL accepts writes (not in recovery).
	Writable bool `json:"writable"`
	// HoldsLease: this node holds the leader key and its lease is provably
	// valid now.
	HoldsLease bool `json:"holds_lease"`
	// Streaming: on a replica, the WAL receiver is streaming.
	Streaming bool `json:"streaming"`
	// LagBytes is a replica's lag behind the leader's last reported LSN, in
	// bytes; -1 when unknown.
	LagBytes int64 `json:"lag_bytes"`
	// LSN is the node's WAL position ("16/B374D848"); empty when unknown.
	LSN string `json:"lsn,omitempty"`
	// Timeline is the PostgreSQL timeline; 0 when unknown.
	Timeline uint32 `json:"timeline"`
	// Term is the cluster term the node last observed.
	Term uint64 `json:"term"`
	// Leader is the node holding the leader key, as last observed; empty
	// when none.
	Leader string `json:"leader,omitempty"`
	// State is the member state (running, starting, stopped, fenced,
	// unhealthy).
	State string `json:"state"`
	// UpdatedAt is when the HA loop last refreshed this view.
	UpdatedAt time.Time `json:"updated_at"`
}

// Option configures the handler.
type Option func(*handler)

// WithMaxAge makes every health and role check answer 503 when the
// snapshot's UpdatedAt is more than d old (or zero): a view the HA loop has
// stopped refreshing is not evidence of anything. d <= 0 disables the check
// (the default).
func WithMaxAge(d time.Duration) Option {
	return func(h *handler) { h.maxAge = d }
}

// WithClock sets the clock WithMaxAge compares against (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(h *handler) { h.now = now }
}

// WithFailsafe mounts fs at POST /failsafe: the member-to-member check of
// failsafe mode (docs/architecture.md, "Failsafe mode"). Bodies are
// FailsafeRequest and FailsafeAnswer.
func WithFailsafe(fs http.Handler) Option {
	return func(h *handler) { h.failsafe = fs }
}

// FailsafeAuthHeader carries the hex HMAC-SHA256 of a failsafe request's
// body, keyed with the cluster's replication password: only members of the
// cluster can ask for a failsafe promise.
const FailsafeAuthHeader = "X-Dbpilot-Failsafe-Auth"

// FailsafeRequest is a primary's question to a member while etcd is
// unreachable: "do you still recognise me as the primary of term Term, and
// will you stay out of elections for your failsafe period?"
type FailsafeRequest struct {
	Cluster string `json:"cluster"` // namespace/project/cluster
	Leader  string `json:"leader"`  // the asking primary's node name
	Term    uint64 `json:"term"`
	SentMS  int64  `json:"sent_ms"` // unix ms, for logs only
}

// FailsafeAnswer is the member's answer. Ack true is a promise: the member
// takes part in no election for PromiseMS milliseconds from the moment it
// answered. Ack false gives the reason (etcd reachable from here, newer
// term seen, another leader known, election in progress).
type FailsafeAnswer struct {
	Node      string `json:"node"`
	Ack       bool   `json:"ack"`
	PromiseMS int64  `json:"promise_ms,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// Insight reads the local PostgreSQL's query statistics and sessions for
// GET /v1/statements and GET /v1/sessions; implemented by the agent.
type Insight interface {
	// Statements returns the top limit (1..proto.MaxStatementsLimit)
	// statements of pg_stat_statements by total execution time, largest
	// first. Errors: PostgreSQL not reachable, pg_stat_statements not
	// available (the message says which), ctx's deadline.
	Statements(ctx context.Context, limit int) (proto.StatementStats, error)
	// Sessions returns the client backends of pg_stat_activity, longest
	// running first, at most proto.MaxSessions.
	Sessions(ctx context.Context) (proto.Sessions, error)
}

// InsightTimeout bounds one GET /v1/statements or /v1/sessions.
const InsightTimeout = 3 * time.Second

// WithInsight mounts GET /v1/statements?limit=N and GET /v1/sessions,
// answered by in (see NewHandler). They expose query texts and client
// addresses: like the rest of this endpoint they have no authentication,
// so http.listen must only be reachable from trusted networks.
func WithInsight(in Insight) Option {
	return func(h *handler) { h.insight = in }
}

type handler struct {
	src      Source
	maxAge   time.Duration
	now      func() time.Time
	failsafe http.Handler
	insight  Insight
}

// NewHandler returns the agent's HTTP handler:
//
//	GET /health   200 when Healthy, else 503
//	GET /primary  200 when Role is primary, Writable and HoldsLease, else 503
//	GET /replica  200 when Role is replica, Streaming and Healthy and, if
//	              ?lag=N (bytes, a non-negative integer) is given, the lag is
//	              known and at most N bytes; else 503; 400 for a bad lag
//	GET /metrics  Prometheus exposition of reg (absent when reg is nil)
//	POST /failsafe  failsafe-mode check between members (WithFailsafe only)
//	GET /v1/statements?limit=N  top N statements by total time
//	              (proto.StatementStats; N 1..100, default 20; 400 for a bad
//	              limit; 503 with {"error"} when PostgreSQL or
//	              pg_stat_statements is not available) (WithInsight only)
//	GET /v1/sessions  client sessions, longest first (proto.Sessions; 503
//	              with {"error"} when PostgreSQL is not available)
//	              (WithInsight only)
//
// Each GET route also answers HEAD (status only) and, for the health and
// role checks, OPTIONS (HAProxy's default httpchk method) in the same way.
// Health and role checks return the snapshot as a JSON NodeState body.
// Other methods get 405.
func NewHandler(src Source, reg *prometheus.Registry, opts ...Option) http.Handler {
	h := &handler{src: src, now: time.Now}
	for _, o := range opts {
		o(h)
	}
	mux := http.NewServeMux()
	for path, check := range map[string]func(*http.Request, NodeState) (bool, error){
		"/health":  checkHealth,
		"/primary": checkPrimary,
		"/replica": checkReplica,
	} {
		serve := h.serveCheck(check)
		mux.HandleFunc("GET "+path, serve) // GET patterns also match HEAD
		mux.HandleFunc("OPTIONS "+path, serve)
	}
	if h.failsafe != nil {
		mux.Handle("POST /failsafe", h.failsafe)
	}
	if h.insight != nil {
		mux.HandleFunc("GET /v1/statements", h.serveStatements)
		mux.HandleFunc("GET /v1/sessions", h.serveSessions)
	}
	if reg != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	return mux
}

// serveCheck answers 200 when check passes on a fresh snapshot, else 503.
func (h *handler) serveCheck(check func(*http.Request, NodeState) (bool, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := h.src.Snapshot()
		ok, err := check(r, s)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
			return
		}
		if h.stale(s) {
			ok = false
			w.Header().Set("X-Dbpilot-Stale", "true")
		}
		code := http.StatusOK
		if !ok {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, s)
	}
}

func (h *handler) stale(s NodeState) bool {
	return h.maxAge > 0 && (s.UpdatedAt.IsZero() || h.now().Sub(s.UpdatedAt) > h.maxAge)
}

func checkHealth(_ *http.Request, s NodeState) (bool, error) {
	return s.Healthy, nil
}

func checkPrimary(_ *http.Request, s NodeState) (bool, error) {
	return s.Role == RolePrimary && s.Writable && s.HoldsLease, nil
}

func checkReplica(r *http.Request, s NodeState) (bool, error) {
	maxLag := int64(-1)
	if v, given := r.URL.Query()["lag"]; given {
		if len(v) != 1 {
			return false, fmt.Errorf("lag: give it once (got %d values)", len(v))
		}
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || n < 0 {
			return false, fmt.Errorf("lag: must be a non-negative whole number of bytes (got %q)", v[0])
		}
		maxLag = n
	}
	ok := s.Role == RoleReplica && s.Streaming && s.Healthy
	if maxLag >= 0 {
		ok = ok && s.LagBytes >= 0 && s.LagBytes <= maxLag
	}
	return ok, nil
}

// StatementsLimit parses ?limit= of the statements endpoints: absent,
// proto.DefaultStatementsLimit; else a whole number 1..proto.MaxStatementsLimit.
// Errors name the parameter and the range.
func StatementsLimit(q map[string][]string) (int, error) {
	v, given := q["limit"]
	if !given {
		return proto.DefaultStatementsLimit, nil
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("limit: give it once (got %d values)", len(v))
	}
	n, err := strconv.Atoi(v[0])
	if err != nil || n < 1 || n > proto.MaxStatementsLimit {
		return 0, fmt.Errorf("limit: must be a whole number from 1 to %d (got %q)", proto.MaxStatementsLimit, v[0])
	}
	return n, nil
}

func (h *handler) serveStatements(w http.ResponseWriter, r *http.Request) {
	limit, err := StatementsLimit(r.URL.Query())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), InsightTimeout)
	defer cancel()
	st, err := h.insight.Statements(ctx, limit)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) serveSessions(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), InsightTimeout)
	defer cancel()
	ss, err := h.insight.Sessions(ctx)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, ss)
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // cannot happen for the types written here
		code, b = http.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
