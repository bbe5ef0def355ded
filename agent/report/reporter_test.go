package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/internal/testutil"
	"github.com/dbpilot/dbpilot/proto"
)

// waitTimeout bounds every wait in these tests; the conditions normally
// hold within milliseconds.
const waitTimeout = 30 * time.Second

// event returns a valid member event at revision rev.
func event(t testing.TB, rev int64) proto.Envelope {
	t.Helper()
	h := proto.Header{
		ClusterRef:  proto.ClusterRef{Namespace: "test", Cluster: "c1"},
		Node:        "n1",
		Term:        3,
		TimestampMS: time.Now().UnixMilli(),
		Revision:    rev,
	}
	e, err := proto.NewEnvelope(proto.TypeMemberState, proto.AgentSource("test", "c1", "n1"), h,
		proto.MemberState{Role: proto.RoleReplica, State: proto.StateRunning, Healthy: true, LagBytes: rev})
	if err != nil {
		t.Fatalf("NewEnvelope: %v", err)
	}
	return e
}

func events(t testing.TB, n int) []proto.Envelope {
	out := make([]proto.Envelope, n)
	for i := range out {
		out[i] = event(t, int64(i+1))
	}
	return out
}

func ids(es []proto.Envelope) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// receiver is a real HTTP endpoint that decodes and validates every event
// and answers with the status respond chooses.
type receiver struct {
	t       *testing.T
	srv     *httptest.Server
	respond func(r *http.Request, e proto.Envelope, attempt int) int

	mu       sync.Mutex
	accepted []string       // ids answered with 2xx, in arrival order
	attempts map[string]int // requests per id
	requests int
	batches  []int // events per request, in arrival order
}

