// Package pgmetrics collects engine and host metrics of the local
// PostgreSQL server for the agent's /metrics endpoint.
//
// The [Collector] is a prometheus.Collector: it queries PostgreSQL when
// Prometheus scrapes, never from the HA loop, over a connection of its own
// ([Source.MetricsConn], a dedicated pool of one in agent/postgres) with a
// session statement_timeout, and the whole scrape is bounded by a time
// budget (2 s by default). Each group of queries (a "collector", as in
// postgres_exporter) succeeds or fails on its own: a failing or slow query
// drops only its group's metrics and sets pg_scrape_collector_success
// {collector} to 0 and pg_exporter_last_scrape_error to 1; the other
// groups are still reported. When PostgreSQL is unreachable, pg_up is 0 and
// only the host and scrape metrics are reported.
//
// Metric names and labels are those of postgres_exporter where it has
// them, so existing dashboards and alert rules work unchanged; the others
// are documented in docs/metrics.md. This package imports nothing of
// dbpilot's: the agent passes its *postgres.Instance as the [Source].
package pgmetrics

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// DefaultBudget is the default time budget of one scrape: every query of
// the scrape together, in wall-clock time.
const DefaultBudget = 2 * time.Second

// Source is the local PostgreSQL the collector reads. *postgres.Instance
// satisfies it.
type Source interface {
	// MetricsConn lends a connection reserved for metrics (not one of the
	// HA loop's); the returned function gives it back.
	MetricsConn(ctx context.Context) (*pgx.Conn, func(), error)
	// DataDir is the data directory (PGDATA); its pg_wal subdirectory (or
	// the directory that symlink points to) is the WAL directory.
	DataDir() string
}

// Collector is a prometheus.Collector of the local PostgreSQL's metrics
// and of the data and WAL filesystems. Create it with [New] and register
// it on the agent's registry. It is safe for concurrent scrapes (they are
// serialised by the single metrics connection).
type Collector struct {
	src    Source
	log    *zap.Logger
	budget time.Duration
	groups []group
	descs  []*prometheus.Desc

	scrapes atomic.Uint64

	mu      sync.Mutex
	lastErr map[string]string // collector → last error logged, "" when it last succeeded
}

// group is one postgres_exporter-style collector: a few queries whose
// metrics are reported together or not at all.
type group struct {
	name string
	fn   func(ctx context.Context, conn *pgx.Conn, out *[]prometheus.Metric) error
}

// Option configures a Collector.
type Option func(*Collector)

// WithBudget sets the time budget of one scrape (default [DefaultBudget]).
// Queries still running when it is spent are cancelled and their groups
// reported as failed.
func WithBudget(d time.Duration) Option { return func(c *Collector) { c.budget = d } }

// New returns a Collector reading src. A nil log discards logs.
func New(src Source, log *zap.Logger, opts ...Option) *Collector {
	if log == nil {
		log = zap.NewNop()
	}
	c := &Collector{src: src, log: log, budget: DefaultBudget, lastErr: map[string]string{}}
	for _, o := range opts {
		o(c)
	}
	c.groups = []group{
		{"database", c.collectDatabase},
		{"database_size", c.collectDatabaseSize},
		{"activity", c.collectActivity},
		{"locks", c.collectLocks},
		{"replication", c.collectReplication},
		{"wal_receiver", c.collectWALReceiver},
		{"bgwriter", c.collectBgwriter},
		{"archiver", c.collectArchiver},
		{"statements", c.collectStatements},
	}
	c.descs = allDescs()
	return c
}

// Describe sends the descriptors of every metric the collector can report.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect queries PostgreSQL and the filesystems within the scrape budget
// and sends what it collected.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	start := time.Now()
	c.scrapes.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), c.budget)
	defer cancel()

	failed := !c.collectFilesystems(ch)

	conn, release, err := c.src.MetricsConn(ctx)
	if err != nil {
		c.note("connect", err)
		ch <- gauge(descUp, 0)
		failed = true
	} else {
		c.note("connect", nil)
		ch <- gauge(descUp, 1)
		for _, g := range c.groups {
			gs := time.Now()
			var ms []prometheus.Metric
			err := ctx.Err()
			if err == nil {
				err = g.fn(ctx, conn, &ms)
			}
			c.note(g.name, err)
			ok := 1.0
			if err != nil {
				ok, failed = 0, true
			} else {
				for _, m := range ms {
					ch <- m
				}
			}
			ch <- gauge(descCollectorSuccess, ok, g.name)
			ch <- gauge(descCollectorDuration, time.Since(gs).Seconds(), g.name)
		}
		release()
	}
	ch <- prometheus.MustNewConstMetric(descScrapes, prometheus.CounterValue, float64(c.scrapes.Load()))
	ch <- gauge(descLastScrapeError, b2f(failed))
	ch <- gauge(descLastScrapeDuration, time.Since(start).Seconds())
}

// note logs a collector's error when it differs from the last one logged,
// and its recovery, so that a scrape every second does not flood the log.
func (c *Collector) note(name string, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	c.mu.Lock()
	prev, seen := c.lastErr[name]
	c.lastErr[name] = msg
	c.mu.Unlock()
	switch {
	case err != nil && msg != prev:
		c.log.Warn("metrics collection failed", zap.String("collector", name), zap.Error(err))
	case err == nil && seen && prev != "":
		c.log.Info("metrics collection recovered", zap.String("collector", name))
	}
}

// collectFilesystems reports the filesystems of the data and WAL
// directories; false if either could not be read.
func (c *Collector) collectFilesystems(ch chan<- prometheus.Metric) bool {
	data := c.src.DataDir()
	ok := true
	for _, d := range []struct{ kind, path string }{{"data", data}, {"wal", filepath.Join(data, "pg_wal")}} {
		u, err := Statfs(d.path)
		if err != nil {
			c.note("filesystem_"+d.kind, err)
			ok = false
			continue
		}
		c.note("filesystem_"+d.kind, nil)
		size, avail, used := float64(u.SizeBytes), float64(u.AvailBytes), float64(u.SizeBytes-u.FreeBytes)
		pct := 0.0
		if used+avail > 0 { // as df: used / (used + available to unprivileged users)
			pct = 100 * used / (used + avail)
		}
		ch <- gauge(descFSSize, size, d.kind, d.path)
		ch <- gauge(descFSAvail, avail, d.kind, d.path)
		ch <- gauge(descFSUsed, used, d.kind, d.path)
		ch <- gauge(descFSUsedPercent, pct, d.kind, d.path)
	}
	return ok
}

// FSUsage is one filesystem's statfs(2) figures, in bytes.
type FSUsage struct {
	// SizeBytes is the filesystem's size (f_blocks × f_bsize).
	SizeBytes int64
	// FreeBytes is the free space, including blocks reserved for root
	// (f_bfree).
	FreeBytes int64
	// AvailBytes is what an unprivileged user may still allocate
	// (f_bavail).
	AvailBytes int64
}

// Statfs returns the usage of the filesystem holding path (the data or the
// WAL directory). Errors: statfs(2)'s, naming path.
func Statfs(path string) (FSUsage, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return FSUsage{}, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	bs := int64(st.Bsize)
	return FSUsage{SizeBytes: int64(st.Blocks) * bs, FreeBytes: int64(st.Bfree) * bs, AvailBytes: int64(st.Bavail) * bs}, nil
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
