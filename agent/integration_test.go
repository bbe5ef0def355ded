package agent_test

// Integration tests: real dbpilot-agent processes, real PostgreSQL and an
// embedded etcd (agent/localcluster). They poll for outcomes with deadlines;
// nothing sleeps and then asserts.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/agent/localcluster"
	"github.com/dbpilot/dbpilot/proto"
)

var agentBin string

func TestMain(m *testing.M) {
	if matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres"); len(matches) == 0 {
		fmt.Println("PostgreSQL server binaries not found: run deploy/dev/install-deps.sh (make test does)")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "dbpilot-agent-bin")
	if err != nil {
		panic(err)
	}
	// PostgreSQL's OS user runs the agent binary as archive_command.
	if err := os.Chmod(dir, 0o755); err != nil {
		panic(err)
	}
	agentBin = filepath.Join(dir, "dbpilot-agent")
	args := []string{"build", "-o", agentBin}
	if os.Getenv("DBPILOT_AGENT_RACE") == "1" {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "github.com/dbpilot/dbpilot/cmd/dbpilot-agent")...).CombinedOutput()
	if err != nil {
		fmt.Printf("building dbpilot-agent: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startCluster(t *testing.T, o localcluster.Options) *localcluster.Cluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
		if keep := os.Getenv("DBPILOT_TEST_KEEP"); keep != "" {
			// Keep logs and data for a post-mortem.
			o.Dir = filepath.Join(keep, t.Name())
			_ = os.RemoveAll(o.Dir)
		}
	}
	o.AgentBin = agentBin
	c, err := localcluster.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				b, _ := os.ReadFile(n.LogPath)
				t.Logf("==== %s agent.log (last 60 lines)\n%s", n.Name, tail(string(b), 60))
			}
		}
		c.Close()
	})
	return c
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func waitFor(t *testing.T, c *localcluster.Cluster, d time.Duration, what string, cond func(localcluster.Status) bool) localcluster.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	s, err := c.WaitFor(ctx, what, cond)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func healthy(c *localcluster.Cluster, sync bool) func(localcluster.Status) bool {
	return func(s localcluster.Status) bool {
		ok := s.Leader != "" && slices.Equal(s.Primaries(), []string{s.Leader}) && len(s.Streaming()) == len(c.Nodes)-1
		if ok && sync {
			ok = s.SyncSettled()
		}
		return ok
	}
}

func logContains(t *testing.T, n *localcluster.Node, sub string) bool {
	t.Helper()
	b, _ := os.ReadFile(n.LogPath)
	return bytes.Contains(b, []byte(sub))
}

