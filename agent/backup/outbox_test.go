package backup

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/proto"
)

// TestOutboxDrainsInOrderAfterReceiverReturns: while the receiver is down
// nothing is lost or marked delivered; when it returns every event arrives
// once, in order, with the id it was recorded with — also across a restart
// of the drain (a new agent process).
func TestOutboxDrainsInOrderAfterReceiverReturns(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	svc := &Service{Node: "n1", Cluster: proto.ClusterRef{Namespace: "ns", Project: "p", Cluster: "c"}, Store: s, Log: zaptest.NewLogger(t)}
	for i := 0; i < 5; i++ {
		r := Run{ID: NewID(), Job: "j", Node: "n1", Method: MethodPhysical, Repository: "fs"}
		if err := s.StartRun(ctx, &r, proto.TypeBackupStarted, proto.BackupStarted{Header: svc.header(time.Now()), BackupRun: runRef(r)}); err != nil {
			t.Fatal(err)
		}
		r.Status = StatusFailed
		if err := s.FinishRun(ctx, &r, proto.TypeBackupFailed, proto.BackupFailed{Header: svc.header(time.Now()), BackupRun: runRef(r), Error: "boom"}); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := s.PendingEvents(ctx, 100)

	var mu sync.Mutex
	up := false
	var got []proto.Envelope
	attempts := 0
	send := func(_ context.Context, e proto.Envelope) error {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if !up {
			return errors.New("connection refused")
		}
		got = append(got, e)
		return nil
	}
	drain := func(d time.Duration) {
		dctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			svc.DrainOutbox(dctx, send, nil, "dbpilot-agent/ns/c/n1", 10*time.Millisecond, 50*time.Millisecond)
		}()
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n == len(want) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
	}
	// Receiver down: attempts fail, nothing is marked delivered.
	for {
		drain(200 * time.Millisecond)
		mu.Lock()
		a := attempts
		mu.Unlock()
		if a >= 3 {
			break
		}
	}
	if p, _ := s.PendingEvents(ctx, 100); len(p) != len(want) {
		t.Fatalf("pending while the receiver is down: %d, want %d", len(p), len(want))
	}
	// Receiver back, drain restarted (as after an agent restart).
	mu.Lock()
	up = true
	mu.Unlock()
	drain(10 * time.Second)
	if len(got) != len(want) {
		t.Fatalf("delivered %d events, want %d", len(got), len(want))
	}
	seen := map[string]bool{}
	for i, e := range got {
		if e.ID != want[i].ID || e.Type != want[i].Type || seen[e.ID] {
			t.Fatalf("event %d: got %s %s, want %s %s (in order, once)", i, e.ID, e.Type, want[i].ID, want[i].Type)
		}
		seen[e.ID] = true
		if _, err := proto.DecodeEnvelope(mustJSON(t, e)); err != nil {
			t.Fatalf("delivered event does not validate: %v", err)
		}
	}
	if p, _ := s.PendingEvents(ctx, 100); len(p) != 0 {
		t.Fatalf("still pending after delivery: %d", len(p))
	}
}

func mustJSON(t *testing.T, e proto.Envelope) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