// newReceiver starts a receiver; a nil respond accepts everything.
func newReceiver(t *testing.T, respond func(r *http.Request, e proto.Envelope, attempt int) int) *receiver {
	rc := &receiver{t: t, respond: respond, attempts: make(map[string]int)}
	if rc.respond == nil {
		rc.respond = func(*http.Request, proto.Envelope, int) int { return http.StatusNoContent }
	}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get("Content-Type")
	if r.Method != http.MethodPost || (ct != proto.MediaType && ct != proto.BatchMediaType) {
		rc.t.Errorf("receiver got %s with Content-Type %q, want POST %s or %s", r.Method, ct, proto.MediaType, proto.BatchMediaType)
		w.WriteHeader(http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	raws := []json.RawMessage{body}
	if ct == proto.BatchMediaType {
		raws = nil
		if err := json.Unmarshal(body, &raws); err != nil || len(raws) < 2 {
			rc.t.Errorf("receiver: batch of %d events (%v), want a JSON array of at least 2", len(raws), err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
	}
	es := make([]proto.Envelope, len(raws))
	for i, raw := range raws {
		if es[i], err = proto.DecodeEnvelope(raw); err != nil {
			rc.t.Errorf("receiver: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
	}
	rc.mu.Lock()
	rc.requests++
	rc.batches = append(rc.batches, len(es))
	attempt := make([]int, len(es))
	for i, e := range es {
		rc.attempts[e.ID]++
		attempt[i] = rc.attempts[e.ID]
	}
	rc.mu.Unlock()

	codes := make([]int, len(es))
	for i, e := range es {
		codes[i] = rc.respond(r, e, attempt[i]) // may block: not under the lock
	}
	if ct == proto.MediaType {
		if codes[0] >= 200 && codes[0] < 300 {
			rc.mu.Lock()
			rc.accepted = append(rc.accepted, es[0].ID)
			rc.mu.Unlock()
		}
		w.WriteHeader(codes[0])
		return
	}
	// A batch, answered as dbpilot-server's ingest does: a retryable
	// status for one event fails the whole request; refusals are listed
	// in a 202 and the other events are accepted.
	for _, c := range codes {
		if c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500 {
			w.WriteHeader(c)
			return
		}
	}
	res := proto.BatchResult{Rejected: []proto.BatchRejection{}}
	rc.mu.Lock()
	for i, c := range codes {
		if c >= 200 && c < 300 {
			rc.accepted = append(rc.accepted, es[i].ID)
			res.Accepted++
		} else {
			res.Rejected = append(res.Rejected, proto.BatchRejection{Index: i, Error: http.StatusText(c)})
		}
	}
	rc.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(res)
}

func (rc *receiver) snapshot() (accepted []string, attempts map[string]int, requests int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.accepted), maps.Clone(rc.attempts), rc.requests
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, waitTimeout, 2*time.Millisecond, what, cond)
}

// run starts r.Run and stops and awaits it in t.Cleanup; the returned
// function stops it earlier.
func run(t *testing.T, r *Reporter) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

func testLogger(t *testing.T) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
}

func fastBackoff() Option { return WithBackoff(time.Millisecond, 10*time.Millisecond) }

func TestEventsArriveInOrder(t *testing.T) {
	rc := newReceiver(t, func(r *http.Request, _ proto.Envelope, _ int) int {
		if got := r.Header.Get("Authorization"); got != "Bearer s3cret" {
			t.Errorf("Authorization = %q, want the configured header", got)
		}
		return http.StatusOK
	})
	tr := NewHTTPTransport(rc.srv.URL, 5*time.Second, map[string]string{"Authorization": "Bearer s3cret"})
	t.Cleanup(func() { _ = tr.Close() })
	r := NewReporter(tr, testLogger(t))
	run(t, r)

	es := events(t, 200)
	for _, e := range es {
		r.Publish(e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	got, _, _ := rc.snapshot()
	if !slices.Equal(got, ids(es)) {
		t.Fatalf("receiver got %d events out of order or incomplete", len(got))
	}
	if s := counts(r.Stats()); s != (Stats{Delivered: 200}) {
		t.Fatalf("Stats = %+v, want 200 delivered and nothing else", s)
	}
}

func TestRetriesUntilReceiverRecovers(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	rc := newReceiver(t, func(*http.Request, proto.Envelope, int) int {
		if failing.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusAccepted
	})
	tr := NewHTTPTransport(rc.srv.URL, 5*time.Second, nil)
	r := NewReporter(tr, testLogger(t), fastBackoff())
	run(t, r)

	es := events(t, 50)
	for _, e := range es[:25] {
		r.Publish(e)
	}
	waitFor(t, "several refused attempts", func() bool { _, _, n := rc.snapshot(); return n >= 5 })
	for _, e := range es[25:] {
		r.Publish(e)
	}
	failing.Store(false)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	got, _, _ := rc.snapshot()
	if !slices.Equal(got, ids(es)) {
		t.Fatalf("receiver accepted %v,\nwant each of the %d events once, in order", got, len(es))
	}
	s := r.Stats()
	if s.Delivered != 50 || s.Dropped != 0 || s.Queued != 0 || s.Retries < 4 {
		t.Fatalf("Stats = %+v, want 50 delivered, none dropped, >= 4 retries", s)
	}
}

func TestStatusClassification(t *testing.T) {
	tests := []struct {
		status    int
		permanent bool
	}{
		{http.StatusBadRequest, true},
		{http.StatusUnauthorized, true},
		{http.StatusNotFound, true},
		{http.StatusConflict, true},
		{http.StatusUnprocessableEntity, true},
		{http.StatusRequestTimeout, false},
		{http.StatusTooManyRequests, false},
		{http.StatusInternalServerError, false},
		{http.StatusBadGateway, false},
		{http.StatusServiceUnavailable, false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			es := events(t, 3)
			bad := es[1].ID
			// The middle event gets tc.status on its first attempt, 200 after.
			rc := newReceiver(t, func(_ *http.Request, e proto.Envelope, attempt int) int {
				if e.ID == bad && attempt == 1 {
					return tc.status
				}
				return http.StatusOK
			})
			dropped := &counter{}
			r := NewReporter(NewHTTPTransport(rc.srv.URL, 5*time.Second, nil), testLogger(t),
				fastBackoff(), WithDroppedCounter(dropped))
			run(t, r)
			for _, e := range es {
				r.Publish(e)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if err := r.Flush(ctx); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			got, attempts, _ := rc.snapshot()
			s := counts(r.Stats())
			if tc.permanent {
				if want := []string{es[0].ID, es[2].ID}; !slices.Equal(got, want) {
					t.Errorf("accepted %v, want %v", got, want)
				}
				if attempts[bad] != 1 {
					t.Errorf("refused event sent %d times, want once (no retry)", attempts[bad])
				}
				if s != (Stats{Delivered: 2, Dropped: 1, Rejected: 1}) || dropped.n.Load() != 1 {
					t.Errorf("Stats = %+v, counter %d; want 2 delivered, 1 dropped and rejected", s, dropped.n.Load())
				}
				return
			}
			if !slices.Equal(got, ids(es)) {
				t.Errorf("accepted %v, want all three in order", got)
			}
			if attempts[bad] != 2 {
				t.Errorf("event sent %d times, want 2 (one retry)", attempts[bad])
			}
			if s != (Stats{Delivered: 3, Retries: 1}) {
				t.Errorf("Stats = %+v, want 3 delivered after 1 retry", s)
			}
		})
	}
}

func TestPublishDoesNotBlockWhileReceiverHangs(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var returned atomic.Bool
	rc := newReceiver(t, func(r *http.Request, _ proto.Envelope, _ int) int {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		returned.Store(true)
		return http.StatusOK
	})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the server closes (cleanups run last-in first-out)

	// A small queue keeps the delivery after the release short, and makes
	// the hung receiver overflow it.
	r := NewReporter(NewHTTPTransport(rc.srv.URL, 0, nil), testLogger(t),
		WithSendTimeout(time.Minute), WithQueueSize(100))
	run(t, r)
	es := events(t, 10001)
	r.Publish(es[0])
	select {
	case <-entered:
	case <-time.After(waitTimeout):
		t.Fatal("receiver never got the first event")
	}

	// The receiver is now blocked on es[0]. Publishing 10,000 more events
	// must complete regardless; if Publish waited for delivery or for queue
	// space this would hang until the deadline.
	published := make(chan struct{})
	go func() {
		defer close(published)
		for _, e := range es[1:] {
			r.Publish(e)
		}
	}()
	select {
	case <-published:
	case <-time.After(waitTimeout):
		t.Fatal("Publish blocked while the receiver hung")
	}
	if returned.Load() {
		t.Fatal("receiver returned before being released: the test proved nothing")
	}
	if s := counts(r.Stats()); s != (Stats{Queued: 101, Dropped: 9900}) {
		t.Fatalf("Stats = %+v, want 100 queued + 1 in flight, 9900 dropped", s)
	}

	unblock()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	// The in-flight event, then the 100 newest.
	want := append([]string{es[0].ID}, ids(es[len(es)-100:])...)
	if got, _, _ := rc.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("receiver accepted %d events, want the first and the 100 newest in order", len(got))
	}
}

func TestOverflowDropsOldest(t *testing.T) {
	rc := newReceiver(t, nil)
	dropped := &counter{}
	r := NewReporter(NewHTTPTransport(rc.srv.URL, 5*time.Second, nil), testLogger(t),
		WithQueueSize(3), WithDroppedCounter(dropped))
	es := events(t, 5)
	for _, e := range es { // not running yet: everything queues
		r.Publish(e)
	}
	if s := counts(r.Stats()); s != (Stats{Queued: 3, Dropped: 2}) || dropped.n.Load() != 2 {
		t.Fatalf("Stats = %+v, counter %d; want 3 queued and 2 dropped", s, dropped.n.Load())
	}
	run(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got, _, _ := rc.snapshot(); !slices.Equal(got, ids(es[2:])) {
		t.Fatalf("accepted %v, want the 3 newest %v", got, ids(es[2:]))
	}
}

func TestFlushWithoutDeliveryFailsWithContext(t *testing.T) {
	r := NewReporter(NewNopTransport(), testLogger(t))
	if err := r.Flush(context.Background()); err != nil {
		t.Fatalf("Flush on an empty reporter: %v", err)
	}
	r.Publish(event(t, 1)) // Run not started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := r.Flush(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 undelivered") {
		t.Fatalf("Flush = %v, want a deadline error counting 1 undelivered event", err)
	}
}

func TestCancelledDeliveryIsRequeued(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	rc := newReceiver(t, func(r *http.Request, _ proto.Envelope, _ int) int {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	t.Cleanup(func() { close(release) })
	r := NewReporter(NewHTTPTransport(rc.srv.URL, 0, nil), testLogger(t))
	stop := run(t, r)
	r.Publish(event(t, 1))
	select {
	case <-entered:
	case <-time.After(waitTimeout):
		t.Fatal("receiver never got the event")
	}
	stop()
	if s := counts(r.Stats()); s != (Stats{Queued: 1}) {
		t.Fatalf("Stats after cancel = %+v, want the event back in the queue", s)
	}
}

func TestSecondRunReturns(t *testing.T) {
	r := NewReporter(NewNopTransport(), testLogger(t))
	run(t, r)
	waitFor(t, "the first Run to start", r.running.Load)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(context.Background())
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("second concurrent Run did not return")
	}
}

func TestHTTPTransportErrors(t *testing.T) {
	e := event(t, 1)
	ctx := context.Background()

	for _, u := range []string{"not a url", "ftp://example.com/x", "/relative", "http://%zz"} {
		if err := NewHTTPTransport(u, time.Second, nil).Send(ctx, e); !errors.Is(err, ErrPermanent) {
			t.Errorf("Send to %q = %v, want ErrPermanent", u, err)
		}
	}

	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close() // nothing listens there any more
	err := NewHTTPTransport(addr, time.Second, nil).Send(ctx, e)
	if err == nil || errors.Is(err, ErrPermanent) {
		t.Errorf("Send to a closed port = %v, want a retryable error", err)
	}

	err = NewHTTPTransport("http://user:hunter2@"+strings.TrimPrefix(addr, "http://"), time.Second, nil).Send(ctx, e)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Send error %q must not reveal the URL's password", err)
	}
}

func TestNopTransport(t *testing.T) {
	r := NewReporter(NewNopTransport(), testLogger(t))
	run(t, r)
	for _, e := range events(t, 10) {
		r.Publish(e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if s := counts(r.Stats()); s != (Stats{Delivered: 10}) {
		t.Fatalf("Stats = %+v, want 10 delivered", s)
	}
}

// counter is a Counter for WithDroppedCounter.
type counter struct{ n atomic.Int64 }

func (c *counter) Inc() { c.n.Add(1) }

func BenchmarkPublish(b *testing.B) {
	r := NewReporter(NewNopTransport(), zap.NewNop(), WithQueueSize(1<<20))
	e := event(b, 1)
	for b.Loop() {
		r.Publish(e)
	}
}

// counts is s without Requests (how events were grouped into requests
// depends on timing; the per-event counters do not).
func counts(s Stats) Stats {
	s.Requests = 0
	return s
}

// gatedReceiver holds the first request until release is closed, so that
// events queue up behind it.
func gatedReceiver(t *testing.T, status func(e proto.Envelope, attempt int) int) (rc *receiver, entered <-chan struct{}, release chan struct{}) {
	in := make(chan struct{})
	release = make(chan struct{})
	var first sync.Once
	rc = newReceiver(t, func(_ *http.Request, e proto.Envelope, attempt int) int {
		first.Do(func() {
			close(in)
			<-release
		})
		return status(e, attempt)
	})
	return rc, in, release
}

// publishBehindGate publishes es[0], waits until the gated receiver holds
// it, queues the rest behind it, opens the gate and waits until every
// event was delivered or dropped.
func publishBehindGate(t *testing.T, r *Reporter, es []proto.Envelope, entered <-chan struct{}, release chan struct{}) {
	t.Helper()
	r.Publish(es[0])
	<-entered
	for _, e := range es[1:] {
		r.Publish(e)
	}
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func TestQueuedEventsGoInBatchesInOrder(t *testing.T) {
	rc, entered, release := gatedReceiver(t, func(proto.Envelope, int) int { return http.StatusOK })
	r := NewReporter(NewHTTPTransport(rc.srv.URL, 5*time.Second, nil), testLogger(t), WithMaxBatch(20))
	run(t, r)
	es := events(t, 51)
	publishBehindGate(t, r, es, entered, release)
	got, _, _ := rc.snapshot()
	if !slices.Equal(got, ids(es)) {
		t.Fatalf("accepted %d events, want all 51 in publish order", len(got))
	}
	rc.mu.Lock()
	batches := slices.Clone(rc.batches)
	rc.mu.Unlock()
	// The first event alone (the gate), then the 50 queued ones in
	// batches of at most 20.
	if want := []int{1, 20, 20, 10}; !slices.Equal(batches, want) {
		t.Errorf("events per request %v, want %v", batches, want)
	}
	if s := r.Stats(); s.Delivered != 51 || s.Requests != 4 || s.Dropped != 0 {
		t.Errorf("Stats = %+v, want 51 delivered in 4 requests", s)
	}
}

func TestBatchRefusalsDropOnlyTheRefusedEvents(t *testing.T) {
	var bad string
	rc, entered, release := gatedReceiver(t, func(e proto.Envelope, _ int) int {
		if e.ID == bad {
			return http.StatusUnprocessableEntity
		}
		return http.StatusOK
	})
	dropped := &counter{}
	r := NewReporter(NewHTTPTransport(rc.srv.URL, 5*time.Second, nil), testLogger(t), fastBackoff(), WithDroppedCounter(dropped))
	run(t, r)
	es := events(t, 6)
	bad = es[3].ID
	publishBehindGate(t, r, es, entered, release)
	got, attempts, _ := rc.snapshot()
	want := append(ids(es[:3:3]), ids(es[4:])...)
	if !slices.Equal(got, want) {
		t.Errorf("accepted %v, want %v (all but the refused one, in order)", got, want)
	}
	if attempts[bad] != 1 {
		t.Errorf("refused event sent %d times, want once", attempts[bad])
	}
	if s := counts(r.Stats()); s != (Stats{Delivered: 5, Dropped: 1, Rejected: 1}) || dropped.n.Load() != 1 {
		t.Errorf("Stats = %+v, counter %d; want 5 delivered, 1 dropped and rejected", s, dropped.n.Load())
	}
}

func TestBatchRetriedWholeOnRetryableFailure(t *testing.T) {
	var flaky string
	rc, entered, release := gatedReceiver(t, func(e proto.Envelope, attempt int) int {
		if e.ID == flaky && attempt == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	r := NewReporter(NewHTTPTransport(rc.srv.URL, 5*time.Second, nil), testLogger(t), fastBackoff())
	run(t, r)
	es := events(t, 5)
	flaky = es[2].ID
	publishBehindGate(t, r, es, entered, release)
	got, attempts, _ := rc.snapshot()
	if !slices.Equal(got, ids(es)) {
		t.Errorf("accepted %v, want all five in order", got)
	}
	for _, e := range es[1:] {
		if attempts[e.ID] != 2 {
			t.Errorf("event %s of the failed batch sent %d times, want 2 (the whole batch retried)", e.ID, attempts[e.ID])
		}
	}
	if s := counts(r.Stats()); s != (Stats{Delivered: 5, Retries: 1}) {
		t.Errorf("Stats = %+v, want 5 delivered after 1 retry", s)
	}
}

func TestMaxBatchOneSendsSingleEvents(t *testing.T) {
	rc, entered, release := gatedReceiver(t, func(proto.Envelope, int) int { return http.StatusOK })
	r := NewReporter(NewHTTPTransport(rc.srv.URL, 5*time.Second, nil), testLogger(t), WithMaxBatch(1))
	run(t, r)
	es := events(t, 4)
	publishBehindGate(t, r, es, entered, release)
	rc.mu.Lock()
	batches := slices.Clone(rc.batches)
	rc.mu.Unlock()
	if want := []int{1, 1, 1, 1}; !slices.Equal(batches, want) {
		t.Errorf("events per request %v, want %v", batches, want)
	}
}

// summary returns a member summary of node at timestamp ms.
func summary(t testing.TB, node string, ms int64) proto.Envelope {
	t.Helper()
	h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: "test", Cluster: "c1"}, Node: node, Term: 3, TimestampMS: ms}
	e, err := proto.NewEnvelope(proto.TypeMemberSummary, proto.AgentSource("test", "c1", node), h,
		proto.MemberSummary{IntervalMS: 3000, Role: proto.RoleReplica, State: proto.StateRunning, LagBytes: -1})
	if err != nil {
		t.Fatalf("NewEnvelope: %v", err)
	}
	return e
}

func TestPublishLatestKeepsOnlyTheNewestQueuedPerSource(t *testing.T) {
	rc, entered, release := gatedReceiver(t, func(proto.Envelope, int) int { return http.StatusOK })
	r := NewReporter(NewHTTPTransport(rc.srv.URL, 5*time.Second, nil), testLogger(t))
	run(t, r)
	gate := event(t, 1)
	r.Publish(gate)
	<-entered
	// Queued behind the held request: an older summary of n1 is replaced,
	// n2's is not (another source), other events stay in order.
	s1, s2, n2 := summary(t, "n1", 1), summary(t, "n1", 2), summary(t, "n2", 1)
	e2, e3 := event(t, 2), event(t, 3)
	r.PublishLatest(s1)
	r.Publish(e2)
	r.PublishLatest(n2)
	r.Publish(e3)
	r.PublishLatest(s2)
	if q := r.Stats().Queued; q != 5 { // the gate in flight + e2, n2, e3, s2
		t.Errorf("queued %d, want 5", q)
	}
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	got, _, _ := rc.snapshot()
	if want := ids([]proto.Envelope{gate, e2, n2, e3, s2}); !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	if st := r.Stats(); st.Dropped != 0 {
		t.Errorf("Dropped = %d, want 0: a replaced summary is not a drop", st.Dropped)
	}
}
