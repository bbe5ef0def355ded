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
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable connect_timeout=10 application_name=dbpilot",
		quoteConninfo(p.cfg.connectHost()), p.cfg.Port, quoteConninfo(p.cfg.Superuser.Username))
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("local connection pool: %w", err)
	}
	cfg.ConnConfig.Password = p.cfg.Superuser.Password
	cfg.MaxConns, cfg.MinConns = localPoolConns, 0
	cfg.MaxConnIdleTime = time.Minute
	cfg.HealthCheckPeriod = 30 * time.Second
	cfg.PingTimeout = 2 * time.Second
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("local connection pool: %w", err)
	}
	p.pool = pool
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
}

// Close releases the pooled connections to the local server. It does not
// stop PostgreSQL. The Instance stays usable: the pool is rebuilt on demand.
func (p *Instance) Close() {
	p.poolMu.Lock()
	pool := p.pool
	p.pool = nil
	p.poolMu.Unlock()
	if pool != nil {
		pool.Close()
	}
}
