package postgres

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/internal/testutil"
)

// childConfigEnv makes the test binary act as a tiny agent (see runChild)
// instead of running tests; its value is the JSON-encoded Config.
const childConfigEnv = "DBPILOT_PG_TEST_CHILD_CONFIG"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childConfigEnv); cfg != "" {
		os.Exit(runChild(cfg))
	}
	os.Exit(m.Run())
}

// runChild starts PostgreSQL as a primary, prints "ready" and blocks until
// stdin is closed (or it is killed).
func runChild(cfgJSON string) int {
	var cfg Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 2
	}
	log, err := zap.NewDevelopment()
	if err != nil {
		return 2
	}
	inst, err := New(cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := inst.Start(ctx, RolePrimary, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	if err := inst.Stop(ctx, StopFast); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// Test passwords contain quotes, backslashes, colons and spaces to exercise
// every quoting path (pwfile, PGPASSFILE, primary_conninfo, SQL literal).
const (
	testSuperuserPassword   = `su'per \secret`
	testReplicationPassword = `re:pl'\pw x`
)

// testBinDir returns the newest /usr/lib/postgresql/<major>/bin, skipping
// the test if PostgreSQL is not installed.
func testBinDir(t testing.TB) string {
	t.Helper()
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(matches) == 0 {
		t.Skip("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin")
	}
	major := func(p string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return n
	}
	sort.Slice(matches, func(i, j int) bool { return major(matches[i]) < major(matches[j]) })
	return filepath.Dir(matches[len(matches)-1])
}

// testRoot returns a fresh directory the postgres OS user can traverse.
func testRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dbpilot-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // registered first: runs after every Stop
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testConfig(t *testing.T, root, name string) Config {
	osUser := ""
	if os.Geteuid() == 0 {
		osUser = "postgres"
	}
	return Config{
		NodeName:      name,
		BinDir:        testBinDir(t),
		DataDir:       filepath.Join(root, name, "data"),
		ListenAddress: "127.0.0.1",
		Port:          freePort(t),
		OSUser:        osUser,
		Superuser:     Credentials{Username: "dbpilot", Password: testSuperuserPassword},
		Replication:   Credentials{Username: "replicator", Password: testReplicationPassword},
		InitdbArgs:    []string{"--no-sync"},
		// Tests only: no fsync (crash tests use SIGQUIT/SIGKILL, not power loss).
		Parameters: map[string]string{"fsync": "off", "max_wal_senders": "5"},
	}
}

// newNode returns an Instance whose server is stopped (immediately) when
// the test ends; on failure the tail of its server log is printed.
func newNode(t *testing.T, root, name string) *Instance {
	t.Helper()
	inst, err := New(testConfig(t, root, name), zaptest.NewLogger(t).With(zap.String("node", name)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := inst.Stop(ctx, StopImmediate); err != nil {
			t.Errorf("cleanup %s: %v", name, err)
		}
		if t.Failed() {
			tail, _ := readTail(inst.cfg.LogFile, 3<<10)
			t.Logf("%s server log tail:\n%s", name, tail)
		}
	})
	return inst
}

func upstreamOf(inst *Instance) Upstream {
	return Upstream{Host: "127.0.0.1", Port: inst.cfg.Port, Name: inst.cfg.NodeName}
}

func mustExec(t *testing.T, ctx context.Context, inst *Instance, sql string) {
	t.Helper()
	conn, err := inst.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s on %s: %v", sql, inst.cfg.NodeName, err)
	}
}

// rowCount returns the number of rows in table t on inst.
func rowCount(ctx context.Context, inst *Instance) (int, error) {
	conn, err := inst.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n)
	return n, err
}

func wantRows(ctx context.Context, inst *Instance, want int) func() error {
	return func() error {
		n, err := rowCount(ctx, inst)
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("%s has %d rows, want %d", inst.cfg.NodeName, n, want)
		}
		return nil
	}
}

// streamingFrom checks that inst is a replica streaming from up on timeline tli.
func streamingFrom(ctx context.Context, inst *Instance, up Upstream, tli uint32) func() error {
	return func() error {
		st, err := inst.Status(ctx)
		if err != nil {
			return err
		}
		if !st.Running || !st.Accepting || !st.InRecovery || !st.Streaming ||
			st.UpstreamPort != up.Port || st.UpstreamHost != up.Host || st.Timeline != tli || st.ReceiveLSN == 0 ||
			st.ReplayLagSeconds < 0 || st.ReplayLagSeconds > 60 {
			return fmt.Errorf("%s status %+v, want streaming from %s:%d on timeline %d", inst.cfg.NodeName, st, up.Host, up.Port, tli)
		}
		return nil
	}
}

