//go:build unix

package handlers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/dbpilot/dbpilot/internal/testutil"
)

func TestRunDeliversEnvironment(t *testing.T) {
	dir := testDir(t)
	out := filepath.Join(dir, "env.out")
	t.Setenv("HANDLERS_TEST_PARENT", "from-parent")
	// The agent's own DBPILOT_* variables (passwords) stay with the agent.
	t.Setenv("DBPILOT_SUPERUSER_PASSWORD", "secret")
	script := `for v in DBPILOT_EVENT DBPILOT_ROLE DBPILOT_CLUSTER DBPILOT_NODE DBPILOT_LEADER DBPILOT_TERM DBPILOT_REASON DBPILOT_SUPERUSER_PASSWORD HANDLERS_TEST_PARENT CUSTOM; do
	eval "printf '%s=%s\n' $v \"\$$v\""
done > "$OUT"
printf 'PWD=%s\n' "$(pwd -P)" >> "$OUT"`
	sp := shell(script, "OUT", out, "CUSTOM", "from spec")
	sp.Dir = dir
	r, _ := newTestRunner(t, Set{PreStart: sp})

	res := r.Run(t.Context(), PreStart, Env{
		Role: "primary", Cluster: "c1", Node: "n1", Leader: "n1",
		Reason: "holding the leader key", Term: 42,
	})
	if res.Status != StatusOK || res.ExitCode != 0 || res.Err != nil || !res.OK() {
		t.Fatalf("Run = %+v, want StatusOK", res)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"DBPILOT_EVENT=preStart", // empty Event defaults to the phase
		"DBPILOT_ROLE=primary",
		"DBPILOT_CLUSTER=c1",
		"DBPILOT_NODE=n1",
		"DBPILOT_LEADER=n1",
		"DBPILOT_TERM=42",
		"DBPILOT_REASON=holding the leader key",
		"DBPILOT_SUPERUSER_PASSWORD=",
		"HANDLERS_TEST_PARENT=from-parent",
		"CUSTOM=from spec",
		"PWD=" + realDir,
	}, "\n") + "\n"
	if string(b) != want {
		t.Errorf("handler saw:\n%s\nwant:\n%s", b, want)
	}

	// An explicit Event is passed through.
	res = r.Run(t.Context(), PreStart, Env{Event: "bootstrap"})
	if res.Status != StatusOK {
		t.Fatalf("Run = %+v", res)
	}
	if b, _ := os.ReadFile(out); !strings.HasPrefix(string(b), "DBPILOT_EVENT=bootstrap\n") {
		t.Errorf("handler saw:\n%s\nwant DBPILOT_EVENT=bootstrap first", b)
	}
}

func TestRunExitStatus(t *testing.T) {
	tests := []struct {
		name     string
		spec     *Spec
		status   Status
		exitCode int
	}{
		{"shell exit 0", shell("exit 0"), StatusOK, 0},
		{"shell exit 7", shell("exit 7"), StatusFailed, 7},
		{"command exit 3", &Spec{Command: []string{"/bin/sh", "-c", "exit 3"}}, StatusFailed, 3},
		{"command in PATH", &Spec{Command: []string{"false"}}, StatusFailed, 1},
		{"killed by a signal we did not send", shell("kill -9 $$"), StatusFailed, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newTestRunner(t, Set{PostStop: tt.spec})
			res := r.Run(t.Context(), PostStop, Env{})
			if res.Phase != PostStop || res.Status != tt.status || res.ExitCode != tt.exitCode {
				t.Fatalf("Run = %+v, want status %s exit code %d", res, tt.status, tt.exitCode)
			}
			if (res.Err == nil) != (tt.status == StatusOK) {
				t.Errorf("Err = %v for status %s", res.Err, res.Status)
			}
			if res.OK() != (tt.status == StatusOK) {
				t.Errorf("OK() = %v for status %s", res.OK(), res.Status)
			}
			var exitErr *exec.ExitError
			if tt.exitCode > 0 && !errors.As(res.Err, &exitErr) {
				t.Errorf("Err = %v, want it to wrap *exec.ExitError", res.Err)
			}
			if res.Duration <= 0 {
				t.Errorf("Duration = %s, want > 0", res.Duration)
			}
		})
	}
}

