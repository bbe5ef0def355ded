package report

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// DefaultMaxBatch is the most queued events sent in one request when
	// the transport is a BatchTransport.
	DefaultMaxBatch = 100
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
	maxBatch       int
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

// WithMaxBatch bounds how many queued events go in one request when the
// transport is a BatchTransport (default DefaultMaxBatch; values < 1 are
// treated as 1, which sends every event on its own).
func WithMaxBatch(n int) Option {
	return func(c *config) { c.maxBatch = max(n, 1) }
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
	// Requests is the number of delivery attempts (requests), successful
	// or not; Delivered/Requests is the mean batch size.
	Requests uint64
}

// Reporter queues events in memory and delivers them in order on the
// goroutine running Run, one at a time, or up to its batch size per
// request through a BatchTransport, retrying failed attempts with
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
	queue      []proto.Envelope // waiting, oldest first; excludes those in flight
	inFlight   int
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
		maxBatch:       DefaultMaxBatch,
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
	r.publish(e, false)
}

// PublishLatest is Publish for periodic state (a member summary): a
// queued event of the same type and source that is not yet in flight is
// replaced by e (removed from its place; e goes at the end of the queue),
// so that while the receiver is unreachable the queue holds one such event
// per source, the newest, and never pushes other events out. A replaced
// event is not counted as dropped.
func (r *Reporter) PublishLatest(e proto.Envelope) {
	r.publish(e, true)
}

func (r *Reporter) publish(e proto.Envelope, latest bool) {
	r.mu.Lock()
	if latest {
		r.queue = slices.DeleteFunc(r.queue, func(q proto.Envelope) bool { return q.Type == e.Type && q.Source == e.Source })
	}
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
		es := r.next()
		if len(es) == 0 {
			select {
			case <-ctx.Done():
			case <-r.wake:
			}
			continue
		}
		r.deliver(ctx, es)
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
	s.Queued = len(r.queue) + r.inFlight
	return s
}

// next takes the oldest queued events (one, or up to the batch size for a
// BatchTransport) and marks them in flight.
func (r *Reporter) next() []proto.Envelope {
	n := 1
	if _, ok := r.t.(BatchTransport); ok {
		n = r.cfg.maxBatch
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n = min(n, len(r.queue))
	if n == 0 {
		return nil
	}
	es := slices.Clone(r.queue[:n])
	clear(r.queue[:n]) // release their data
	r.queue = r.queue[n:]
	r.inFlight = n
	return es
}

// deliver sends es (in one request when there are several) until they are
// accepted, refused for good, or ctx ends.
func (r *Reporter) deliver(ctx context.Context, es []proto.Envelope) {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.cfg.initialBackoff),
		backoff.WithMaxInterval(r.cfg.maxBackoff),
		backoff.WithMaxElapsedTime(0), // until accepted, refused or cancelled
	)
	attempts := 0
	send := func() error {
		attempts++
		r.mu.Lock()
		r.stats.Requests++
		r.mu.Unlock()
		sctx, cancel := context.WithTimeout(ctx, r.cfg.sendTimeout)
		defer cancel()
		var err error
		if bt, ok := r.t.(BatchTransport); ok && len(es) > 1 {
			err = bt.SendBatch(sctx, es)
		} else {
			err = r.t.Send(sctx, es[0])
		}
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
			zap.String("id", es[0].ID), zap.String("type", es[0].Type), zap.Uint64("term", es[0].Term), zap.Int("events", len(es)),
			zap.Int("attempt", attempts), zap.Duration("retry_in", wait), zap.Error(err))
	}
	err := backoff.RetryNotify(send, backoff.WithContext(b, ctx), retrying)

	outcomes := r.settle(es, err, ctx.Err() != nil)
	var rej *RejectedError
	errors.As(err, &rej)
	for i, e := range es {
		switch outcomes[i] {
		case delivered:
			r.log.Debug("event delivered",
				zap.String("id", e.ID), zap.String("type", e.Type), zap.Uint64("term", e.Term),
				zap.Int64("revision", e.Revision), zap.Int("attempts", attempts), zap.Int("batch", len(es)))
		case rejected:
			reason := err
			if rej != nil {
				reason = errors.New(rej.Reasons[i])
			}
			r.log.Error("event refused by the receiver, dropped",
				zap.String("id", e.ID), zap.String("type", e.Type), zap.Uint64("term", e.Term),
				zap.Int("attempts", attempts), zap.Error(reason))
		case requeued:
			r.log.Debug("event delivery interrupted, requeued",
				zap.String("id", e.ID), zap.String("type", e.Type), zap.Int("attempts", attempts))
		case requeueDropped:
			r.log.Warn("event delivery interrupted and queue full, dropped",
				zap.String("id", e.ID), zap.String("type", e.Type), zap.Uint64("term", e.Term))
		}
	}
}

type outcome int

const (
	delivered outcome = iota
	rejected
	requeued
	requeueDropped
)

// settle records the result of delivering es (stats and the dropped
// counter, before Flush can see the queue idle) and returns what happened
// to each. err is the final error (nil: all accepted; *RejectedError: the
// listed ones refused, the others accepted); cancelled says Run's context
// ended.
func (r *Reporter) settle(es []proto.Envelope, err error, cancelled bool) []outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight = 0
	out := make([]outcome, len(es))
	var rej *RejectedError
	switch {
	case err == nil:
		r.stats.Delivered += uint64(len(es))
	case errors.As(err, &rej):
		for i := range es {
			if _, refused := rej.Reasons[i]; refused {
				out[i] = rejected
				r.stats.Dropped++
				r.stats.Rejected++
				r.countDrop()
			} else {
				r.stats.Delivered++
			}
		}
	case errors.Is(err, ErrPermanent) || !cancelled:
		// !cancelled cannot happen with an unlimited backoff; treat anything
		// unexpected as a refusal rather than losing count of the events.
		for i := range out {
			out[i] = rejected
			r.countDrop()
		}
		r.stats.Dropped += uint64(len(es))
		r.stats.Rejected += uint64(len(es))
	default:
		// Back to the head of the queue, in order. When that overflows the
		// queue, the oldest events (the head of es) are the ones to drop.
		keep := min(len(es), max(r.cfg.queueSize-len(r.queue), 0))
		for i := range len(es) - keep {
			out[i] = requeueDropped
			r.stats.Dropped++
			r.countDrop()
		}
		for i := len(es) - keep; i < len(es); i++ {
			out[i] = requeued
		}
		r.queue = append(slices.Clone(es[len(es)-keep:]), r.queue...)
	}
	if len(r.queue) == 0 && !r.idleClosed {
		close(r.idle)
		r.idleClosed = true
	}
	return out
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
