//go:build unix

package handlers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/internal/testutil"
)

// onChangeRecorder collects the results passed to WithOnChangeResult.
type onChangeRecorder struct {
	mu      sync.Mutex
	terms   []uint64
	results []Result
}

func (c *onChangeRecorder) record(env Env, res Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.terms = append(c.terms, env.Term)
	c.results = append(c.results, res)
}

func (c *onChangeRecorder) snapshot() ([]uint64, []Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint64(nil), c.terms...), append([]Result(nil), c.results...)
}

func (c *onChangeRecorder) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.terms)
}

// gatedOnChange returns an onChange spec that appends $DBPILOT_TERM to out,
// holds a mkdir lock while it runs (recording "overlap" if another run holds
// it), touches started.$DBPILOT_TERM, and does not finish before gate exists.
func gatedOnChange(dir string) *Spec {
	return shell(`mkdir "$LOCK" 2>/dev/null || { echo "overlap $DBPILOT_TERM" >> "$OUT"; exit 1; }
echo "$DBPILOT_TERM" >> "$OUT"
: > "$DIR/started.$DBPILOT_TERM"
while [ ! -e "$GATE" ]; do sleep 0.01; done
sleep 0.05
rmdir "$LOCK"`,
		"LOCK", filepath.Join(dir, "lock"),
		"OUT", filepath.Join(dir, "out"),
		"GATE", filepath.Join(dir, "gate"),
		"DIR", dir)
}

// startGated starts r's onChange worker and makes sure, even when the test
// fails early, that the gate opens and the worker ends before the test does.
func startGated(t *testing.T, r *Runner, ctx context.Context, dir string) {
	r.StartOnChange(ctx)
	t.Cleanup(r.StopOnChange)
	t.Cleanup(func() { _ = os.WriteFile(filepath.Join(dir, "gate"), nil, 0o644) }) // runs first
}

// notifyAll calls r.NotifyChange for each env in order and fails the test if
// that does not return promptly: NotifyChange must never block.
func notifyAll(t *testing.T, r *Runner, envs ...Env) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, env := range envs {
			r.NotifyChange(env)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("NotifyChange blocked")
	}
}

func openGate(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "gate"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestOnChangeRunsInOrderOneAtATime(t *testing.T) {
	dir := testDir(t)
	var rec onChangeRecorder
	r, _ := newTestRunner(t, Set{OnChange: gatedOnChange(dir)}, WithOnChangeResult(rec.record))
	startGated(t, r, t.Context(), dir)

	// The first run blocks on the gate; NotifyChange must still return at
	// once for all five events.
	var envs []Env
	for term := uint64(1); term <= 5; term++ {
		envs = append(envs, Env{Event: "role-changed", Role: "replica", Term: term})
	}
	notifyAll(t, r, envs...)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "first onChange run to start", func() bool {
		return exists(filepath.Join(dir, "started.1"))
	})
	openGate(t, dir)
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "five onChange results", func() bool { return rec.len() == 5 })

	terms, results := rec.snapshot()
	for i, res := range results {
		if terms[i] != uint64(i+1) || res.Status != StatusOK || res.Phase != OnChange {
			t.Errorf("result %d: term %d %+v, want term %d StatusOK", i, terms[i], res, i+1)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "1\n2\n3\n4\n5\n" {
		t.Errorf("onChange runs wrote %q, want 1..5 in order without overlap", b)
	}
	if n := r.OnChangePending(); n != 0 {
		t.Errorf("OnChangePending = %d after all runs, want 0", n)
	}
}

func TestOnChangeQueuedBeforeStart(t *testing.T) {
	out := filepath.Join(testDir(t), "out")
	var rec onChangeRecorder
	r, _ := newTestRunner(t, Set{OnChange: shell(`echo "$DBPILOT_TERM" >> "$OUT"`, "OUT", out)}, WithOnChangeResult(rec.record))
	notifyAll(t, r, Env{Term: 1}, Env{Term: 2})
	if n := r.OnChangePending(); n != 2 {
		t.Fatalf("OnChangePending = %d before start, want 2", n)
	}
	r.StartOnChange(t.Context())
	r.StartOnChange(t.Context()) // a second start does nothing
	t.Cleanup(r.StopOnChange)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "two onChange results", func() bool { return rec.len() == 2 })
	if b, _ := os.ReadFile(out); string(b) != "1\n2\n" {
		t.Errorf("onChange runs wrote %q, want 1 then 2", b)
	}
}

