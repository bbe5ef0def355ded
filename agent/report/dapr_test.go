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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	runtimev1 "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

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
	grpcPort := freePort(t)

	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	cmd := exec.CommandContext(ctx, daprd,
		"--app-id", "dbpilot-report-test",
		"--app-port", appPort,
		"--app-protocol", "http",
		"--dapr-grpc-port", grpcPort,
		"--dapr-http-port", freePort(t),
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
	var tr *DaprTransport
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		tr, err = NewDaprTransport(cctx, "127.0.0.1:"+grpcPort, testPubsub, testTopic)
		ccancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daprd never accepted a connection: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
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

// sidecar is a stand-in for daprd's gRPC API that records PublishEvent
// requests and fails them with the code next says. It checks what the
// transport sends; TestDaprTransport checks what Dapr makes of it.
type sidecar struct {
	runtimev1.UnimplementedDaprServer
	mu   sync.Mutex
	reqs []*runtimev1.PublishEventRequest
	fail codes.Code
}

func (s *sidecar) PublishEvent(_ context.Context, req *runtimev1.PublishEventRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, req)
	if s.fail != codes.OK {
		return nil, status.Error(s.fail, "refused by the test sidecar")
	}
	return &emptypb.Empty{}, nil
}

func TestDaprTransportRequest(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sc := &sidecar{}
	srv := grpc.NewServer()
	runtimev1.RegisterDaprServer(srv, sc)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() { srv.Stop(); <-served })

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tr, err := NewDaprTransport(ctx, l.Addr().String(), testPubsub, testTopic)
	if err != nil {
		t.Fatalf("NewDaprTransport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })

	e := event(t, 7)
	if err := tr.Send(ctx, e); err != nil {
		t.Fatalf("Send: %v", err)
	}
	sc.mu.Lock()
	req := sc.reqs[0]
	sc.mu.Unlock()
	if req.GetPubsubName() != testPubsub || req.GetTopic() != testTopic {
		t.Errorf("published to %s/%s, want %s/%s", req.GetPubsubName(), req.GetTopic(), testPubsub, testTopic)
	}
	if req.GetDataContentType() != proto.MediaType {
		t.Errorf("data content type %q, want %q so that Dapr keeps our envelope", req.GetDataContentType(), proto.MediaType)
	}
	if _, raw := req.GetMetadata()["rawPayload"]; raw {
		t.Errorf("rawPayload metadata set: subscribers would get a Dapr-made wrapper")
	}
	got, err := proto.DecodeEnvelope(req.GetData())
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Errorf("published data decodes to %+v, %v; want the event itself", got, err)
	}

	for _, tc := range []struct {
		code      codes.Code
		permanent bool
	}{
		{codes.InvalidArgument, true},
		{codes.PermissionDenied, true},
		{codes.Unimplemented, true},
		{codes.Unavailable, false},
		{codes.Internal, false},
		{codes.FailedPrecondition, false},
		{codes.DeadlineExceeded, false},
	} {
		sc.mu.Lock()
		sc.fail = tc.code
		sc.mu.Unlock()
		err := tr.Send(ctx, e)
		if err == nil || errors.Is(err, ErrPermanent) != tc.permanent {
			t.Errorf("Send failing with %s = %v, want permanent=%v", tc.code, err, tc.permanent)
		}
	}
}

func TestNewDaprTransportArguments(t *testing.T) {
	_, err := NewDaprTransport(context.Background(), "", "", "")
	if err == nil {
		t.Fatal("NewDaprTransport with no arguments succeeded")
	}
	for _, want := range []string{"address", "pubsub", "topic"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

// serveSidecar serves a fake Dapr sidecar on addr until the returned stop
// function is called.
func serveSidecar(t *testing.T, addr string, sc *sidecar) (stop func()) {
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
	srv := grpc.NewServer()
	runtimev1.RegisterDaprServer(srv, sc)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { srv.Stop(); <-served }) }
	t.Cleanup(stop)
	return stop
}

// TestDaprTransportSidecarDownThenRestarted: the sidecar is down when the
// transport is made (issue 10: the agent must start and run anyway), so
// NewDaprTransport returns at once without error and events queue; they are
// delivered in order once the sidecar comes up, and again across a sidecar
// restart.
func TestDaprTransportSidecarDownThenRestarted(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	start := time.Now()
	tr, err := NewDaprTransport(t.Context(), addr, testPubsub, testTopic)
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
	if s := r.Stats(); s.Delivered != 0 || s.Queued != 4 {
		t.Fatalf("stats with the sidecar down = %+v, want 4 queued, none delivered", s)
	}

	sc := &sidecar{}
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

	sc.mu.Lock()
	var got []string
	for _, req := range sc.reqs {
		e, err := proto.DecodeEnvelope(req.GetData())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || got[len(got)-1] != e.ID { // at least once: a retry may repeat the last
			got = append(got, e.ID)
		}
	}
	sc.mu.Unlock()
	if want := ids(es); !reflect.DeepEqual(got, want) {
		t.Errorf("sidecar received %q,\nwant in order %q", got, want)
	}
}