func TestRunTimeoutKillsProcessGroup(t *testing.T) {
	dir := testDir(t)
	leaderFile, childFile := filepath.Join(dir, "leader.pid"), filepath.Join(dir, "child.pid")
	// The background sleep is a grandchild of ours that also holds the
	// stdout pipe: only killing the whole group ends it and lets Wait return
	// without waiting for WaitDelay.
	sp := shell(`echo $$ > "$LEADER"; sleep 100 & echo $! > "$CHILD"; echo started; sleep 100`,
		"LEADER", leaderFile, "CHILD", childFile)
	sp.Timeout = time.Second
	r, logs := newTestRunner(t, Set{PreStop: sp}, WithWaitDelay(30*time.Second))

	res := r.Run(t.Context(), PreStop, Env{})
	if res.Status != StatusTimedOut || res.ExitCode != -1 || !errors.Is(res.Err, ErrTimeout) {
		t.Fatalf("Run = %+v, want StatusTimedOut, exit code -1, ErrTimeout", res)
	}
	// Had a process of the group survived holding stdout, Wait would have
	// taken the 30s WaitDelay.
	if res.Duration > 10*time.Second {
		t.Errorf("Duration = %s, want about the 1s timeout", res.Duration)
	}
	leader, child := readPID(t, leaderFile), readPID(t, childFile)
	killOnCleanup(t, leader)
	killOnCleanup(t, child)
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, "handler and its background child to be gone", func() bool {
		return processGone(leader) && processGone(child)
	})
	if got := outputLines(logs, PreStop, "stdout"); len(got) != 1 || got[0] != "started" {
		t.Errorf("stdout lines = %q, want [started]", got)
	}
	ev := finishedEvents(logs, PreStop)
	if len(ev) != 1 || ev[0].Level != zapcore.WarnLevel || ev[0].ContextMap()["status"] != "timed_out" {
		t.Errorf("finished events = %+v, want one WARN timed_out", ev)
	}
}

func TestRunCanceledKillsProcessGroup(t *testing.T) {
	dir := testDir(t)
	childFile := filepath.Join(dir, "child.pid")
	sp := shell(`sleep 100 & echo $! > "$CHILD"; sleep 100`, "CHILD", childFile)
	sp.Timeout = time.Minute
	r, _ := newTestRunner(t, Set{PreStop: sp})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan Result, 1)
	go func() { done <- r.Run(ctx, PreStop, Env{}) }()
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "background child to start", func() bool {
		b, err := os.ReadFile(childFile)
		return err == nil && strings.HasSuffix(string(b), "\n")
	})
	child := readPID(t, childFile)
	killOnCleanup(t, child)
	cancel()

	var res Result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if res.Status != StatusCanceled || res.ExitCode != -1 || !errors.Is(res.Err, context.Canceled) {
		t.Fatalf("Run = %+v, want StatusCanceled wrapping context.Canceled", res)
	}
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, "background child to be gone", func() bool { return processGone(child) })

	// A context that has already ended starts nothing.
	res = r.Run(ctx, PreStop, Env{})
	if res.Status != StatusCanceled || res.Duration != 0 || !errors.Is(res.Err, context.Canceled) {
		t.Errorf("Run with a done context = %+v, want StatusCanceled without starting", res)
	}
}

