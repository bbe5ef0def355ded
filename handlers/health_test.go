//go:build unix

package handlers

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCheckHealthThreshold(t *testing.T) {
	state := filepath.Join(testDir(t), "exit-code")
	setExit := func(code string) {
		t.Helper()
		if err := os.WriteFile(state, []byte(code), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sp := shell(`exit "$(cat "$STATE")"`, "STATE", state)
	sp.Threshold = 3
	r, logs := newTestRunner(t, Set{Health: sp})

	steps := []struct {
		exit        string
		wantStatus  Status
		wantHealthy bool
		wantCount   int
	}{
		{"1", StatusFailed, true, 1},
		{"1", StatusFailed, true, 2},
		{"1", StatusFailed, false, 3}, // threshold reached
		{"1", StatusFailed, false, 4},
		{"0", StatusOK, true, 0}, // one OK resets
		{"1", StatusFailed, true, 1},
		{"1", StatusFailed, true, 2},
		{"0", StatusOK, true, 0}, // reset before the threshold
		{"1", StatusFailed, true, 1},
		{"1", StatusFailed, true, 2},
		{"1", StatusFailed, false, 3},
	}
	for i, s := range steps {
		setExit(s.exit)
		res, healthy := r.CheckHealth(t.Context(), Env{})
		if res.Status != s.wantStatus || healthy != s.wantHealthy || r.HealthFailures() != s.wantCount {
			t.Fatalf("step %d (exit %s): status %s healthy %v failures %d, want %s %v %d",
				i, s.exit, res.Status, healthy, r.HealthFailures(), s.wantStatus, s.wantHealthy, s.wantCount)
		}
	}
	if n := logs.FilterMessageSnippet("health threshold reached").Len(); n != 2 {
		t.Errorf("logged %d threshold warnings, want 2 (one per transition)", n)
	}
	if n := logs.FilterMessageSnippet("health recovered").Len(); n != 1 {
		t.Errorf("logged %d recoveries, want 1", n)
	}

	// A cancelled run says nothing about health: the count stays.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res, healthy := r.CheckHealth(ctx, Env{})
	if res.Status != StatusCanceled || healthy || r.HealthFailures() != 3 {
		t.Errorf("cancelled check: status %s healthy %v failures %d, want canceled, false, 3", res.Status, healthy, r.HealthFailures())
	}

	// Removing the health handler makes the node healthy again.
	r.Update(Set{})
	res, healthy = r.CheckHealth(t.Context(), Env{})
	if res.Status != StatusSkipped || !healthy || r.HealthFailures() != 0 {
		t.Errorf("after removing health: status %s healthy %v failures %d, want skipped, true, 0", res.Status, healthy, r.HealthFailures())
	}
}

func TestCheckHealthDefaultsAndTimeouts(t *testing.T) {
	t.Run("not configured", func(t *testing.T) {
		r, _ := newTestRunner(t, Set{})
		for range 5 {
			if res, healthy := r.CheckHealth(t.Context(), Env{}); !healthy || res.Status != StatusSkipped {
				t.Fatalf("CheckHealth = %+v, %v; want skipped and healthy", res, healthy)
			}
		}
	})
	t.Run("default threshold", func(t *testing.T) {
		r, _ := newTestRunner(t, Set{Health: shell("exit 1")})
		for i := 1; i <= DefaultThreshold; i++ {
			_, healthy := r.CheckHealth(t.Context(), Env{})
			if healthy != (i < DefaultThreshold) {
				t.Fatalf("failure %d: healthy = %v", i, healthy)
			}
		}
	})
	t.Run("timeout counts as failure", func(t *testing.T) {
		sp := shell("sleep 100")
		sp.Timeout, sp.Threshold = 200*time.Millisecond, 1
		r, _ := newTestRunner(t, Set{Health: sp})
		res, healthy := r.CheckHealth(t.Context(), Env{})
		if res.Status != StatusTimedOut || healthy {
			t.Errorf("CheckHealth = %+v, %v; want timed out and unhealthy at threshold 1", res, healthy)
		}
	})
}

func TestHealthTrackerZeroValue(t *testing.T) {
	var h HealthTracker
	fail := Result{Status: StatusFailed}
	if !h.Observe(fail, 2) || h.Observe(fail, 2) || h.Failures() != 2 {
		t.Fatalf("after two failures at threshold 2: failures %d", h.Failures())
	}
	h.Reset()
	if h.Failures() != 0 || !h.Observe(Result{Status: StatusSkipped}, 0) {
		t.Error("Reset or a skipped result did not leave the tracker healthy")
	}
}
