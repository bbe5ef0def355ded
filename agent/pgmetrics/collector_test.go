package pgmetrics_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/agent/pgmetrics"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/internal/localhost"
	"github.com/dbpilot/dbpilot/internal/testutil"
)

const testPassword = `s3cr'et:pw`

func binDir(t *testing.T) string {
	t.Helper()
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(m) == 0 {
		t.Fatal("PostgreSQL server binaries not found: run deploy/dev/install-deps.sh (make test does)")
	}
	sort.Strings(m)
	return filepath.Dir(m[len(m)-1])
}

// newPG returns a stopped Instance in a fresh directory the PostgreSQL OS
// user can traverse, stopped (immediately) when the test ends.
func newPG(t *testing.T, root, name string) *postgres.Instance {
	t.Helper()
	port, err := localhost.FreePort("")
	if err != nil {
		t.Fatal(err)
	}
	cfg := postgres.Config{
		NodeName: name, BinDir: binDir(t), DataDir: filepath.Join(root, name, "data"), ListenAddress: "127.0.0.1", Port: port,
		OSUser:         "postgres",
		Superuser:      postgres.Credentials{Username: "postgres", Password: testPassword},
		Replication:    postgres.Credentials{Username: "replicator", Password: testPassword},
		Parameters:     map[string]string{"fsync": "off", "max_wal_senders": "5", "shared_preload_libraries": "pg_stat_statements"},
		InitdbArgs:     []string{"--no-sync"},
		ArchiveCommand: "/bin/true",
	}
	if os.Geteuid() != 0 {
		cfg.OSUser = ""
	}
	pg, err := postgres.New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = pg.Stop(context.Background(), postgres.StopImmediate)
		pg.Close()
	})
	return pg
}

func testRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dbpilot-pgm-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // registered first: runs after every Stop
	return dir
}