func TestRunWaitDelayBoundsEscapedOutputHolder(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("setsid not installed")
	}
	dir := testDir(t)
	childFile := filepath.Join(dir, "child.pid")
	// setsid moves the child out of the handler's process group, so the
	// group kill misses it, yet it still holds stdout open.
	sp := shell(`setsid sleep 100 & echo $! > "$CHILD"; sleep 100`, "CHILD", childFile)
	sp.Timeout = 500 * time.Millisecond
	r, _ := newTestRunner(t, Set{OnChange: sp}, WithWaitDelay(500*time.Millisecond))

	done := make(chan Result, 1)
	go func() { done <- r.Run(t.Context(), OnChange, Env{}) }()
	var res Result
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run hung on an output pipe held by an escaped grandchild")
	}
	killOnCleanup(t, readPID(t, childFile))
	if res.Status != StatusTimedOut {
		t.Errorf("Run = %+v, want StatusTimedOut", res)
	}
}

// TestRunNormalExitKillsBackgroundChildren: a handler that backgrounds a
// child and exits 0 (issue 10: "sleep 1000 & exit 0" leaked one process per
// health run) leaves nothing behind: the child is gone when Run returns, and
// Run does not wait for the output pipe the child held.
func TestRunNormalExitKillsBackgroundChildren(t *testing.T) {
	dir := testDir(t)
	childFile := filepath.Join(dir, "child.pid")
	sp := shell(`sleep 1000 & echo $! > "$CHILD"; echo done; exit 0`, "CHILD", childFile)
	r, logs := newTestRunner(t, Set{Health: sp}, WithWaitDelay(20*time.Second))

	res := r.Run(t.Context(), Health, Env{})
	child := readPID(t, childFile)
	killOnCleanup(t, child)
	if res.Status != StatusOK || res.ExitCode != 0 {
		t.Fatalf("Run = %+v, want StatusOK: the handler itself exited 0", res)
	}
	if res.Duration > 10*time.Second {
		t.Errorf("Duration = %s: Run waited for the child's output pipe", res.Duration)
	}
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, fmt.Sprintf("background child %d to be gone after the run", child), func() bool { return processGone(child) })
	if got := outputLines(logs, Health, "stdout"); len(got) != 1 || got[0] != "done" {
		t.Errorf("stdout lines = %q, want [done]", got)
	}
	if n := logs.FilterMessageSnippet("holding its output open").Len(); n != 0 {
		t.Errorf("got %d warnings about an abandoned output pipe, want 0", n)
	}
}

// TestRunCgroupCatchesSetsidChild: a child that leaves the process group
// (setsid) escapes the group kill; where the host offers a cgroup, the run's
// cgroup still catches it.
func TestRunCgroupCatchesSetsidChild(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("setsid not installed")
	}
	mode, why := DetectIsolation()
	if mode == IsolationProcessGroup {
		t.Skipf("no cgroup isolation on this host: %s", why)
	}
	dir := testDir(t)
	childFile := filepath.Join(dir, "child.pid")
	sp := shell(`setsid sleep 1000 > /dev/null 2>&1 & echo $! > "$CHILD"; sleep 0.2; exit 0`, "CHILD", childFile)
	r, _ := newTestRunner(t, Set{OnChange: sp})

	res := r.Run(t.Context(), OnChange, Env{})
	child := readPID(t, childFile)
	killOnCleanup(t, child)
	if res.Status != StatusOK {
		t.Fatalf("Run = %+v, want StatusOK", res)
	}
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, fmt.Sprintf("setsid child %d to be gone after the run (isolation %s)", child, mode), func() bool { return processGone(child) })
}

