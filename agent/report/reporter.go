package report

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/proto"
)

// Defaults of the Reporter's options.
const (
	DefaultQueueSize      = 10000
	DefaultInitialBackoff = 200 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultSendTimeout    = 10 * time.Second
)

// Counter is what the Reporter needs of a metric counter
// (prometheus.Counter satisfies it).
type Counter interface {
	Inc()
}

// Option configures a Reporter.
type Option func(*config)

type config struct {
	queueSize      int
	initialBackoff time.Duration
	maxBackoff     time.Duration
	sendTimeout    time.Duration
	dropped        Counter
}

// WithQueueSize bounds the number of events waiting for delivery (default
// DefaultQueueSize; values < 1 are treated as 1). When the queue is full,
// Publish drops the oldest waiting event.
func WithQueueSize(n int) Option {
	return func(c *config) { c.queueSize = max(n, 1) }
}

// WithBackoff sets the first retry delay and the cap the exponentially
// growing delay never exceeds (defaults DefaultInitialBackoff and
// DefaultMaxBackoff; non-positive values keep the default). Delays are
// randomised by ±50%.
func WithBackoff(initial, maximum time.Duration) Option {
	return func(c *config) {
		if initial > 0 {
			c.initialBackoff = initial
		}
		if maximum > 0 {
			c.maxBackoff = maximum
		}
	}
}

// WithSendTimeout bounds each delivery attempt (default DefaultSendTimeout;
// non-positive values keep the default).
func WithSendTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.sendTimeout = d
		}
	}
}

// WithDroppedCounter makes the Reporter increment c once per dropped event
// (queue overflow or permanent refusal), e.g. dbpilot_events_dropped_total.
func WithDroppedCounter(c Counter) Option {
	return func(cfg *config) { cfg.dropped = c }
}

// Stats are the Reporter's counters since it was created.
type Stats struct {
	// Queued is the number of events not yet delivered, including the one
	// being delivered.
	Queued int
	// Delivered is the number of events the transport accepted.
	Delivered uint64
	// Dropped is the number of events that will never be delivered: pushed
	// out of a full queue, or refused permanently by the receiver.
	Dropped uint64
	// Rejected is the part of Dropped the receiver refused permanently.
	Rejected uint64
	// Retries is the number of failed delivery attempts that were retried.
	Retries uint64
}

// Reporter queues events in memory and delivers them in order, one at a
// time, on the goroutine running Run, retrying failed attempts with
// exponential backoff until they succeed, fail permanently or Run's context
// ends. Publish never waits for delivery. Its methods are safe for
// concurrent use.
type Reporter struct {
	t   Transport
	log *zap.Logger
	cfg config

	wake    chan struct{} // capacity 1: "the queue may be non-empty"
	running atomic.Bool

	mu         sync.Mutex
	queue      []proto.Envelope // waiting, oldest first; excludes the one in flight
	inFlight   bool
	idle       chan struct{} // closed while nothing is queued or in flight
	idleClosed bool
	overflows  uint64 // events dropped from a full queue, for log rate limiting
	stats      Stats  // Queued is computed in Stats()
}

// NewReporter returns a Reporter delivering through t and logging to log
// (named "report"). Nothing is delivered until Run is called.
func NewReporter(t Transport, log *zap.Logger, opts ...Option) *Reporter {
	cfg := config{
		queueSize:      DefaultQueueSize,
		initialBackoff: DefaultInitialBackoff,
		maxBackoff:     DefaultMaxBackoff,
		sendTimeout:    DefaultSendTimeout,
	}
	for _, o := range opts {
		o(&cfg)
	}
	idle := make(chan struct{})
	close(idle)
	return &Reporter{
		t:          t,
		log:        log.Named("report"),
		cfg:        cfg,
		wake:       make(chan struct{}, 1),
		idle:       idle,
		idleClosed: true,
	}
}

// Publish queues e for delivery and returns at once: it only takes a mutex
// to append, never waits for the transport. When the queue is full the
// oldest waiting event is dropped, counted, and logged at WARN (the first
// drop and then each time the total overflow count reaches a power of two).
func (r *Reporter) Publish(e proto.Envelope) {
	r.mu.Lock()
	var dropped proto.Envelope
	overflowed := len(r.queue) >= r.cfg.queueSize
	if overflowed {
		dropped = r.queue[0]
		r.queue[0] = proto.Envelope{} // release its data
		r.queue = r.queue[1:]
		r.stats.Dropped++
		r.overflows++
	}
	r.queue = append(r.queue, e)
	if r.idleClosed {
		r.idle = make(chan struct{})
		r.idleClosed = false
	}
	overflows := r.overflows
	r.mu.Unlock()

	select {
	case r.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	if overflowed {
		r.countDrop()
		if overflows&(overflows-1) == 0 {
			r.log.Warn("event queue full, dropped the oldest event",
				zap.String("id", dropped.ID), zap.String("type", dropped.Type),
				zap.Uint64("term", dropped.Term), zap.Int("queue_size", r.cfg.queueSize),
				zap.Uint64("overflow_drops_total", overflows))
		}
	}
}

// Run delivers queued events until ctx is done. It must run on exactly one
// goroutine; a second concurrent call logs an error and returns at once.
// When ctx ends during an attempt, the event goes back to the head of the
// queue (it may then be delivered twice). Run returns when ctx is done,
// leaving undelivered events queued: at shutdown, call Flush with a bounded
// context before cancelling Run's context.
func (r *Reporter) Run(ctx context.Context) {
	if !r.running.CompareAndSwap(false, true) {
		r.log.Error("reporter already running; second Run ignored")
		return
	}
	defer r.running.Store(false)
	for ctx.Err() == nil {
		e, ok := r.next()
		if !ok {
			select {
			case <-ctx.Done():
			case <-r.wake:
			}
			continue
		}
		r.deliver(ctx, e)
	}
}

// Flush waits until every queued event has been delivered or dropped, or
// until ctx is done. Events published while it waits are waited for too. It
// needs Run to be running. Errors: ctx's error, with the number of events
// still undelivered.
func (r *Reporter) Flush(ctx context.Context) error {
	r.mu.Lock()
	idle := r.idle
	r.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush events: %d undelivered: %w", r.Stats().Queued, context.Cause(ctx))
	}
}