func checkOwnedDir(t *testing.T, dir string) {
	t.Helper()
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("%s mode %v, want 0700", dir, st.Mode().Perm())
	}
	if os.Geteuid() == 0 {
		if uid := st.Sys().(*syscall.Stat_t).Uid; uid == 0 {
			t.Errorf("%s owned by root, want the postgres user", dir)
		}
	}
}

// TestReplicationFailoverRewind walks one failover end to end: initdb and
// bootstrap a primary, clone and stream a replica, make it a synchronous
// standby, kill the primary, promote the replica, rewind the old primary and
// let it follow the new one on timeline 2.
func TestReplicationFailoverRewind(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	root := testRoot(t)
	n1, n2 := newNode(t, root, "n1"), newNode(t, root, "n2")

	// Primary.
	if err := n1.Initdb(ctx); err != nil {
		t.Fatal(err)
	}
	checkOwnedDir(t, n1.DataDir())
	if err := n1.Initdb(ctx); !errors.Is(err, ErrAlreadyInitialized) {
		t.Fatalf("second Initdb = %v, want ErrAlreadyInitialized", err)
	}
	if err := n1.Start(ctx, RolePrimary, nil); err != nil {
		t.Fatal(err)
	}
	if err := n1.Start(ctx, RolePrimary, nil); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Start = %v, want ErrAlreadyRunning", err)
	}
	for range 2 { // idempotent
		if err := n1.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mustExec(t, ctx, n1, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	mustExec(t, ctx, n1, "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3) g")

	// Replica.
	if err := n2.BaseBackup(ctx, upstreamOf(n1)); err != nil {
		t.Fatal(err)
	}
	checkOwnedDir(t, n2.DataDir())
	if err := n2.BaseBackup(ctx, upstreamOf(n1)); !errors.Is(err, ErrDataDirNotEmpty) {
		t.Fatalf("second BaseBackup = %v, want ErrDataDirNotEmpty", err)
	}
	up1 := upstreamOf(n1)
	if err := n2.Start(ctx, RoleReplica, &up1); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, "n2 streaming from n1", streamingFrom(ctx, n2, up1, 1))
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, "rows on n2", wantRows(ctx, n2, 3))
	if err := n2.Bootstrap(ctx); !errors.Is(err, ErrWrongRole) {
		t.Fatalf("Bootstrap on replica = %v, want ErrWrongRole", err)
	}
	if err := n1.Follow(ctx, upstreamOf(n2)); !errors.Is(err, ErrWrongRole) {
		t.Fatalf("Follow on primary = %v, want ErrWrongRole", err)
	}
	cd1, err := n1.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cd2, err := n2.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cd1.SystemIdentifier == "" || cd1.SystemIdentifier != cd2.SystemIdentifier {
		t.Errorf("system identifiers %q (n1) and %q (n2) differ", cd1.SystemIdentifier, cd2.SystemIdentifier)
	}
	if cd1.ClusterState != "in production" || cd2.ClusterState != "in archive recovery" || cd1.Timeline != 1 {
		t.Errorf("control data n1 %+v, n2 %+v", cd1, cd2)
	}

	// Synchronous replication.
	if err := n1.SetSynchronousStandbys(ctx, []string{"n2"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, "n2 quorum standby of n1", func() error {
		st, err := n1.Status(ctx)
		if err != nil {
			return err
		}
		if st.InRecovery || st.Timeline != 1 || st.WriteLSN == 0 || st.SyncStandbyNames != `ANY 1 ("n2")` ||
			len(st.Replicas) != 1 || st.Replicas[0].Name != "n2" || st.Replicas[0].SyncState != "quorum" ||
			st.Replicas[0].State != "streaming" || st.Replicas[0].FlushLSN == 0 {
			return fmt.Errorf("n1 status %+v", st)
		}
		return nil
	})
	mustExec(t, ctx, n1, "INSERT INTO t VALUES (4, 'sync')") // would hang without a sync standby
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, "row 4 on n2", wantRows(ctx, n2, 4))

	// Failover: kill n1, promote n2.
	if err := n1.Stop(ctx, StopImmediate); err != nil {
		t.Fatal(err)
	}
	if n1.Running() {
		t.Fatal("n1 still running after Stop")
	}
	if err := n1.Stop(ctx, StopFast); err != nil {
		t.Fatalf("Stop of stopped instance = %v, want nil", err)
	}
	if err := n2.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n2.Promote(ctx); err != nil {
		t.Fatalf("second Promote = %v, want nil", err)
	}
	st2, err := n2.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st2.InRecovery || st2.Timeline != 2 || st2.LSN() == 0 {
		t.Fatalf("n2 after promote: %+v", st2)
	}
	mustExec(t, ctx, n2, "INSERT INTO t VALUES (5, 'new primary'), (6, 'new primary')")

	// Rewind n1 and let it follow n2.
	up2 := upstreamOf(n2)
	if err := n1.Rewind(ctx, up2); err != nil {
		t.Fatal(err)
	}
	cd2, err = n2.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cd2.Timeline != 2 || cd2.ClusterState != "in production" || cd2.SystemIdentifier != cd1.SystemIdentifier {
		t.Errorf("n2 control data after promotion and checkpoint: %+v", cd2)
	}
	if err := n1.Start(ctx, RolePrimary, nil); !errors.Is(err, ErrWrongRole) {
		t.Fatalf("starting the rewound n1 as primary = %v, want ErrWrongRole", err)
	}
	if err := n1.Start(ctx, RoleReplica, &up2); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, "n1 streaming from n2", streamingFrom(ctx, n1, up2, 2))
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, "rows on n1", wantRows(ctx, n1, 6))
	if err := n1.Follow(ctx, up2); err != nil { // reload path on a running replica
		t.Fatal(err)
	}
	mustExec(t, ctx, n2, "INSERT INTO t VALUES (7, 'after follow')")
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, "row 7 on n1", wantRows(ctx, n1, 7))

	// Synchronous standbys can be set on a replica ahead of a promotion; it
	// keeps streaming.
	if err := n1.SetSynchronousStandbys(ctx, []string{"n2"}); err != nil {
		t.Fatal(err)
	}

	// A second Instance for the same data directory finds the postmaster
	// through postmaster.pid, and keeps the server's primary_conninfo when
	// it has to re-render.
	other, err := New(n1.cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if !other.Running() {
		t.Fatal("other Instance does not see n1 running")
	}
	if err := other.SetSynchronousStandbys(ctx, nil); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, n2, "INSERT INTO t VALUES (8, 'after re-render by other')")
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, "row 8 on n1", wantRows(ctx, n1, 8))
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, "n1 still streaming from n2", streamingFrom(ctx, n1, up2, 2))
	if err := other.Start(ctx, RoleReplica, &up2); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("Start via other Instance = %v, want ErrAlreadyRunning", err)
	}
	if err := other.RemoveDataDir(); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("RemoveDataDir while running = %v, want ErrAlreadyRunning", err)
	}
	if err := other.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	if other.Running() {
		t.Fatal("n1 still running after Stop via postmaster.pid")
	}
	// n1 started the postmaster: it sees the exit once its reaper has run.
	testutil.Eventually(t, 5*time.Second, 100*time.Millisecond, "n1 sees its postmaster gone", func() error {
		if n1.Running() {
			return errors.New("still running")
		}
		return nil
	})
	cd, err := n1.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cd.ClusterState != "shut down in recovery" {
		t.Errorf("n1 cluster state after fast stop as replica = %q", cd.ClusterState)
	}
	checkNoSecretsLeft(t, n1, n2)
	if err := n1.RemoveDataDir(); err != nil {
		t.Fatal(err)
	}
	if n1.IsInitialized() {
		t.Fatal("n1 still initialized after RemoveDataDir")
	}
}