// TestRunAsUnprivilegedUser: handlers never run as root. When the tests run
// as root the handler runs as the configured user (uid, gid, HOME, USER);
// otherwise as the test's own user.
func TestRunAsUnprivilegedUser(t *testing.T) {
	dir := testDir(t)
	out := filepath.Join(dir, "id")
	r, _ := newTestRunner(t, Set{PreStart: shell(`printf '%s %s %s %s\n' "$(id -u)" "$(id -g)" "$HOME" "$USER" > "$OUT"`, "OUT", out)})
	if res := r.Run(t.Context(), PreStart, Env{}); res.Status != StatusOK {
		t.Fatalf("Run = %+v", res)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 || f[0] == "0" || f[1] == "0" {
		t.Fatalf("handler ran with uid/gid %q, want non-root", b)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(testUser(t))
		if err != nil {
			t.Fatal(err)
		}
		if want := u.Uid + " " + u.Gid + " " + u.HomeDir + " " + u.Username; strings.TrimSpace(string(b)) != want {
			t.Errorf("handler saw %q, want %q", strings.TrimSpace(string(b)), want)
		}
		// Explicitly root, or no user at all, is refused before anything starts.
		for _, name := range []string{"root", ""} {
			r.Update(Set{User: name, PreStart: shell("true")})
			if res := r.Run(t.Context(), PreStart, Env{}); res.Status != StatusStartFailed || !errors.Is(res.Err, ErrRunAsRoot) {
				t.Errorf("user %q: Run = %+v, want StatusStartFailed wrapping ErrRunAsRoot", name, res)
			}
		}
	} else if want := strconv.Itoa(os.Geteuid()); f[0] != want {
		t.Errorf("handler ran as uid %s, want the test's own %s", f[0], want)
	}
}

func TestRunStartFailed(t *testing.T) {
	dir := testDir(t)
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		spec *Spec
	}{
		{"missing absolute path", &Spec{Command: []string{filepath.Join(dir, "no-such-binary")}}},
		{"missing in PATH", &Spec{Command: []string{"dbpilot-no-such-binary-in-path"}}},
		{"not executable", &Spec{Command: []string{notExec}}},
		{"missing dir", &Spec{Command: []string{"true"}, Dir: filepath.Join(dir, "no-such-dir")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, logs := newTestRunner(t, Set{PreStart: tt.spec})
			res := r.Run(t.Context(), PreStart, Env{})
			if res.Status != StatusStartFailed || res.ExitCode != -1 || res.Err == nil || res.OK() {
				t.Fatalf("Run = %+v, want StatusStartFailed with an error", res)
			}
			ev := finishedEvents(logs, PreStart)
			if len(ev) != 1 || ev[0].Level != zapcore.WarnLevel || ev[0].ContextMap()["status"] != "start_failed" {
				t.Errorf("finished events = %+v, want one WARN start_failed", ev)
			}
		})
	}
}

func TestRunWithoutAHandler(t *testing.T) {
	r, _ := newTestRunner(t, Set{PreStart: &Spec{}}) // invalid: neither command nor shell

	res := r.Run(t.Context(), PostStop, Env{})
	if res.Status != StatusSkipped || !res.OK() || res.Err != nil {
		t.Errorf("Run(not configured) = %+v, want StatusSkipped, OK, no error", res)
	}
	res = r.Run(t.Context(), Phase("preFlight"), Env{})
	if res.Status != StatusStartFailed || !errors.Is(res.Err, ErrUnknownPhase) {
		t.Errorf("Run(unknown phase) = %+v, want StatusStartFailed wrapping ErrUnknownPhase", res)
	}
	res = r.Run(t.Context(), PreStart, Env{})
	if res.Status != StatusStartFailed || !errors.Is(res.Err, ErrInvalidSpec) {
		t.Errorf("Run(invalid spec) = %+v, want StatusStartFailed wrapping ErrInvalidSpec", res)
	}
	var fe *FieldError
	if !errors.As(res.Err, &fe) || fe.Path != "handlers.preStart" {
		t.Errorf("Run(invalid spec) error %v does not carry the FieldError for handlers.preStart", res.Err)
	}
}