func TestStopOnChangeFinishesCurrentRunAndDropsTheRest(t *testing.T) {
	dir := testDir(t)
	var rec onChangeRecorder
	r, logs := newTestRunner(t, Set{OnChange: gatedOnChange(dir)}, WithOnChangeResult(rec.record))
	startGated(t, r, t.Context(), dir)

	r.NotifyChange(Env{Term: 1})
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "first onChange run to start", func() bool {
		return exists(filepath.Join(dir, "started.1"))
	})
	notifyAll(t, r, Env{Term: 2}, Env{Term: 3})

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		r.StopOnChange()
	}()
	// StopOnChange empties the queue at once, then waits for run 1.
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "StopOnChange to drop the queued events", func() bool {
		return r.OnChangePending() == 0
	})
	select {
	case <-stopped:
		t.Fatal("StopOnChange returned while an onChange run was still in progress")
	default:
	}
	openGate(t, dir)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("StopOnChange did not return after the current run finished")
	}

	terms, results := rec.snapshot()
	if len(results) != 1 || terms[0] != 1 || results[0].Status != StatusOK {
		t.Fatalf("results = %v %+v, want only term 1, completed OK", terms, results)
	}
	if exists(filepath.Join(dir, "started.2")) || exists(filepath.Join(dir, "started.3")) {
		t.Error("a queued event ran after StopOnChange")
	}
	if n := logs.FilterMessageSnippet("onChange events dropped").Len(); n != 1 {
		t.Errorf("logged %d drop warnings, want 1", n)
	}

	// Idempotent, and later events are dropped without blocking.
	r.StopOnChange()
	r.NotifyChange(Env{Term: 4})
	r.StartOnChange(t.Context())
	if n := r.OnChangePending(); n != 0 {
		t.Errorf("OnChangePending = %d after stop, want 0", n)
	}
	if rec.len() != 1 {
		t.Errorf("got %d results, want still 1", rec.len())
	}
}

func TestOnChangeContextCancelEndsWorker(t *testing.T) {
	dir := testDir(t)
	var rec onChangeRecorder
	r, _ := newTestRunner(t, Set{OnChange: gatedOnChange(dir)}, WithOnChangeResult(rec.record))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	startGated(t, r, ctx, dir)
	r.NotifyChange(Env{Term: 1})
	r.NotifyChange(Env{Term: 2})
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "first onChange run to start", func() bool {
		return exists(filepath.Join(dir, "started.1"))
	})
	cancel() // kills run 1; run 2 never starts

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		r.StopOnChange()
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not end after its context was cancelled")
	}
	_, results := rec.snapshot()
	if len(results) != 1 || results[0].Status != StatusCanceled {
		t.Errorf("results = %+v, want only run 1, cancelled", results)
	}
	if exists(filepath.Join(dir, "started.2")) {
		t.Error("a queued event ran after the context was cancelled")
	}
}

func TestStopOnChangeWithoutStart(t *testing.T) {
	r, _ := newTestRunner(t, Set{OnChange: shell("true")})
	r.NotifyChange(Env{Term: 1})
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.StopOnChange()
		r.StopOnChange()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("StopOnChange without StartOnChange blocked")
	}
	if n := r.OnChangePending(); n != 0 {
		t.Errorf("OnChangePending = %d, want 0", n)
	}
}

// TestStopOnChangeWithinKillsHangingRun: a hanging onChange (sleep 600 with
// a 60s timeout) does not hold StopOnChangeWithin beyond its bound: the run
// and its children are killed, the result says why, and a warning is logged.
func TestStopOnChangeWithinKillsHangingRun(t *testing.T) {
	dir := testDir(t)
	pidFile := filepath.Join(dir, "sleep.pid")
	sp := shell(`sleep 600 & echo $! > "$PID"; wait`, "PID", pidFile)
	sp.Timeout = time.Minute
	var rec onChangeRecorder
	r, logs := newTestRunner(t, Set{OnChange: sp}, WithOnChangeResult(rec.record))
	r.StartOnChange(t.Context())
	t.Cleanup(r.StopOnChange)

	r.NotifyChange(Env{Term: 7})
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "onChange to start its sleep", func() bool {
		b, err := os.ReadFile(pidFile)
		return err == nil && strings.HasSuffix(string(b), "\n")
	})
	sleepPID := readPID(t, pidFile)
	killOnCleanup(t, sleepPID)

	const bound = 300 * time.Millisecond
	start := time.Now()
	r.StopOnChangeWithin(bound)
	if took := time.Since(start); took < bound || took > bound+3*time.Second {
		t.Errorf("StopOnChangeWithin(%s) took %s, want about the bound", bound, took)
	}
	if !processGone(sleepPID) {
		t.Errorf("the onChange's sleep %d survived StopOnChangeWithin", sleepPID)
	}
	terms, results := rec.snapshot()
	if len(results) != 1 || terms[0] != 7 || results[0].Status != StatusCanceled || !errors.Is(results[0].Err, ErrOnChangeStopBound) {
		t.Fatalf("results = %v %+v, want term 7 StatusCanceled wrapping ErrOnChangeStopBound", terms, results)
	}
	if n := logs.FilterMessageSnippet("still running at stop").Len(); n != 1 {
		t.Errorf("logged %d kill warnings, want 1", n)
	}

	// A quick onChange is waited for, not killed.
	r2, _ := newTestRunner(t, Set{OnChange: shell("sleep 0.2")}, WithOnChangeResult(rec.record))
	r2.StartOnChange(t.Context())
	r2.NotifyChange(Env{Term: 8})
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, "second runner's run to start", func() bool { return r2.OnChangePending() == 0 })
	r2.StopOnChangeWithin(10 * time.Second)
	if _, results := rec.snapshot(); len(results) != 2 || results[1].Status != StatusOK {
		t.Errorf("results = %+v, want the quick run to finish OK", results)
	}
}