// checkNoSecretsLeft asserts that no password reached a server log, that
// temporary password files were removed, and that the rendered config and
// the log file have the expected modes and owner.
func checkNoSecretsLeft(t *testing.T, nodes ...*Instance) {
	t.Helper()
	for _, n := range nodes {
		log, err := os.ReadFile(n.cfg.LogFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, pw := range []string{testSuperuserPassword, testReplicationPassword, "secret", `pl'`} {
			if bytes.Contains(log, []byte(pw)) {
				t.Errorf("%s contains a password fragment %q", n.cfg.LogFile, pw)
			}
		}
		tmp, _ := filepath.Glob(filepath.Join(filepath.Dir(n.DataDir()), ".p*"))
		if len(tmp) > 0 {
			t.Errorf("temporary password files left behind: %v", tmp)
		}
		for path, mode := range map[string]os.FileMode{
			n.cfg.LogFile: 0o640,
			filepath.Join(n.DataDir(), "postgresql.conf"): 0o600,
			filepath.Join(n.DataDir(), "pg_hba.conf"):     0o600,
		} {
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != mode {
				t.Errorf("%s mode %v, want %v", path, st.Mode().Perm(), mode)
			}
			if os.Geteuid() == 0 && st.Sys().(*syscall.Stat_t).Uid == 0 {
				t.Errorf("%s owned by root, want the postgres user", path)
			}
		}
	}
}

// postgresProcessesIn returns the live processes whose working directory is
// dir: a postmaster and its backends all chdir to the data directory.
func postgresProcessesIn(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd"); err == nil && cwd == dir && processAlive(pid, dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestPdeathsigKillsPostmaster checks the fencing guarantee: when the agent
// that started PostgreSQL is SIGKILLed, the postmaster and its backends die.
func TestPdeathsigKillsPostmaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := testRoot(t)
	inst := newNode(t, root, "n3")
	if err := inst.Initdb(ctx); err != nil {
		t.Fatal(err)
	}

	// A postmaster that exits while starting is reported with its log.
	badCfg := inst.cfg
	badCfg.Parameters = map[string]string{"shared_buffers": "plenty"}
	bad, err := New(badCfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	err = bad.Start(ctx, RolePrimary, nil)
	if !errors.Is(err, ErrPostmasterExited) || !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Fatalf("Start with a bad parameter = %v, want ErrPostmasterExited with the log tail", err)
	}

	cfgJSON, err := json.Marshal(inst.cfg)
	if err != nil {
		t.Fatal(err)
	}

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childConfigEnv+"="+string(cfgJSON))
	var stderr bytes.Buffer
	child.Stderr = &stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		stdin.Close()
		if !waited {
			child.Process.Kill()
			child.Wait()
		}
		if t.Failed() {
			t.Logf("child stderr:\n%s", stderr.String())
		}
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("child said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("child did not start PostgreSQL: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("child did not start PostgreSQL in time")
	}

	pid, ok := inst.PostmasterPID()
	if !ok {
		t.Fatal("no running postmaster found through postmaster.pid")
	}
	if len(postgresProcessesIn(inst.DataDir())) < 2 {
		t.Fatalf("expected a postmaster and backends in %s", inst.DataDir())
	}
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != syscall.Getpgrp() {
		t.Fatalf("postmaster process group %d (%v), want the agent's %d", pgid, err, syscall.Getpgrp())
	}

	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	waited = true
	testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, "postmaster killed with its agent", func() error {
		if processAlive(pid, inst.DataDir()) {
			return fmt.Errorf("postmaster %d still alive", pid)
		}
		if pids := postgresProcessesIn(inst.DataDir()); len(pids) > 0 {
			return fmt.Errorf("postgres processes still alive: %v", pids)
		}
		return nil
	})
	if inst.Running() {
		t.Fatal("Running() = true after the postmaster was killed")
	}

	// The stale postmaster.pid left by SIGKILL does not block a restart. As
	// the HA loop does before promoting: start as a standby without upstream,
	// set the synchronous standbys, promote.
	if err := inst.Start(ctx, RoleReplica, nil); err != nil {
		t.Fatal(err)
	}
	st, err := inst.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.InRecovery || st.Streaming || st.UpstreamHost != "" {
		t.Fatalf("standby without upstream: %+v", st)
	}
	if err := inst.SetSynchronousStandbys(ctx, []string{"n4"}); err != nil {
		t.Fatal(err)
	}
	if err := inst.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = inst.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.InRecovery || st.Timeline != 2 || st.SyncStandbyNames != `ANY 1 ("n4")` {
		t.Fatalf("after promotion: %+v", st)
	}
	// And back to asynchronous replication.
	if err := inst.SetSynchronousStandbys(ctx, nil); err != nil {
		t.Fatal(err)
	}
}