// TestHACluster walks one synchronous three-node cluster through the life
// the issue describes: simultaneous bootstrap, streaming, planned switchover,
// host loss, rejoin by pg_rewind, fencing on etcd loss and graceful stop,
// with a writer running throughout and the acknowledged rows checked.
func TestHACluster(t *testing.T) {
	events := newEventSink(t)
	c := startCluster(t, localcluster.Options{Nodes: 3, SynchronousMode: "on", EventsURL: events.URL})
	ctx := context.Background()

	// Bootstrap: three agents started at the same instant end with exactly one primary.
	s := waitFor(t, c, 90*time.Second, "one primary, two streaming replicas", healthy(c, true))
	if s.Term != 1 || len(s.History) != 1 || s.History[0].Reason != "bootstrap" {
		t.Fatalf("after bootstrap: term %d history %+v", s.Term, s.History)
	}
	for _, n := range c.Nodes {
		if _, err := os.Stat(filepath.Join(n.Dir, "state", "bootstrap.lock")); err != nil {
			t.Fatalf("%s: no bootstrap lock file: %v", n.Name, err)
		}
	}

	// Replicas report their replay lag in time as well as in bytes.
	s = waitFor(t, c, 20*time.Second, "replicas reporting lag in seconds", func(s localcluster.Status) bool {
		for _, m := range s.Members {
			if m.Node != s.Leader && (m.LagSeconds < 0 || m.LagSeconds > 60) {
				return false
			}
		}
		return true
	})

	// The HTTP endpoint routes like Patroni's: /primary only on the leader,
	// /replica only on streaming replicas.
	for _, n := range c.Nodes {
		isLeader := n.Name == s.Leader
		wantPrimary, wantReplica := 503, 200
		if isLeader {
			wantPrimary, wantReplica = 200, 503
		}
		if got := httpStatus(t, n, "/primary"); got != wantPrimary {
			t.Fatalf("%s /primary = %d, want %d", n.Name, got, wantPrimary)
		}
		if got := httpStatus(t, n, "/replica?lag=1048576"); got != wantReplica {
			t.Fatalf("%s /replica = %d, want %d", n.Name, got, wantReplica)
		}
	}

	w, err := c.NewWriter(ctx, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	probe := c.NewWritableProbe(25 * time.Millisecond)
	lctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.Run(lctx) }()
	go func() { defer wg.Done(); probe.Run(lctx) }()
	stop := sync.OnceFunc(func() { stopLoad(); wg.Wait() })
	t.Cleanup(stop)

	// Replica streaming: rows written on the primary show up on every replica.
	waitAcks(t, w, 20)
	row := w.Acks()[10].N
	for i, n := range c.Nodes {
		if n.Name == s.Leader {
			continue
		}
		waitRow(t, c, i, row)
	}

	t.Run("switchover", func(t *testing.T) {
		old := s.Leader
		if err := c.RequestSwitchover(ctx, old, ""); err != nil {
			t.Fatal(err)
		}
		s = waitFor(t, c, 60*time.Second, "a new primary after switchover", func(s localcluster.Status) bool {
			return s.Leader != "" && s.Leader != old && healthy(c, true)(s)
		})
		if h := s.History[len(s.History)-1]; h.Reason != "switchover" || h.Term != s.Term {
			t.Fatalf("last history %+v, want reason switchover at term %d", h, s.Term)
		}
	})

	t.Run("host loss failover and rejoin with pg_rewind", func(t *testing.T) {
		old, term := s.Leader, s.Term
		waitAcks(t, w, len(w.Acks())+20)
		oi := c.Index(old)
		if err := c.Kill(oi); err != nil {
			t.Fatal(err)
		}
		s = waitFor(t, c, 60*time.Second, "a new primary after SIGKILL of the primary host", func(s localcluster.Status) bool {
			return s.Leader != "" && s.Leader != old && len(s.Primaries()) == 1
		})
		if s.Term != term+1 || s.History[len(s.History)-1].Reason != "failover" {
			t.Fatalf("term %d (want %d), history %+v", s.Term, term+1, s.History[len(s.History)-1])
		}
		if err := c.StartNode(oi); err != nil {
			t.Fatal(err)
		}
		s = waitFor(t, c, 90*time.Second, "the old primary streaming as a replica", func(s localcluster.Status) bool {
			m, ok := s.Member(old)
			return ok && m.Role == "replica" && m.Streaming && healthy(c, true)(s)
		})
		if !logContains(t, c.Nodes[oi], "rejoined as replica") {
			t.Fatalf("%s did not go through the rewind path", old)
		}
	})

	t.Run("fencing when the primary loses etcd", func(t *testing.T) {
		old := s.Leader
		oi := c.Index(old)
		cut := time.Now()
		c.Nodes[oi].Proxy.Cut(true)
		// Read-only before the TTL (5 s default) can expire.
		readOnlyBy := time.Time{}
		for deadline := cut.Add(5 * time.Second); time.Now().Before(deadline); {
			if !writable(ctx, c, oi) {
				readOnlyBy = time.Now()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if readOnlyBy.IsZero() {
			t.Fatalf("%s still writable %s after losing etcd", old, time.Since(cut))
		}
		t.Logf("%s read-only %s after losing etcd", old, readOnlyBy.Sub(cut))
		s = waitFor(t, c, 60*time.Second, "a new primary while the old one is partitioned", func(s localcluster.Status) bool {
			return s.Leader != "" && s.Leader != old
		})
		c.Nodes[oi].Proxy.Cut(false)
		s = waitFor(t, c, 90*time.Second, "the partitioned primary back as a streaming replica", func(s localcluster.Status) bool {
			m, ok := s.Member(old)
			return ok && m.Role == "replica" && m.Streaming && healthy(c, true)(s)
		})
	})

	t.Run("graceful stop hands over leadership", func(t *testing.T) {
		old, term := s.Leader, s.Term
		oi := c.Index(old)
		start := time.Now()
		if err := c.Stop(oi, 60*time.Second); err != nil {
			t.Fatal(err)
		}
		s = waitFor(t, c, 30*time.Second, "a new primary after SIGTERM", func(s localcluster.Status) bool {
			return s.Leader != "" && s.Leader != old && len(s.Primaries()) == 1
		})
		if h := s.History[len(s.History)-1]; h.Reason != "switchover" || s.Term != term+1 {
			t.Fatalf("graceful stop: history %+v term %d, want a switchover at term %d", h, s.Term, term+1)
		}
		t.Logf("graceful stop: new primary %s after %s", s.Leader, time.Since(start))
		if err := c.StartNode(oi); err != nil {
			t.Fatal(err)
		}
		s = waitFor(t, c, 90*time.Second, "the stopped node back as a replica", healthy(c, true))
	})

	// Every primary change reached the receiver as a primary_changed event
	// carrying its term and reason, as the history records it.
	for _, h := range s.History {
		if h.Abandoned != "" {
			t.Logf("term %d: %s claimed but did not promote: %s", h.Term, h.Node, h.Abandoned)
			continue
		}
		events.waitPrimaryChanged(t, h.Term, h.Node, h.Reason)
	}
	events.checkPositions(t)

	stop()
	if split, most := probe.SplitBrain(); split > 0 || most > 1 {
		t.Fatalf("split brain: %s with %d writable nodes", split, most)
	}
	acks := w.Acks()
	missing, err := c.Missing(ctx, c.Index(s.Leader), acks)
	if err != nil {
		t.Fatal(err)
	}
	if len(acks) < 100 || len(missing) > 0 {
		t.Fatalf("%d acknowledged writes, %d missing after the faults: %v", len(acks), len(missing), missing)
	}
	t.Logf("%d acknowledged writes, none lost; %d probe rounds, no split brain", len(acks), probe.Samples())
}

func writable(ctx context.Context, c *localcluster.Cluster, i int) bool {
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	conn, err := c.Connect(cctx, i)
	if err != nil {
		return false
	}
	defer conn.Close(context.Background())
	var rec bool
	if err := conn.QueryRow(cctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		return false
	}
	return !rec
}

func waitAcks(t *testing.T, w *localcluster.Writer, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(w.Acks()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d acknowledged writes, want %d", len(w.Acks()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitRow(t *testing.T, c *localcluster.Cluster, i int, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := c.Connect(context.Background(), i)
		if err == nil {
			var found bool
			err = conn.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM dbpilot_writer WHERE n = $1)", n).Scan(&found)
			conn.Close(context.Background())
			if err == nil && found {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("row %d never reached %s: %v", n, c.Nodes[i].Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpStatus(t *testing.T, n *localcluster.Node, path string) int {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", n.HTTPPort, path))
	if err != nil {
		t.Fatalf("%s %s: %v", n.Name, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// eventSink is a real HTTP receiver for the agents' CloudEvents.
type eventSink struct {
	URL string
	mu  sync.Mutex
	got []proto.Envelope
	bad int
}

func newEventSink(t *testing.T) *eventSink {
	es := &eventSink{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		// The Reporter sends what is queued as one batch (a JSON array,
		// proto.BatchMediaType), a single event otherwise.
		raws := []json.RawMessage{b}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == proto.BatchMediaType {
			if err := json.Unmarshal(b, &raws); err != nil {
				raws = []json.RawMessage{b}
			}
		}
		es.mu.Lock()
		defer es.mu.Unlock()
		var decoded []proto.Envelope
		for _, raw := range raws {
			e, err := proto.DecodeEnvelope(raw)
			if err != nil {
				es.bad++
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			decoded = append(decoded, e)
		}
		es.got = append(es.got, decoded...)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	es.URL = srv.URL
	return es
}

// checkPositions: every event carries the etcd revision it was derived
// from (> 0), and each agent's events arrive with non-decreasing
// (term, revision), the order consumers rely on (docs/events.md). Backup
// events are outside this order.
func (es *eventSink) checkPositions(t *testing.T) {
	t.Helper()
	es.mu.Lock()
	defer es.mu.Unlock()
	last := map[string]proto.Envelope{}
	for _, e := range es.got {
		if strings.HasPrefix(e.Type, "io.dbpilot.backup.") {
			continue // unordered by design: sent from the durable outbox
		}
		if e.Revision <= 0 {
			t.Errorf("event %s (%s from %s) has dbpilotrevision %d, want the etcd revision it was derived from", e.ID, e.Type, e.Source, e.Revision)
		}
		if prev, ok := last[e.Source]; ok && e.Before(prev) {
			t.Errorf("%s: %s at (term %d, revision %d) arrived after %s at (term %d, revision %d)",
				e.Source, e.Type, e.Term, e.Revision, prev.Type, prev.Term, prev.Revision)
		}
		last[e.Source] = e
	}
}

func (es *eventSink) waitPrimaryChanged(t *testing.T, term uint64, node, reason string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		es.mu.Lock()
		for _, e := range es.got {
			if e.Type != proto.TypePrimaryChanged {
				continue
			}
			p, err := e.Payload()
			if pc, ok := p.(proto.PrimaryChanged); err == nil && ok && pc.Term == term && pc.Primary == node && pc.Reason == reason {
				es.mu.Unlock()
				return
			}
		}
		bad := es.bad
		es.mu.Unlock()
		if bad > 0 {
			t.Fatalf("%d malformed events received", bad)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no primary_changed event for term %d (%s, %s)", term, node, reason)
}
