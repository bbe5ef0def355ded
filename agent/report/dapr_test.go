package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/proto"
)

const (
	testPubsub = "pubsub"
	testTopic  = "dbpilot-events"
)

// daprdPath returns the daprd binary from $DBPILOT_DAPRD or PATH, or skips.
func daprdPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("DBPILOT_DAPRD"); p != "" {
		return p
	}
	p, err := exec.LookPath("daprd")
	if err != nil {
		t.Skip("daprd not found on PATH and DBPILOT_DAPRD not set: skipping the Dapr round trip " +
			"(install the Dapr runtime binary daprd to run it)")
	}
	return p
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// syncBuffer collects a process's output for the failure log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDaprTransport publishes through a real daprd with an in-memory pub/sub
// component and checks that the subscriber receives our CloudEvent itself
// (same id, type, term, revision and data), not a Dapr-made wrapper.
func TestDaprTransport(t *testing.T) {
	daprd := daprdPath(t)

	// The subscribing app: Dapr asks it for subscriptions, then delivers.
	received := make(chan proto.Envelope, 16)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/dapr/subscribe":
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode([]map[string]string{{"pubsubname": testPubsub, "topic": testTopic, "route": "/events"}})
		case "/events":
			body, _ := io.ReadAll(r.Body)
			e, err := proto.DecodeEnvelope(body)
			if err != nil {
				t.Errorf("subscriber: %v\n%s", err, body)
				w.WriteHeader(http.StatusOK) // do not make Dapr redeliver
				return
			}
			select {
			case received <- e:
			default:
			}
			w.WriteHeader(http.StatusOK)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(app.Close)

	dir := t.TempDir()
	component := "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: " + testPubsub +
		"\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metadata: []\n"
	if err := os.WriteFile(filepath.Join(dir, "pubsub.yaml"), []byte(component), 0o600); err != nil {
		t.Fatal(err)
	}
	_, appPort, _ := net.SplitHostPort(app.Listener.Addr().String())
	httpPort := freePort(t)

	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	cmd := exec.CommandContext(ctx, daprd,
		"--app-id", "dbpilot-report-test",
		"--app-port", appPort,
		"--app-protocol", "http",
		"--dapr-grpc-port", freePort(t),
		"--dapr-http-port", httpPort,
		"--dapr-internal-grpc-port", freePort(t),
		"--metrics-port", freePort(t),
		"--resources-path", dir,
		"--log-level", "warn",
	)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start daprd: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("daprd output:\n%s", out.String())
		}
	})

	deadline := time.Now().Add(60 * time.Second)
	// Made before daprd listens: the transport must not need it yet.
	tr, err := NewDaprTransport("127.0.0.1:"+httpPort, testPubsub, testTopic)
	if err != nil {
		t.Fatalf("NewDaprTransport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })

	// Subscriptions load asynchronously: publish fresh events until one
	// arrives. The in-memory broker drops events published before then.
	sent := make(map[string]proto.Envelope)
	for rev := int64(1); ; rev++ {
		if time.Now().After(deadline) {
			t.Fatalf("no event reached the subscriber through daprd (%d sent)", len(sent))
		}
		e := event(t, rev)
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		err := tr.Send(sctx, e)
		scancel()
		if err != nil {
			t.Logf("publish: %v (retrying)", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		sent[e.ID] = e
		select {
		case got := <-received:
			want, ok := sent[got.ID]
			if !ok {
				t.Fatalf("subscriber got an event with id %q we never sent: Dapr re-wrapped it", got.ID)
			}
			if !sameEvent(got, want) {
				t.Fatalf("subscriber got %+v,\nwant %+v", got, want)
			}
			// The same sidecar refuses an unknown component for good.
			bad, err := NewDaprTransport("127.0.0.1:"+httpPort, "no-such-pubsub", testTopic)
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
			defer scancel()
			if err := bad.Send(sctx, event(t, rev+1)); !errors.Is(err, ErrPermanent) {
				t.Errorf("publish to an unknown pub/sub component: %v, want an error wrapping ErrPermanent", err)
			}
			return
		case <-time.After(time.Second):
		}
	}
}

// sameEvent compares two envelopes by value: attributes exactly, data as the
// decoded payload (daprd re-encodes the JSON of data, e.g. sorting keys).
func sameEvent(a, b proto.Envelope) bool {
	pa, errA := a.Payload()
	pb, errB := b.Payload()
	a.Data, b.Data = nil, nil
	return errA == nil && errB == nil && reflect.DeepEqual(pa, pb) && reflect.DeepEqual(a, b)
}

// fakeSidecar stands in for daprd's HTTP publish API: it records requests
// and answers each with the status and body next says. It checks what the
// transport sends; TestDaprTransport checks what Dapr makes of it.
type fakeSidecar struct {
	mu     sync.Mutex
	reqs   []fakeRequest
	status int    // 0: 204
	body   string // the error body
}

type fakeRequest struct {
	method, path, query, contentType, token string
	body                                    []byte
}

func (s *fakeSidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, fakeRequest{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery,
		contentType: r.Header.Get("Content-Type"), token: r.Header.Get("dapr-api-token"), body: body})
	status, answer := s.status, s.body
	s.mu.Unlock()
	if status == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, answer)
}

func (s *fakeSidecar) answer(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

func (s *fakeSidecar) requests() []fakeRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

func TestDaprTransportRequest(t *testing.T) {
	t.Setenv("DAPR_API_TOKEN", "s3cret")
	sc := &fakeSidecar{}
	srv := httptest.NewServer(sc)
	t.Cleanup(srv.Close)

	tr, err := NewDaprTransport(srv.Listener.Addr().String(), testPubsub, testTopic)
	if err != nil {
		t.Fatalf("NewDaprTransport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	e := event(t, 7)
	if err := tr.Send(ctx, e); err != nil {
		t.Fatalf("Send: %v", err)
	}
	req := sc.requests()[0]
	if req.method != http.MethodPost || req.path != "/v1.0/publish/"+testPubsub+"/"+testTopic {
		t.Errorf("request %s %s, want POST /v1.0/publish/%s/%s", req.method, req.path, testPubsub, testTopic)
	}
	if req.contentType != proto.MediaType {
		t.Errorf("Content-Type %q, want %q so that Dapr keeps our envelope", req.contentType, proto.MediaType)
	}
	if strings.Contains(req.query, "rawPayload") {
		t.Errorf("rawPayload metadata set (%q): subscribers would get a Dapr-made wrapper", req.query)
	}
	if req.token != "s3cret" {
		t.Errorf("dapr-api-token header %q, want DAPR_API_TOKEN's value", req.token)
	}
	got, err := proto.DecodeEnvelope(req.body)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Errorf("published body decodes to %+v, %v; want the event itself", got, err)
	}

	// Answers as daprd 1.14 gives them (pkg/api/errors/pubsub.go), and a
	// few that do not come from Dapr at all.
	daprBody := func(code, msg string) string {
		return `{"errorCode":"` + code + `","message":"` + msg + `","details":[]}`
	}
	for _, tc := range []struct {
		name      string
		status    int
		body      string
		permanent bool
	}{
		{"unknown component", 404, daprBody("ERR_PUBSUB_NOT_FOUND", "pubsub pubsub is not found"), true},
		{"topic not found", 400, daprBody("ERR_PUBSUB_NOT_FOUND", "pubsub 'pubsub' not found"), true},
		{"topic not allowed", 403, daprBody("ERR_PUBSUB_FORBIDDEN", "topic dbpilot-events is not allowed for app id a"), true},
		{"empty pubsub name", 404, daprBody("ERR_PUBSUB_EMPTY", "pubsub name is empty"), true},
		{"empty topic", 404, daprBody("ERR_TOPIC_NAME_EMPTY", "topic is empty in pubsub pubsub"), true},
		{"malformed event", 500, daprBody("ERR_PUBSUB_CLOUD_EVENTS_SER", "cannot create cloudevent"), true},
		{"malformed metadata", 400, daprBody("ERR_PUBSUB_REQUEST_METADATA", "failed deserializing metadata"), true},
		{"broker failure", 500, daprBody("ERR_PUBSUB_PUBLISH_MESSAGE", "error when publishing to topic"), false},
		{"no pub/sub loaded", 400, daprBody("ERR_PUBSUB_NOT_CONFIGURED", "pubsub pubsub is not configured"), false},
		{"api token refused", 401, "invalid api token", true},
		{"not a dapr port", 404, "404 page not found", true},
		{"request timeout", 408, "", false},
		{"rate limited", 429, daprBody("ERR_TOO_MANY_REQUESTS", "slow down"), false},
		{"unknown 5xx code", 503, daprBody("ERR_SOMETHING_NEW", "?"), false},
		{"proxy error", 502, "bad gateway", false},
	} {
		sc.answer(tc.status, tc.body)
		err := tr.Send(ctx, e)
		if err == nil || errors.Is(err, ErrPermanent) != tc.permanent {
			t.Errorf("%s (%d %s): Send = %v, want permanent=%v", tc.name, tc.status, tc.body, err, tc.permanent)
		}
	}

	// A refusal names Dapr's code and message.
	sc.answer(403, daprBody("ERR_PUBSUB_FORBIDDEN", "topic dbpilot-events is not allowed for app id a"))
	if err := tr.Send(ctx, e); err == nil || !strings.Contains(err.Error(), "ERR_PUBSUB_FORBIDDEN: topic dbpilot-events is not allowed") {
		t.Errorf("refusal error %v does not quote Dapr's code and message", err)
	}

	_ = tr.Close()
	if err := tr.Send(ctx, e); !errors.Is(err, ErrPermanent) {
		t.Errorf("Send after Close = %v, want ErrPermanent", err)
	}
}

func TestDaprPermanent(t *testing.T) {
	for _, tc := range []struct {
		status    int
		code      string
		permanent bool
	}{
		{500, "ERR_PUBSUB_CLOUD_EVENTS_SER", true}, // the code wins over the status
		{400, "ERR_PUBSUB_NOT_CONFIGURED", false},  // and the other way round
		{403, "ERR_PUBSUB_FORBIDDEN", true},
		{404, "ERR_PUBSUB_NOT_FOUND", true},
		{500, "ERR_PUBSUB_PUBLISH_MESSAGE", false},
		{400, "", true},
		{404, "", true},
		{408, "", false},
		{429, "", false},
		{500, "", false},
		{503, "ERR_UNKNOWN", false},
		{302, "", false},
	} {
		if got := DaprPermanent(tc.status, tc.code); got != tc.permanent {
			t.Errorf("DaprPermanent(%d, %q) = %v, want %v", tc.status, tc.code, got, tc.permanent)
		}
	}
}

func TestNewDaprTransportArguments(t *testing.T) {
	_, err := NewDaprTransport("", "", "")
	if err == nil {
		t.Fatal("NewDaprTransport with no arguments succeeded")
	}
	for _, want := range []string{"address", "pubsub", "topic"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	for _, addr := range []string{"127.0.0.1", "http://127.0.0.1:3500", "127.0.0.1:0", "127.0.0.1:http", ":3500", "127.0.0.1:70000"} {
		if _, err := NewDaprTransport(addr, testPubsub, testTopic); err == nil || !strings.Contains(err.Error(), "host:port") {
			t.Errorf("NewDaprTransport(%q) = %v, want an error asking for host:port", addr, err)
		}
	}
	if _, err := NewDaprTransport("localhost:3500", testPubsub, testTopic); err != nil {
		t.Errorf("NewDaprTransport(localhost:3500): %v", err)
	}
}

// serveSidecar serves sc on addr until the returned stop function is
// called (which also drops open connections, as a sidecar restart does).
func serveSidecar(t *testing.T, addr string, sc *fakeSidecar) (stop func()) {
	t.Helper()
	var l net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if l, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: sc}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { _ = srv.Close(); <-served }) }
	t.Cleanup(stop)
	return stop
}

// TestDaprTransportSidecarDownThenRestarted: the sidecar is down when the
// transport is made (issue 10: the agent must start and run anyway), so
// NewDaprTransport returns at once without error and events queue; they are
// delivered in order once the sidecar comes up, and again across a sidecar
// restart (the kept-alive connection to the old one is dead by then).
func TestDaprTransportSidecarDownThenRestarted(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	start := time.Now()
	tr, err := NewDaprTransport(addr, testPubsub, testTopic)
	if err != nil {
		t.Fatalf("NewDaprTransport with the sidecar down: %v, want a transport", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("NewDaprTransport blocked %s with the sidecar down", took)
	}
	t.Cleanup(func() { _ = tr.Close() })

	r := NewReporter(tr, zap.NewNop(), WithBackoff(50*time.Millisecond, 300*time.Millisecond), WithSendTimeout(2*time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	es := events(t, 8)
	for _, e := range es[:4] {
		r.Publish(e)
	}
	deadline := time.Now().Add(waitTimeout)
	for r.Stats().Retries < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no failed delivery attempts with the sidecar down: %+v", r.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := r.Stats(); s.Delivered != 0 || s.Queued != 4 || s.Dropped != 0 {
		t.Fatalf("stats with the sidecar down = %+v, want 4 queued, none delivered or dropped", s)
	}

	sc := &fakeSidecar{}
	stop := serveSidecar(t, addr, sc)
	fctx, fcancel := context.WithTimeout(context.Background(), waitTimeout)
	defer fcancel()
	if err := r.Flush(fctx); err != nil {
		t.Fatalf("events not delivered after the sidecar came up: %v", err)
	}

	// The sidecar restarts: events published meanwhile wait for it.
	stop()
	for _, e := range es[4:] {
		r.Publish(e)
	}
	time.Sleep(300 * time.Millisecond)
	serveSidecar(t, addr, sc)
	if err := r.Flush(fctx); err != nil {
		t.Fatalf("events not delivered after the sidecar restarted: %v", err)
	}
	if s := r.Stats(); s.Dropped != 0 {
		t.Errorf("events dropped across the restart: %+v", s)
	}

	var got []string
	for _, req := range sc.requests() {
		e, err := proto.DecodeEnvelope(req.body)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || got[len(got)-1] != e.ID { // at least once: a retry may repeat the last
			got = append(got, e.ID)
		}
	}
	if want := ids(es); !reflect.DeepEqual(got, want) {
		t.Errorf("sidecar received %q,\nwant in order %q", got, want)
	}
}
