//go:build unix

package handlers

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dbpilot/dbpilot/internal/localhost"
)

// newTestRunner returns a Runner logging everything (DEBUG and up) into an
// observer.
func newTestRunner(t *testing.T, set Set, opts ...Option) (*Runner, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	if set.User == "" {
		set.User = testUser(t)
	}
	return NewRunner(zap.New(core), set, opts...), logs
}

// testUser returns the OS user handlers run as in tests: "" (the test's own
// user) unless the tests run as root, which handlers refuse; then
// $DBPILOT_TEST_HANDLER_USER or postgres, skipping if it does not exist.
func testUser(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return ""
	}
	name := cmp.Or(os.Getenv("DBPILOT_TEST_HANDLER_USER"), "postgres")
	if _, err := user.Lookup(name); err != nil {
		t.Skipf("tests run as root and handler user %q does not exist (%v): set DBPILOT_TEST_HANDLER_USER", name, err)
	}
	return name
}

// testDir returns a new temporary directory the handler user can write to
// (its parents made traversable).
func testDir(t *testing.T) string {
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

// shell returns a Spec running script with extra environment variables
// given as key, value pairs.
func shell(script string, kv ...string) *Spec {
	sp := &Spec{Shell: script}
	if len(kv) > 0 {
		sp.Env = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			sp.Env[kv[i]] = kv[i+1]
		}
	}
	return sp
}

// readPID reads a decimal pid written by a handler to path.
func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("pid file %s: bad pid %q", path, b)
	}
	return pid
}

// processGone reports whether pid no longer runs: it does not exist, or it
// is a zombie waiting for a parent (possibly init) to reap it.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// Format: pid (comm) state ...; comm may contain spaces and parens.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] == 'Z' || s[i+2] == 'X'
}

// killOnCleanup kills pid (a process this test caused to be started and that
// is expected to outlive its handler) when the test ends.
func killOnCleanup(t *testing.T, pid int) {
	t.Cleanup(func() {
		if !processGone(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// outputLines returns the "line" fields of the "handler output" events for
// handler phase and stream, in order.
func outputLines(logs *observer.ObservedLogs, phase Phase, stream string) []string {
	var out []string
	for _, e := range logs.FilterMessage("handler output").All() {
		m := e.ContextMap()
		if m["handler"] == string(phase) && m["stream"] == stream {
			out = append(out, m["line"].(string))
		}
	}
	return out
}

// finishedEvents returns the "handler finished" events for phase.
func finishedEvents(logs *observer.ObservedLogs, phase Phase) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range logs.FilterMessage("handler finished").All() {
		if e.ContextMap()["handler"] == string(phase) {
			out = append(out, e)
		}
	}
	return out
}