func TestRunCapturesOutput(t *testing.T) {
	script := `echo "hello stdout"
echo "hello stderr" >&2
printf 'crlf line\r\n'
head -c 5000 /dev/zero | tr '\0' x; echo
echo "after long line"
printf 'tail without newline'`
	r, logs := newTestRunner(t, Set{OnChange: shell(script, "SECRET_TOKEN", "hunter2")})

	res := r.Run(t.Context(), OnChange, Env{Term: 9})
	if res.Status != StatusOK {
		t.Fatalf("Run = %+v", res)
	}
	wantOut := []string{"hello stdout", "crlf line", strings.Repeat("x", maxLineBytes), "after long line", "tail without newline"}
	if got := outputLines(logs, OnChange, "stdout"); fmt.Sprint(got) != fmt.Sprint(wantOut) {
		t.Errorf("stdout lines = %q\nwant %q", got, wantOut)
	}
	if got := outputLines(logs, OnChange, "stderr"); len(got) != 1 || got[0] != "hello stderr" {
		t.Errorf("stderr lines = %q, want [hello stderr]", got)
	}
	for _, e := range logs.FilterMessage("handler output").All() {
		m := e.ContextMap()
		if e.Level != zapcore.InfoLevel {
			t.Errorf("output line %q logged at %s, want INFO", m["line"], e.Level)
		}
		if _, truncated := m["truncated"]; truncated != (len(m["line"].(string)) == maxLineBytes) {
			t.Errorf("line of %d bytes: truncated field present = %v", len(m["line"].(string)), truncated)
		}
	}

	ev := finishedEvents(logs, OnChange)
	if len(ev) != 1 {
		t.Fatalf("got %d handler finished events, want 1", len(ev))
	}
	m := ev[0].ContextMap()
	if ev[0].Level != zapcore.InfoLevel || m["status"] != "ok" || m["exit_code"] != int64(0) || m["duration"] == nil {
		t.Errorf("handler finished = %s %v, want INFO status ok exit_code 0 with duration", ev[0].Level, m)
	}
	if m["output_discarded_bytes"] != int64(5000-maxLineBytes) {
		t.Errorf("output_discarded_bytes = %v, want %d", m["output_discarded_bytes"], 5000-maxLineBytes)
	}

	// The environment is never logged.
	for _, e := range logs.All() {
		if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), "hunter2") {
			t.Errorf("log event leaks the environment: %s %v", e.Message, e.ContextMap())
		}
	}
}

func TestRunOutputIsBounded(t *testing.T) {
	// 5000 short lines on stdout, 4 MB without a newline on stderr.
	r, logs := newTestRunner(t, Set{PreStart: shell(`seq 1 5000; head -c 4000000 /dev/zero >&2`)})

	res := r.Run(t.Context(), PreStart, Env{})
	if res.Status != StatusOK {
		t.Fatalf("Run = %+v, want StatusOK: the handler must not block on its output", res)
	}
	out := outputLines(logs, PreStart, "stdout")
	if len(out) != maxStreamLines || out[0] != "1" || out[len(out)-1] != fmt.Sprint(maxStreamLines) {
		t.Errorf("logged %d stdout lines (first %q), want the first %d", len(out), out[:min(1, len(out))], maxStreamLines)
	}
	if errOut := outputLines(logs, PreStart, "stderr"); len(errOut) != 1 || len(errOut[0]) != maxLineBytes {
		t.Errorf("logged %d stderr lines, want 1 truncated line", len(errOut))
	}
	ev := finishedEvents(logs, PreStart)
	if len(ev) != 1 || ev[0].ContextMap()["output_discarded_bytes"] == nil {
		t.Errorf("finished events = %v, want output_discarded_bytes", ev)
	}
}

