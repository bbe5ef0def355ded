package handlers

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"
)

// ErrOnChangeStopBound is the cause of the cancellation of an onChange run
// killed by StopOnChangeWithin because its bound passed.
var ErrOnChangeStopBound = errors.New("onChange run killed: the stop bound passed")

// onChangeQueue serialises onChange runs on one worker goroutine: an
// unbounded FIFO of events under a mutex, plus a wake-up channel that is only
// ever sent to without blocking and outside the lock.
type onChangeQueue struct {
	mu      sync.Mutex
	items   []Env
	started bool
	stopped bool

	wake chan struct{} // capacity 1: "the queue may be non-empty"
	stop chan struct{} // closed by the first StopOnChange
	done chan struct{} // closed when the worker has exited
	// kill cancels the context of the worker's runs (set by StartOnChange).
	kill context.CancelCauseFunc
}

// newOnChangeQueue returns an empty, not yet started queue.
func newOnChangeQueue() onChangeQueue {
	return onChangeQueue{
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
}

// backlogWarnAt is the queue length from which NotifyChange warns (again at
// every doubling) that onChange runs are falling behind.
const backlogWarnAt = 64

// StartOnChange starts the onChange worker: from now on every event given to
// NotifyChange (including those queued before this call) is run, in order,
// one at a time, with ctx. Cancelling ctx kills the run in progress
// (StatusCanceled), discards the queued events and ends the worker;
// StopOnChange is the graceful way to end it. Calling StartOnChange again, or
// after StopOnChange, does nothing.
func (r *Runner) StartOnChange(ctx context.Context) {
	q := &r.queue
	q.mu.Lock()
	if q.started || q.stopped {
		stopped := q.stopped
		q.mu.Unlock()
		if stopped {
			r.log.Warn("onChange worker not started: already stopped")
		}
		return
	}
	q.started = true
	ctx, q.kill = context.WithCancelCause(ctx)
	q.mu.Unlock()
	go r.onChangeWorker(ctx)
}

// NotifyChange queues one onChange run with env (one per role or leader
// change the node observes). It never blocks: the queue is unbounded. Events
// given after StopOnChange, or after the worker's context ended, are dropped.
func (r *Runner) NotifyChange(env Env) {
	q := &r.queue
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		r.log.Debug("onChange event dropped: worker stopped", zap.Uint64("term", env.Term))
		return
	}
	q.items = append(q.items, env)
	n := len(q.items)
	q.mu.Unlock()

	select {
	case q.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	if n >= backlogWarnAt && n&(n-1) == 0 {
		r.log.Warn("onChange backlog growing: handler slower than changes", zap.Int("pending", n))
	}
}

// OnChangePending returns the number of queued onChange events not yet
// started.
func (r *Runner) OnChangePending() int {
	q := &r.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// StopOnChange ends the onChange queue: events still queued are discarded
// (and counted in a warning), the run in progress, if any, is allowed to
// finish (bounded by its Timeout; cancel StartOnChange's ctx to cut it short),
// and StopOnChange returns once the worker has exited. It is idempotent and
// safe to call concurrently, and also works if StartOnChange was never
// called.
func (r *Runner) StopOnChange() { r.stopOnChange(-1) }

// StopOnChangeWithin is StopOnChange with a bound: when the run in progress
// has not finished within bound, its process group (and cgroup) is killed
// (the run ends StatusCanceled, its Err wrapping ErrOnChangeStopBound), which
// is logged at WARN. It returns at most about bound plus the Runner's wait
// delay after it was called. The agent calls it once the database has
// stopped, so that a hanging onChange cannot delay its exit.
func (r *Runner) StopOnChangeWithin(bound time.Duration) { r.stopOnChange(max(bound, 0)) }

// stopOnChange stops the queue; bound < 0 waits for the run in progress
// without limit (other than its Timeout).
func (r *Runner) stopOnChange(bound time.Duration) {
	q := &r.queue
	q.mu.Lock()
	first := !q.stopped
	q.stopped = true
	dropped := len(q.items)
	q.items = nil
	started, kill := q.started, q.kill
	q.mu.Unlock()

	if first {
		close(q.stop)
		if dropped > 0 {
			r.log.Warn("onChange events dropped: queue stopped", zap.Int("dropped", dropped))
		}
	}
	if !started {
		return
	}
	if bound < 0 {
		<-q.done
		return
	}
	timer := time.NewTimer(bound)
	defer timer.Stop()
	select {
	case <-q.done:
	case <-timer.C:
		r.log.Warn("onChange handler still running at stop; killing it", zap.Duration("bound", bound))
		kill(ErrOnChangeStopBound)
		<-q.done
	}
}

// pop removes and returns the oldest queued event. ok is false when the queue
// is empty or stopped; stopped reports the latter.
func (q *onChangeQueue) pop() (env Env, ok, stopped bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return Env{}, false, true
	}
	if len(q.items) == 0 {
		return Env{}, false, false
	}
	env = q.items[0]
	q.items[0] = Env{}
	q.items = q.items[1:]
	return env, true, false
}

// onChangeWorker is the queue's only consumer.
func (r *Runner) onChangeWorker(ctx context.Context) {
	q := &r.queue
	defer close(q.done)
	defer q.kill(context.Canceled) // releases the worker's context
	for {
		if ctx.Err() != nil {
			r.haltOnChange(ctx)
			return
		}
		env, ok, stopped := q.pop()
		if stopped {
			return
		}
		if !ok {
			select {
			case <-q.wake:
			case <-q.stop:
			case <-ctx.Done():
			}
			continue
		}
		res := r.Run(ctx, OnChange, env)
		if r.onChangeResult != nil {
			r.onChangeResult(env, res)
		}
	}
}

// haltOnChange stops the queue because the worker's context ended.
func (r *Runner) haltOnChange(ctx context.Context) {
	q := &r.queue
	q.mu.Lock()
	q.stopped = true
	dropped := len(q.items)
	q.items = nil
	q.mu.Unlock()
	if dropped > 0 {
		r.log.Warn("onChange events dropped: context ended",
			zap.Int("dropped", dropped), zap.Error(context.Cause(ctx)))
	}
}