func startPrimary(t *testing.T, ctx context.Context, root string) *postgres.Instance {
	t.Helper()
	pg := newPG(t, root, "n1")
	if err := pg.Initdb(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg.Start(ctx, postgres.RolePrimary, nil); err != nil {
		t.Fatal(err)
	}
	if err := pg.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	return pg
}

// conn opens a plain session (not one of the pools) to pg's database db.
func conn(t *testing.T, ctx context.Context, pg *postgres.Instance, db string) *pgx.Conn {
	t.Helper()
	c, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if db != "" && db != "postgres" {
		cfg := c.Config().Copy()
		c.Close(ctx)
		cfg.Database = db
		if c, err = pgx.ConnectConfig(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func mustExec(t *testing.T, ctx context.Context, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// scrape is one gathered scrape: metric name → its samples.
type scrape map[string][]*dto.Metric

func gather(t *testing.T, reg prometheus.Gatherer) scrape {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	s := scrape{}
	for _, mf := range mfs {
		s[mf.GetName()] = mf.GetMetric()
	}
	return s
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

// get returns the value of name's sample whose labels include want
// (key=value pairs), and whether there is one.
func (s scrape) get(name string, want ...string) (float64, bool) {
	for _, m := range s[name] {
		l := labelsOf(m)
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			ok = ok && l[want[i]] == want[i+1]
		}
		if ok {
			return value(m), true
		}
	}
	return 0, false
}

func (s scrape) must(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	v, ok := s.get(name, want...)
	if !ok {
		t.Fatalf("no %s%v in the scrape (%d samples of it)", name, want, len(s[name]))
	}
	return v
}

// labelNames checks that every sample of name has exactly the label names want.
func (s scrape) labelNames(t *testing.T, name string, want ...string) {
	t.Helper()
	if len(s[name]) == 0 {
		t.Fatalf("no %s in the scrape", name)
	}
	sort.Strings(want)
	for _, m := range s[name] {
		var got []string
		for k := range labelsOf(m) {
			got = append(got, k)
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s has labels %v, want %v", name, got, want)
		}
	}
}

func newRegistry(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry() // checks every metric against Describe
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	return reg
}

func eventually(t *testing.T, reg prometheus.Gatherer, what string, cond func(s scrape) error) scrape {
	t.Helper()
	var last scrape
	testutil.Eventually(t, 20*time.Second, 200*time.Millisecond, what, func() error {
		last = gather(t, reg)
		return cond(last)
	})
	return last
}

// TestPrimaryAndReplica scrapes a real primary and its streaming replica
// and checks every documented metric family with its labels and a
// plausible value.
func TestPrimaryAndReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root := testRoot(t)
	n1 := startPrimary(t, ctx, root)
	n2 := newPG(t, root, "n2")
	up := postgres.Upstream{Host: "127.0.0.1", Port: portOf(t, ctx, n1), Name: "n1"}
	if err := n2.BaseBackup(ctx, up); err != nil {
		t.Fatal(err)
	}
	if err := n2.Start(ctx, postgres.RoleReplica, &up); err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t)
	reg1 := newRegistry(t, pgmetrics.New(n1, log.Named("n1")))
	reg2 := newRegistry(t, pgmetrics.New(n2, log.Named("n2")))

	c := conn(t, ctx, n1, "")
	mustExec(t, ctx, c, "CREATE TABLE t (id int)")
	mustExec(t, ctx, c, "CREATE DATABASE second")

	s := eventually(t, reg1, "primary sees the replica streaming", func(s scrape) error {
		if _, ok := s.get("pg_stat_replication_replay_lag_bytes", "application_name", "n2", "state", "streaming"); !ok {
			return fmt.Errorf("no streaming n2 in pg_stat_replication_replay_lag_bytes")
		}
		return nil
	})
	// Scrape health.
	if v := s.must(t, "pg_up"); v != 1 {
		t.Errorf("pg_up = %v, want 1", v)
	}
	if v := s.must(t, "pg_exporter_last_scrape_error"); v != 0 {
		t.Errorf("pg_exporter_last_scrape_error = %v, want 0", v)
	}
	for _, g := range []string{"database", "database_size", "activity", "locks", "replication", "wal_receiver", "bgwriter", "archiver", "statements"} {
		if v := s.must(t, "pg_scrape_collector_success", "collector", g); v != 1 {
			t.Errorf("pg_scrape_collector_success{collector=%q} = %v, want 1", g, v)
		}
	}
	s.must(t, "pg_exporter_last_scrape_duration_seconds")
	s.must(t, "pg_exporter_scrapes_total")

	// pg_stat_database and sizes.
	for _, n := range []string{"numbackends", "xact_commit", "xact_rollback", "blks_read", "blks_hit", "tup_returned",
		"tup_fetched", "tup_inserted", "tup_updated", "tup_deleted", "conflicts", "temp_files", "temp_bytes", "deadlocks",
		"blk_read_time", "blk_write_time"} {
		s.labelNames(t, "pg_stat_database_"+n, "datid", "datname")
		s.must(t, "pg_stat_database_"+n, "datname", "postgres")
	}
	commits := s.must(t, "pg_stat_database_xact_commit", "datname", "postgres")
	s.labelNames(t, "pg_database_size_bytes", "datname")
	if v := s.must(t, "pg_database_size_bytes", "datname", "second"); v < 1<<20 {
		t.Errorf("pg_database_size_bytes{datname=second} = %v, want at least 1 MiB", v)
	}
	for i := 0; i < 5; i++ {
		mustExec(t, ctx, c, fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
	}
	eventually(t, reg1, "xact_commit grows by the 5 commits", func(s scrape) error {
		if v, _ := s.get("pg_stat_database_xact_commit", "datname", "postgres"); v < commits+5 {
			return fmt.Errorf("xact_commit %v, want >= %v", v, commits+5)
		}
		if v, _ := s.get("pg_stat_database_tup_inserted", "datname", "postgres"); v < 5 {
			return fmt.Errorf("tup_inserted %v, want >= 5", v)
		}
		return nil
	})

	// Activity, xmin and locks: an open repeatable-read transaction holds
	// an xmin and a lock another session waits for.
	holder := conn(t, ctx, n1, "")
	mustExec(t, ctx, holder, "BEGIN ISOLATION LEVEL REPEATABLE READ")
	mustExec(t, ctx, holder, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
	waiter := conn(t, ctx, n1, "")
	waitDone := make(chan error, 1)
	go func() { _, err := waiter.Exec(ctx, "SELECT count(*) FROM t"); waitDone <- err }()
	time.Sleep(1100 * time.Millisecond) // ages the transaction past a second
	s = eventually(t, reg1, "the waiting lock and the old xmin", func(s scrape) error {
		if v, _ := s.get("pg_locks_waiting_count"); v < 1 {
			return fmt.Errorf("pg_locks_waiting_count %v, want >= 1", v)
		}
		if v, _ := s.get("pg_stat_activity_oldest_xmin_age_seconds"); v < 1 {
			return fmt.Errorf("pg_stat_activity_oldest_xmin_age_seconds %v, want >= 1", v)
		}
		return nil
	})
	s.labelNames(t, "pg_locks_count", "datname", "mode")
	if v := s.must(t, "pg_locks_count", "datname", "postgres", "mode", "accessexclusivelock"); v < 1 {
		t.Errorf("pg_locks_count{postgres,accessexclusivelock} = %v, want >= 1", v)
	}
	s.labelNames(t, "pg_stat_activity_count", "datname", "state")
	if v := s.must(t, "pg_stat_activity_count", "datname", "postgres", "state", "idle in transaction"); v < 1 {
		t.Errorf("pg_stat_activity_count{postgres,idle in transaction} = %v, want >= 1", v)
	}
	if v := s.must(t, "pg_stat_activity_count", "datname", "second", "state", "active"); v != 0 {
		t.Errorf("pg_stat_activity_count{second,active} = %v, want 0", v)
	}
	if v := s.must(t, "pg_stat_activity_max_tx_duration", "datname", "postgres", "state", "idle in transaction"); v < 1 {
		t.Errorf("pg_stat_activity_max_tx_duration{postgres,idle in transaction} = %v, want >= 1", v)
	}
	s.must(t, "pg_stat_activity_oldest_xmin_age_xids")
	mustExec(t, ctx, holder, "COMMIT")
	if err := <-waitDone; err != nil {
		t.Fatal(err)
	}

	// pg_stat_statements: off until the extension is created.
	if v := s.must(t, "pg_stat_statements_enabled"); v != 0 {
		t.Errorf("pg_stat_statements_enabled = %v before CREATE EXTENSION", v)
	}
	mustExec(t, ctx, c, "CREATE EXTENSION pg_stat_statements")
	for i := 0; i < 3; i++ {
		mustExec(t, ctx, c, "SELECT pg_sleep(0.05), count(*) FROM t")
	}
	s = eventually(t, reg1, "pg_stat_statements reported", func(s scrape) error {
		if v, _ := s.get("pg_stat_statements_enabled"); v != 1 {
			return fmt.Errorf("pg_stat_statements_enabled %v", v)
		}
		return nil
	})
	for _, n := range []string{"calls_total", "seconds_total", "rows_total"} {
		s.labelNames(t, "pg_stat_statements_"+n, "user", "datname", "queryid")
	}
	var slept bool // the pg_sleep statement: 3 calls, at least 0.15 s
	for _, m := range s["pg_stat_statements_seconds_total"] {
		l := labelsOf(m)
		calls, _ := s.get("pg_stat_statements_calls_total", "user", l["user"], "datname", l["datname"], "queryid", l["queryid"])
		slept = slept || (l["datname"] == "postgres" && l["user"] == "postgres" && calls == 3 && value(m) >= 0.15)
	}
	if !slept {
		t.Errorf("no pg_stat_statements series with 3 calls and >= 0.15 s for the pg_sleep statement")
	}
	if n := len(s["pg_stat_statements_seconds_total"]); n > pgmetrics.TopStatements {
		t.Errorf("%d statements reported, want at most %d", n, pgmetrics.TopStatements)
	}

	// Replication on the primary.
	for _, n := range []string{"pg_current_wal_lsn_bytes", "pg_wal_lsn_diff", "write_lag_bytes", "flush_lag_bytes", "replay_lag_bytes",
		"write_lag_seconds", "flush_lag_seconds", "replay_lag_seconds"} {
		s.labelNames(t, "pg_stat_replication_"+n, "application_name", "client_addr", "state", "sync_state")
		if v := s.must(t, "pg_stat_replication_"+n, "application_name", "n2", "client_addr", "127.0.0.1/32", "sync_state", "async"); v < 0 {
			t.Errorf("pg_stat_replication_%s = %v, want >= 0", n, v)
		}
	}
	lsn := s.must(t, "pg_wal_lsn_bytes")
	if lsn <= 0 || s.must(t, "pg_stat_replication_pg_current_wal_lsn_bytes", "application_name", "n2") < lsn {
		t.Errorf("pg_wal_lsn_bytes %v, pg_stat_replication_pg_current_wal_lsn_bytes below it or not positive", lsn)
	}
	if v := s.must(t, "pg_replication_is_replica"); v != 0 {
		t.Errorf("primary: pg_replication_is_replica = %v", v)
	}
	if v := s.must(t, "pg_stat_wal_receiver_streaming"); v != 0 {
		t.Errorf("primary: pg_stat_wal_receiver_streaming = %v", v)
	}
	s.must(t, "pg_replication_lag_seconds")
	s.must(t, "pg_replication_replay_lag_bytes")

	// bgwriter and archiver: a CHECKPOINT and an archived WAL segment.
	mustExec(t, ctx, c, "CHECKPOINT")
	mustExec(t, ctx, c, "SELECT pg_switch_wal()")
	s = eventually(t, reg1, "checkpoint and archive counted", func(s scrape) error {
		if v, _ := s.get("pg_stat_bgwriter_checkpoints_req_total"); v < 1 {
			return fmt.Errorf("pg_stat_bgwriter_checkpoints_req_total %v", v)
		}
		if v, _ := s.get("pg_stat_archiver_archived_count"); v < 1 {
			return fmt.Errorf("pg_stat_archiver_archived_count %v", v)
		}
		return nil
	})
	for _, n := range []string{"checkpoints_timed", "checkpoints_req", "checkpoint_write_time", "checkpoint_sync_time",
		"buffers_checkpoint", "buffers_clean", "maxwritten_clean", "buffers_alloc"} {
		s.must(t, "pg_stat_bgwriter_"+n+"_total")
	}
	if v := s.must(t, "pg_stat_archiver_last_archive_age"); v < 0 || v > 60 {
		t.Errorf("pg_stat_archiver_last_archive_age = %v, want 0..60 s", v)
	}
	s.must(t, "pg_stat_archiver_failed_count")

	// Filesystems.
	checkFilesystems(t, s, n1.DataDir())

	// Scrape latency on a warm connection (the target: p99 under 100 ms).
	var ds []float64
	for i := 0; i < 20; i++ {
		ds = append(ds, gather(t, reg1).must(t, "pg_exporter_last_scrape_duration_seconds"))
	}
	sort.Float64s(ds)
	t.Logf("scrape duration over 20 scrapes: p50 %.1f ms, max %.1f ms", ds[10]*1000, ds[19]*1000)

	// The replica.
	s = eventually(t, reg2, "replica streaming", func(s scrape) error {
		if v, _ := s.get("pg_stat_wal_receiver_streaming"); v != 1 {
			return fmt.Errorf("pg_stat_wal_receiver_streaming %v", v)
		}
		return nil
	})
	if v := s.must(t, "pg_replication_is_replica"); v != 1 {
		t.Errorf("replica: pg_replication_is_replica = %v", v)
	}
	for _, n := range []string{"flushed_lsn", "latest_end_lsn", "received_tli", "last_msg_receipt_time"} {
		s.labelNames(t, "pg_stat_wal_receiver_"+n, "upstream_host", "slot_name", "status")
		if v := s.must(t, "pg_stat_wal_receiver_"+n, "upstream_host", "127.0.0.1", "status", "streaming"); v <= 0 {
			t.Errorf("pg_stat_wal_receiver_%s = %v, want > 0", n, v)
		}
	}
	if v := s.must(t, "pg_wal_lsn_bytes"); v <= 0 {
		t.Errorf("replica: pg_wal_lsn_bytes = %v", v)
	}
	if v := s.must(t, "pg_replication_lag_seconds"); v < 0 {
		t.Errorf("replica: pg_replication_lag_seconds = %v", v)
	}
	if len(s["pg_stat_replication_replay_lag_bytes"]) != 0 {
		t.Errorf("replica reports pg_stat_replication samples")
	}
	if v := s.must(t, "pg_up"); v != 1 {
		t.Errorf("replica: pg_up = %v", v)
	}
	if v := s.must(t, "pg_exporter_last_scrape_error"); v != 0 {
		t.Errorf("replica: pg_exporter_last_scrape_error = %v", v)
	}
}

func checkFilesystems(t *testing.T, s scrape, dataDir string) {
	t.Helper()
	for _, kind := range []string{"data", "wal"} {
		path := dataDir
		if kind == "wal" {
			path = filepath.Join(dataDir, "pg_wal")
		}
		for _, n := range []string{"size_bytes", "avail_bytes", "used_bytes", "used_percent"} {
			s.labelNames(t, "dbpilot_filesystem_"+n, "kind", "path")
			s.must(t, "dbpilot_filesystem_"+n, "kind", kind, "path", path)
		}
		size := s.must(t, "dbpilot_filesystem_size_bytes", "kind", kind)
		avail := s.must(t, "dbpilot_filesystem_avail_bytes", "kind", kind)
		pct := s.must(t, "dbpilot_filesystem_used_percent", "kind", kind)
		if size <= 0 || avail > size || pct < 0 || pct > 100 {
			t.Errorf("%s filesystem: size %v avail %v used %v%%: implausible", kind, size, avail, pct)
		}
	}
}

func portOf(t *testing.T, ctx context.Context, pg *postgres.Instance) int {
	t.Helper()
	c := conn(t, ctx, pg, "")
	return int(c.Config().Port)
}

// TestFailuresAreIsolated: a failing query, a query stopped by the
// session's statement_timeout, a spent budget, a connection held by
// someone else and a stopped server each drop only what they must, with
// pg_exporter_last_scrape_error = 1, and never fail the scrape.
func TestFailuresAreIsolated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg := startPrimary(t, ctx, testRoot(t))
	log := zaptest.NewLogger(t)

	t.Run("query error and statement_timeout", func(t *testing.T) {
		col := pgmetrics.New(pg, log, pgmetrics.WithBudget(10*time.Second))
		pgmetrics.AddQueryGroup(col, "broken", "SELECT * FROM no_such_view", true)
		pgmetrics.AddQueryGroup(col, "slow", "SELECT pg_sleep(30)", true)
		start := time.Now()
		s := gather(t, newRegistry(t, col))
		if d := time.Since(start); d > postgres.MetricsStatementTimeout+5*time.Second {
			t.Errorf("scrape took %v: the statement_timeout did not stop the slow query", d)
		}
		for g, want := range map[string]float64{"broken": 0, "slow": 0, "database": 1, "activity": 1, "archiver": 1} {
			if v := s.must(t, "pg_scrape_collector_success", "collector", g); v != want {
				t.Errorf("pg_scrape_collector_success{collector=%q} = %v, want %v", g, v, want)
			}
		}
		if v := s.must(t, "pg_scrape_collector_duration_seconds", "collector", "slow"); v < postgres.MetricsStatementTimeout.Seconds()-0.1 {
			t.Errorf("slow group took %v s, want about the statement_timeout", v)
		}
		if v := s.must(t, "pg_exporter_last_scrape_error"); v != 1 {
			t.Errorf("pg_exporter_last_scrape_error = %v, want 1", v)
		}
		if v := s.must(t, "pg_up"); v != 1 {
			t.Errorf("pg_up = %v, want 1", v)
		}
		s.must(t, "pg_stat_database_xact_commit", "datname", "postgres")
		s.must(t, "pg_database_size_bytes", "datname", "postgres")
	})

	t.Run("budget spent", func(t *testing.T) {
		col := pgmetrics.New(pg, log, pgmetrics.WithBudget(300*time.Millisecond))
		pgmetrics.AddQueryGroup(col, "slow", "SELECT pg_sleep(30)", true)
		start := time.Now()
		s := gather(t, newRegistry(t, col))
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("scrape took %v, budget 300ms", d)
		}
		for _, g := range []string{"slow", "database", "archiver"} {
			if v := s.must(t, "pg_scrape_collector_success", "collector", g); v != 0 {
				t.Errorf("pg_scrape_collector_success{collector=%q} = %v, want 0", g, v)
			}
		}
		if len(s["pg_stat_database_xact_commit"]) != 0 {
			t.Errorf("metrics of a group that ran out of budget are reported")
		}
		if v := s.must(t, "pg_exporter_last_scrape_error"); v != 1 {
			t.Errorf("pg_exporter_last_scrape_error = %v, want 1", v)
		}
		checkFilesystems(t, s, pg.DataDir())
		// The next scrape gets a fresh connection and everything back.
		s = gather(t, newRegistry(t, pgmetrics.New(pg, log)))
		if v := s.must(t, "pg_exporter_last_scrape_error"); v != 0 {
			t.Errorf("after a spent budget: pg_exporter_last_scrape_error = %v, want 0", v)
		}
	})

	t.Run("metrics connection busy, HA pool free", func(t *testing.T) {
		_, release, err := pg.MetricsConn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		col := pgmetrics.New(pg, log, pgmetrics.WithBudget(300*time.Millisecond))
		s := gather(t, newRegistry(t, col))
		if v := s.must(t, "pg_up"); v != 0 {
			t.Errorf("pg_up with the metrics connection taken = %v, want 0", v)
		}
		// The HA loop's pooled connections are untouched by a stuck scrape.
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = pg.Status(sctx)
		scancel()
		if err != nil {
			t.Errorf("Status while the metrics connection is held: %v", err)
		}
		release()
	})

	t.Run("server stopped", func(t *testing.T) {
		if err := pg.Stop(ctx, postgres.StopFast); err != nil {
			t.Fatal(err)
		}
		s := gather(t, newRegistry(t, pgmetrics.New(pg, log)))
		if v := s.must(t, "pg_up"); v != 0 {
			t.Errorf("pg_up = %v, want 0", v)
		}
		if v := s.must(t, "pg_exporter_last_scrape_error"); v != 1 {
			t.Errorf("pg_exporter_last_scrape_error = %v, want 1", v)
		}
		if len(s["pg_stat_database_xact_commit"]) != 0 || len(s["pg_scrape_collector_success"]) != 0 {
			t.Errorf("a stopped server's query metrics are reported")
		}
		checkFilesystems(t, s, pg.DataDir())
	})
}