func TestRunHealthLogLevels(t *testing.T) {
	dir := testDir(t)
	state := filepath.Join(dir, "state")
	if err := os.WriteFile(state, []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, logs := newTestRunner(t, Set{Health: shell(`echo checking; exit "$(cat "$STATE")"`, "STATE", state)})
	logs.TakeAll() // NewRunner's "handler isolation"

	if res := r.Run(t.Context(), Health, Env{}); res.Status != StatusOK {
		t.Fatalf("Run = %+v", res)
	}
	for _, e := range logs.TakeAll() {
		if e.Level != zapcore.DebugLevel {
			t.Errorf("successful health run logged %q at %s, want DEBUG", e.Message, e.Level)
		}
	}

	if err := os.WriteFile(state, []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res := r.Run(t.Context(), Health, Env{}); res.Status != StatusFailed || res.ExitCode != 2 {
		t.Fatalf("Run = %+v, want StatusFailed exit 2", res)
	}
	out := logs.FilterMessage("handler output").All()
	if len(out) != 1 || out[0].Level != zapcore.InfoLevel || out[0].ContextMap()["line"] != "checking" {
		t.Errorf("failing health output = %v, want one INFO line", out)
	}
	if ev := finishedEvents(logs, Health); len(ev) != 1 || ev[0].Level != zapcore.WarnLevel {
		t.Errorf("finished events = %v, want one WARN", ev)
	}
}

func TestUpdateChangesSubsequentRuns(t *testing.T) {
	out := filepath.Join(testDir(t), "out")
	set := Set{PreStart: shell(`echo A > "$OUT"`, "OUT", out)}
	r, _ := newTestRunner(t, set)
	set.PreStart.Shell = `echo mutated > "$OUT"` // NewRunner copied set

	read := func() string {
		t.Helper()
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if res := r.Run(t.Context(), PreStart, Env{}); res.Status != StatusOK || read() != "A" {
		t.Fatalf("first run: %+v, output %q, want A", res, read())
	}

	r.Update(Set{
		User:     testUser(t),
		PreStart: shell(`echo B > "$OUT"`, "OUT", out),
		Health:   &Spec{Command: []string{"true"}},
	})
	if res := r.Run(t.Context(), PreStart, Env{}); res.Status != StatusOK || read() != "B" {
		t.Fatalf("run after Update: %+v, output %q, want B", res, read())
	}

	sp := r.Spec(PreStart)
	if sp == nil || sp.Timeout != DefaultTimeout || sp.Threshold != 0 {
		t.Errorf("Spec(preStart) = %+v, want default timeout %s", sp, DefaultTimeout)
	}
	sp.Env["OUT"] = "/nonexistent/elsewhere" // a copy: must not reach the runner
	if r.Spec(PreStart).Env["OUT"] != out {
		t.Error("Spec returned the runner's own Env map, not a copy")
	}
	if h := r.Spec(Health); h == nil || h.Timeout != DefaultHealthTimeout || h.Threshold != DefaultThreshold || h.Interval != 0 {
		t.Errorf("Spec(health) = %+v, want timeout %s, threshold %d, interval 0", h, DefaultHealthTimeout, DefaultThreshold)
	}
	if r.Spec(PostStop) != nil || r.Spec(Phase("nope")) != nil {
		t.Error("Spec of an unconfigured or unknown phase is not nil")
	}

	r.Update(Set{})
	if res := r.Run(t.Context(), PreStart, Env{}); res.Status != StatusSkipped {
		t.Errorf("run after removing the handler = %+v, want StatusSkipped", res)
	}
}

func TestUpdateConcurrentWithRun(t *testing.T) {
	r, _ := newTestRunner(t, Set{PreStop: &Spec{Command: []string{"true"}}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			r.Update(Set{User: testUser(t), PreStop: &Spec{Command: []string{"true"}, Env: map[string]string{"I": fmt.Sprint(i)}}})
		}
	}()
	for range 10 {
		if res := r.Run(t.Context(), PreStop, Env{}); res.Status != StatusOK {
			t.Errorf("Run = %+v", res)
		}
	}
	<-done
}

func TestStatusString(t *testing.T) {
	want := map[Status]string{
		StatusOK: "ok", StatusFailed: "failed", StatusTimedOut: "timed_out",
		StatusStartFailed: "start_failed", StatusSkipped: "skipped", StatusCanceled: "canceled",
		Status(0): "unknown(0)",
	}
	for s, w := range want {
		if s.String() != w {
			t.Errorf("Status(%d).String() = %q, want %q", int(s), s.String(), w)
		}
	}
	if (Result{}).OK() {
		t.Error("zero Result is OK; a zero Status must not read as success")
	}
}
