package handlers

import (
	"context"
	"sync"

	"go.uber.org/zap"
)

// HealthTracker counts consecutive health-handler failures against
// Spec.Threshold. The zero value is ready to use (no failures: healthy); it
// is safe for concurrent use.
type HealthTracker struct {
	mu       sync.Mutex
	failures int
}

// Observe records one health result and reports whether the node is healthy,
// i.e. whether fewer than threshold consecutive results have failed
// (threshold <= 0 means DefaultThreshold). An OK result (including
// StatusSkipped) resets the count; a StatusCanceled result says nothing about
// the node's health and leaves the count unchanged; any other result adds
// one failure.
func (t *HealthTracker) Observe(res Result, threshold int) (healthy bool) {
	_, after := t.record(res)
	return after < effectiveThreshold(threshold)
}

// record applies res to the count and returns the count before and after.
func (t *HealthTracker) record(res Result) (before, after int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	before = t.failures
	switch {
	case res.Status == StatusCanceled:
	case res.OK():
		t.failures = 0
	default:
		t.failures++
	}
	return before, t.failures
}

// effectiveThreshold returns threshold, or DefaultThreshold if it is <= 0.
func effectiveThreshold(threshold int) int {
	if threshold <= 0 {
		return DefaultThreshold
	}
	return threshold
}

// Failures returns the current number of consecutive failed health results.
func (t *HealthTracker) Failures() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failures
}

// Reset forgets all failures.
func (t *HealthTracker) Reset() {
	t.mu.Lock()
	t.failures = 0
	t.mu.Unlock()
}

// CheckHealth runs the health handler once (see Run) and feeds the result to
// the Runner's HealthTracker. healthy is false only once Spec.Threshold
// (default 3) consecutive runs have not been OK; one OK run makes it true
// again. When health is not configured, it returns a StatusSkipped result and
// true. A run cancelled by ctx neither counts as a failure nor resets the
// count. The agent calls it every Spec.Interval (or its own health.interval);
// CheckHealth itself does not schedule anything.
func (r *Runner) CheckHealth(ctx context.Context, env Env) (Result, bool) {
	res, sp := r.run(ctx, Health, env)
	threshold := effectiveThreshold(sp.Threshold)
	before, after := r.health.record(res)
	switch {
	case before < threshold && after >= threshold:
		r.log.Warn("health threshold reached: node unhealthy",
			zap.Int("consecutive_failures", after), zap.Int("threshold", threshold))
	case before >= threshold && after < threshold:
		r.log.Info("health recovered: node healthy", zap.Int("previous_failures", before))
	}
	return res, after < threshold
}

// HealthFailures returns the number of consecutive failed health checks seen
// by CheckHealth.
func (r *Runner) HealthFailures() int { return r.health.Failures() }
