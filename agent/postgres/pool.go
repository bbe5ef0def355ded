package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// localPoolConns bounds the superuser connections the agent keeps open to
// its own server: the HA loop, the slot keeper and an occasional API call.
const localPoolConns = 3

// localConn lends a pooled superuser connection to the local server for the
// agent's frequent short control queries (status every cycle, promotion,
// synchronous standbys, re-pointing a replica, slots, CHECKPOINT). A fresh
// connection costs a backend fork and a SCRAM exchange: about 25 ms on an
// idle 2-core machine and several times that under load, paid again at
// every step of a failover or switchover. The returned function gives the
// connection back and must be called exactly once; session settings must
// not be changed on it (use [Instance.Connect] for that).
//
// Every lent connection is pinged first (about 0.15 ms): one that a restart
// or a crash of the server closed is replaced there, not found broken in
// the caller's query. The pool is emptied whenever this Instance starts the
// server or sees its postmaster exit.
//
// Errors: ErrNotRunning if no postmaster runs; the connection's error.
func (p *Instance) localConn(ctx context.Context) (*pgx.Conn, func(), error) {
	if !p.Running() {
		return nil, nil, ErrNotRunning
	}
	pool, err := p.localPool()
	if err != nil {
		return nil, nil, err
	}
	c, err := pool.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to local postgres: %w", err)
	}
	return c.Conn(), c.Release, nil
}

// localPool returns the pool, creating it (without connecting) on first use.
func (p *Instance) localPool() (*pgxpool.Pool, error) {
	p.poolMu.Lock()
	defer p.poolMu.Unlock()
	if p.pool != nil {
		return p.pool, nil
	}
	pool, err := p.newPool(localPoolConns, "dbpilot", nil)
	if err != nil {
		return nil, err
	}
	p.pool = pool
	return pool, nil
}

// metricsPoolConns bounds the connections of the metrics pool: one, so
// that scrapes are serialised and never take more than one backend.
const metricsPoolConns = 1

// MetricsStatementTimeout is the statement_timeout of the metrics
// connection's session: the longest a single metrics query may run.
const MetricsStatementTimeout = 1500 * time.Millisecond

// MetricsConn lends the connection of a dedicated pool of one superuser
// connection to the local server, for the metrics collector that runs on a
// Prometheus scrape. It is separate from the HA loop's pool ([localConn]),
// so a slow or stuck scrape cannot starve the HA loop of connections. The
// session runs with statement_timeout = [MetricsStatementTimeout], a
// 500 ms lock_timeout and application_name "dbpilot-metrics". The returned
// function gives the connection back and must be called exactly once;
// session settings must not be changed on it. The pool is emptied with the
// HA loop's pool (server start or exit) and closed by [Instance.Close].
//
// Errors: ErrNotRunning if no postmaster runs; the connection's error (for
// example ctx's deadline while a previous scrape still holds it).
func (p *Instance) MetricsConn(ctx context.Context) (*pgx.Conn, func(), error) {
	if !p.Running() {
		return nil, nil, ErrNotRunning
	}
	p.poolMu.Lock()
	if p.metricsPool == nil {
		pool, err := p.newPool(metricsPoolConns, "dbpilot-metrics", map[string]string{
			"statement_timeout": fmt.Sprint(MetricsStatementTimeout.Milliseconds()),
			"lock_timeout":      "500",
		})
		if err != nil {
			p.poolMu.Unlock()
			return nil, nil, err
		}
		p.metricsPool = pool
	}
	pool := p.metricsPool
	p.poolMu.Unlock()
	c, err := pool.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to local postgres for metrics: %w", err)
	}
	return c.Conn(), c.Release, nil
}

// newPool creates (without connecting) a pool of at most conns superuser
// connections to the local server, with the given application_name and
// extra session parameters.
func (p *Instance) newPool(conns int32, appName string, params map[string]string) (*pgxpool.Pool, error) {
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable connect_timeout=10 application_name=%s",
		quoteConninfo(p.cfg.connectHost()), p.cfg.Port, quoteConninfo(p.cfg.Superuser.Username), appName)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("local connection pool: %w", err)
	}
	cfg.ConnConfig.Password = p.cfg.Superuser.Password
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	cfg.MaxConns, cfg.MinConns = conns, 0
	cfg.MaxConnIdleTime = time.Minute
	cfg.HealthCheckPeriod = 30 * time.Second
	cfg.PingTimeout = 2 * time.Second
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("local connection pool: %w", err)
	}
	return pool, nil
}

// resetLocalPool closes the pooled connections (those lent out are closed
// when given back): the server they reached has stopped or restarted.
func (p *Instance) resetLocalPool() {
	p.poolMu.Lock()
	defer p.poolMu.Unlock()
	if p.pool != nil {
		p.pool.Reset()
	}
	if p.metricsPool != nil {
		p.metricsPool.Reset()
	}
}

// Close releases the pooled connections to the local server (the HA
// loop's and the metrics pool). It does not
// stop PostgreSQL. The Instance stays usable: the pool is rebuilt on demand.
func (p *Instance) Close() {
	p.poolMu.Lock()
	pool, mpool := p.pool, p.metricsPool
	p.pool, p.metricsPool = nil, nil
	p.poolMu.Unlock()
	if pool != nil {
		pool.Close()
	}
	if mpool != nil {
		mpool.Close()
	}
}