// Stats returns a snapshot of the Reporter's counters.
func (r *Reporter) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Queued = len(r.queue)
	if r.inFlight {
		s.Queued++
	}
	return s
}

// next takes the oldest queued event and marks it in flight.
func (r *Reporter) next() (proto.Envelope, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return proto.Envelope{}, false
	}
	e := r.queue[0]
	r.queue[0] = proto.Envelope{}
	r.queue = r.queue[1:]
	r.inFlight = true
	return e, true
}

// deliver sends e until it is accepted, refused for good, or ctx ends.
func (r *Reporter) deliver(ctx context.Context, e proto.Envelope) {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.cfg.initialBackoff),
		backoff.WithMaxInterval(r.cfg.maxBackoff),
		backoff.WithMaxElapsedTime(0), // until accepted, refused or cancelled
	)
	attempts := 0
	send := func() error {
		attempts++
		sctx, cancel := context.WithTimeout(ctx, r.cfg.sendTimeout)
		defer cancel()
		err := r.t.Send(sctx, e)
		if errors.Is(err, ErrPermanent) {
			return backoff.Permanent(err)
		}
		return err
	}
	retrying := func(err error, wait time.Duration) {
		r.mu.Lock()
		r.stats.Retries++
		r.mu.Unlock()
		r.log.Warn("event delivery failed, retrying",
			zap.String("id", e.ID), zap.String("type", e.Type), zap.Uint64("term", e.Term),
			zap.Int("attempt", attempts), zap.Duration("retry_in", wait), zap.Error(err))
	}
	err := backoff.RetryNotify(send, backoff.WithContext(b, ctx), retrying)

	outcome := r.settle(e, err, ctx.Err() != nil)
	switch outcome {
	case delivered:
		r.log.Debug("event delivered",
			zap.String("id", e.ID), zap.String("type", e.Type), zap.Uint64("term", e.Term),
			zap.Int64("revision", e.Revision), zap.Int("attempts", attempts))
	case rejected:
		r.countDrop()
		r.log.Error("event refused by the receiver, dropped",
			zap.String("id", e.ID), zap.String("type", e.Type), zap.Uint64("term", e.Term),
			zap.Int("attempts", attempts), zap.Error(err))
	case requeued:
		r.log.Debug("event delivery interrupted, requeued",
			zap.String("id", e.ID), zap.String("type", e.Type), zap.Int("attempts", attempts))
	case requeueDropped:
		r.countDrop()
		r.log.Warn("event delivery interrupted and queue full, dropped",
			zap.String("id", e.ID), zap.String("type", e.Type), zap.Uint64("term", e.Term))
	}
}

type outcome int

const (
	delivered outcome = iota
	rejected
	requeued
	requeueDropped
)

// settle records the result of delivering e and returns what happened to
// it. err is the final error (nil: accepted); cancelled says Run's context
// ended.
func (r *Reporter) settle(e proto.Envelope, err error, cancelled bool) outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight = false
	var o outcome
	switch {
	case err == nil:
		r.stats.Delivered++
		o = delivered
	case errors.Is(err, ErrPermanent) || !cancelled:
		// !cancelled cannot happen with an unlimited backoff; treat anything
		// unexpected as a refusal rather than losing count of the event.
		r.stats.Dropped++
		r.stats.Rejected++
		o = rejected
	case len(r.queue) >= r.cfg.queueSize:
		// The event is the oldest of a full queue: it is the one to drop.
		r.stats.Dropped++
		o = requeueDropped
	default:
		r.queue = append([]proto.Envelope{e}, r.queue...)
		o = requeued
	}
	if len(r.queue) == 0 && !r.idleClosed {
		close(r.idle)
		r.idleClosed = true
	}
	return o
}

func (r *Reporter) countDrop() {
	if r.cfg.dropped != nil {
		r.cfg.dropped.Inc()
	}
}

// Deliver sends e once through the Reporter's transport, bounded by the send
// timeout, bypassing the in-memory queue: for callers that keep their own
// durable queue (the backup outbox) and must know whether the receiver
// accepted the event. Errors: the transport's (ErrPermanent when refused).
func (r *Reporter) Deliver(ctx context.Context, e proto.Envelope) error {
	sctx, cancel := context.WithTimeout(ctx, r.cfg.sendTimeout)
	defer cancel()
	if err := r.t.Send(sctx, e); err != nil {
		return fmt.Errorf("deliver %s %s: %w", e.Type, e.ID, err)
	}
	return nil
}
