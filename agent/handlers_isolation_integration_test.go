package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/agent/localcluster"
	"github.com/dbpilot/dbpilot/internal/localhost"
)

// handlerDir returns a temporary directory the handlers' OS user (postgres
// when the tests run as root) can write to.
func handlerDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := localhost.MkdirTraversable(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// logTime returns the time of the first agent log line with msg, or fails.
func logTime(t *testing.T, n *localcluster.Node, msg string) time.Time {
	t.Helper()
	b, err := os.ReadFile(n.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			TS  string `json:"ts"`
			Msg string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Msg != msg {
			continue
		}
		ts, err := time.Parse("2006-01-02T15:04:05.000Z0700", l.TS)
		if err != nil {
			t.Fatalf("log time %q: %v", l.TS, err)
		}
		return ts
	}
	t.Fatalf("%s: no %q in the agent log", n.Name, msg)
	return time.Time{}
}

// TestSIGTERMDoesNotWaitForAHangingOnChange (issue 10 item 5): an onChange
// handler that hangs (sleep 600, timeout 60s) delays the agent's exit on
// SIGTERM by no more than a few seconds after its PostgreSQL has stopped; the
// handler's processes are gone, and the handlers ran as a non-root user.
func TestSIGTERMDoesNotWaitForAHangingOnChange(t *testing.T) {
	dir := handlerDir(t)
	c := startCluster(t, localcluster.Options{Nodes: 1, Handlers: map[string]any{
		"onChange": map[string]any{
			"shell":   `id -u > ` + dir + `/uid; sleep 600 & echo $! > ` + dir + `/sleep.pid; wait`,
			"timeout": "60s",
		},
	}})
	waitFor(t, c, 90*time.Second, "a primary", healthy(c, false))
	pidFile := filepath.Join(dir, "sleep.pid")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(pidFile); err == nil && bytes.HasSuffix(b, []byte("\n")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the onChange handler never started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(pidFile)
	sleepPID, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(sleepPID, syscall.SIGKILL) })
	if uid, _ := os.ReadFile(filepath.Join(dir, "uid")); strings.TrimSpace(string(uid)) == "0" || len(uid) == 0 {
		t.Errorf("onChange ran as uid %q, want a non-root uid", uid)
	}

	start := time.Now()
	if err := c.Stop(0, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	exited := time.Now()
	pgStopped := logTime(t, c.Nodes[0], "postgres stopped")
	t.Logf("SIGTERM → exit %s; PostgreSQL stopped → exit %s", exited.Sub(start), exited.Sub(pgStopped))
	if d := exited.Sub(pgStopped); d > 6*time.Second {
		t.Errorf("the agent exited %s after PostgreSQL stopped, want a few seconds at most", d)
	}
	waitLog(t, c.Nodes[0], time.Second, "onChange handler still running at stop; killing it")
	if err := syscall.Kill(sleepPID, 0); err == nil {
		if st, _ := os.ReadFile("/proc/" + strconv.Itoa(sleepPID) + "/stat"); !bytes.Contains(st, []byte(") Z")) {
			t.Errorf("the onChange's sleep %d outlived the agent", sleepPID)
		}
	}
}

// TestDaprSidecarDownDoesNotStopTheDatabase (issue 10 item 4): with
// events.dapr pointing at a closed port (daprd down), the agents start, the
// cluster bootstraps with a writable primary, and it fails over when the
// primary's host dies.
func TestDaprSidecarDownDoesNotStopTheDatabase(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := startCluster(t, localcluster.Options{Nodes: 2, Events: map[string]any{
		"dapr": map[string]any{"http_address": addr, "pubsub": "dbpilot-pubsub", "topic": "dbpilot.agent.events"},
	}})
	s := waitFor(t, c, 90*time.Second, "a primary and a streaming replica with daprd down", healthy(c, false))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pi := c.Index(s.Leader)
	if !writable(ctx, c, pi) {
		t.Fatalf("primary %s is not writable", s.Leader)
	}
	waitLog(t, c.Nodes[pi], 30*time.Second, "event delivery failed, retrying", addr)

	old := s.Leader
	if err := c.Kill(pi); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, c, 60*time.Second, "a new primary after SIGKILL of the primary host", func(s localcluster.Status) bool {
		return s.Leader != "" && s.Leader != old && len(s.Primaries()) == 1
	})
	ni := c.Index(s.Leader)
	for deadline := time.Now().Add(30 * time.Second); !writable(ctx, c, ni); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("new primary %s never became writable", s.Leader)
		}
	}
}
