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
