package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/agent/localcluster"
	"github.com/dbpilot/dbpilot/internal/testutil"
	"github.com/dbpilot/dbpilot/proto"
)

// summaries returns the member summaries received from node, oldest first.
func (es *eventSink) summaries(t *testing.T, node string) []proto.MemberSummary {
	t.Helper()
	es.mu.Lock()
	defer es.mu.Unlock()
	var out []proto.MemberSummary
	for _, e := range es.got {
		if e.Type != proto.TypeMemberSummary {
			continue
		}
		p, err := e.Payload()
		if err != nil {
			t.Fatalf("summary %s does not decode: %v", e.ID, err)
		}
		if s := p.(proto.MemberSummary); s.Node == node {
			out = append(out, s)
		}
	}
	return out
}

// getJSON GETs path from node's agent HTTP endpoint into v; the status.
func getJSON(t *testing.T, n *localcluster.Node, path string, v any) int {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", n.HTTPPort, path))
	if err != nil {
		t.Fatalf("%s %s: %v", n.Name, path, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s %s: decode: %v", n.Name, path, err)
	}
	return resp.StatusCode
}

// TestMemberSummariesAndQueryInsight: a real two-node cluster posting to an HTTP events
// sink sends member summaries every report.summary_interval: the primary's
// say primary, writable, no streaming; the replica's replica, streaming,
// not writable; both carry the data and WAL filesystems and the term. The
// primary also preloads and creates pg_stat_statements (replicated), and
// its agent answers GET /v1/statements (a probe query with its calls) and
// GET /v1/sessions (a long pg_sleep first).
func TestMemberSummariesAndQueryInsight(t *testing.T) {
	sink := newEventSink(t)
	c := startCluster(t, localcluster.Options{Nodes: 2, EventsURL: sink.URL, SummaryInterval: time.Second})
	st := waitFor(t, c, 90*time.Second, "healthy cluster", healthy(c, false))
	primary := st.Leader
	replica := c.Nodes[0].Name
	if replica == primary {
		replica = c.Nodes[1].Name
	}

	check := func(node string, want func(s proto.MemberSummary) error) {
		testutil.Eventually(t, 30*time.Second, 200*time.Millisecond, "summary of "+node, func() error {
			ss := sink.summaries(t, node)
			if len(ss) == 0 {
				return fmt.Errorf("no summary from %s yet", node)
			}
			last := ss[len(ss)-1]
			if last.IntervalMS != 1000 {
				return fmt.Errorf("interval_ms %d, want 1000", last.IntervalMS)
			}
			if len(last.Filesystems) != 2 || last.Filesystems[0].Kind != proto.FilesystemData || last.Filesystems[1].Kind != proto.FilesystemWAL {
				return fmt.Errorf("filesystems %+v, want data and wal", last.Filesystems)
			}
			if last.Term == 0 || last.Revision <= 0 {
				return fmt.Errorf("header term %d revision %d, want both set", last.Term, last.Revision)
			}
			return want(last)
		})
	}
	check(primary, func(s proto.MemberSummary) error {
		if s.Role != proto.RolePrimary || !s.Writable || !s.Healthy || s.State != proto.StateRunning || s.Streaming != nil || s.LagBytes != 0 {
			return fmt.Errorf("primary summary %+v", s)
		}
		return nil
	})
	check(replica, func(s proto.MemberSummary) error {
		if s.Role != proto.RoleReplica || s.Writable || s.Streaming == nil || !*s.Streaming || s.LagBytes < 0 || s.Archive != nil {
			return fmt.Errorf("replica summary %+v", s)
		}
		return nil
	})
	// Periodic: more keep coming, about one per interval.
	n := len(sink.summaries(t, replica))
	testutil.Eventually(t, 15*time.Second, 200*time.Millisecond, "more summaries", func() bool { return len(sink.summaries(t, replica)) >= n+3 })
	// In order with the members' other events, each with its etcd revision.
	sink.checkPositions(t)

	// pg_stat_statements: preloaded on both, created on the primary and
	// replicated.
	for i := range c.Nodes {
		testutil.Eventually(t, 30*time.Second, 200*time.Millisecond, "pg_stat_statements on "+c.Nodes[i].Name, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			conn, err := c.Connect(ctx, i)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			var preload string
			var calls int64
			if err := conn.QueryRow(ctx, "SELECT current_setting('shared_preload_libraries')").Scan(&preload); err != nil {
				return err
			}
			if preload != "pg_stat_statements" {
				return fmt.Errorf("shared_preload_libraries %q", preload)
			}
			return conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_statements").Scan(&calls)
		})
	}

	// Query insight on the primary's agent HTTP endpoint.
	pi := 0
	if c.Nodes[1].Name == primary {
		pi = 1
	}
	pn := c.Nodes[pi]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := c.Connect(ctx, pi)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for i := range 7 {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM generate_series(1, $1) AS insight_probe", 1000*(i+1)).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 20*time.Second, 200*time.Millisecond, "the probe in /v1/statements", func() error {
		var st proto.StatementStats
		if code := getJSON(t, pn, "/v1/statements?limit=100", &st); code != http.StatusOK {
			return fmt.Errorf("status %d", code)
		}
		if st.Node != primary || st.CollectedAt.IsZero() {
			return fmt.Errorf("node %q collected_at %v", st.Node, st.CollectedAt)
		}
		for i, s := range st.Items {
			if i > 0 && s.TotalMS > st.Items[i-1].TotalMS {
				return fmt.Errorf("not sorted by total time: %v after %v", s.TotalMS, st.Items[i-1].TotalMS)
			}
		}
		for _, s := range st.Items {
			if strings.Contains(s.Query, "insight_probe") {
				if s.Calls != 7 || s.Rows != 7 || s.User != c.Superuser || s.Database != "postgres" || s.QueryID == "" || s.TotalMS <= 0 ||
					s.MeanMS <= 0 || s.MeanMS > s.TotalMS {
					return fmt.Errorf("probe statement %+v", s)
				}
				return nil
			}
		}
		return fmt.Errorf("probe not among %d statements", len(st.Items))
	})
	var one proto.StatementStats
	if code := getJSON(t, pn, "/v1/statements?limit=1", &one); code != http.StatusOK || len(one.Items) != 1 {
		t.Errorf("limit=1: status %d, %d items", code, len(one.Items))
	}
	var bad struct{ Error string }
	if code := getJSON(t, pn, "/v1/statements?limit=101", &bad); code != http.StatusBadRequest || !strings.Contains(bad.Error, "limit: must be a whole number from 1 to 100") {
		t.Errorf("limit=101: status %d, %q", code, bad.Error)
	}

	// A long pg_sleep comes first in /v1/sessions.
	sleeper, err := c.Connect(ctx, pi)
	if err != nil {
		t.Fatal(err)
	}
	defer sleeper.Close(context.Background())
	var pid int32
	if err := sleeper.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	sctx, stopSleep := context.WithCancel(ctx)
	slept := make(chan error, 1)
	go func() { _, err := sleeper.Exec(sctx, "SELECT pg_sleep(60) /* insight_sleeper */"); slept <- err }()
	testutil.Eventually(t, 20*time.Second, 200*time.Millisecond, "the sleeper first in /v1/sessions", func() error {
		var ss proto.Sessions
		if code := getJSON(t, pn, "/v1/sessions", &ss); code != http.StatusOK {
			return fmt.Errorf("status %d", code)
		}
		if len(ss.Items) == 0 {
			return fmt.Errorf("no sessions")
		}
		s := ss.Items[0]
		if s.PID != pid || s.State != "active" || !strings.Contains(s.Query, "insight_sleeper") || s.DurationMS < 500 ||
			s.User != c.Superuser || s.Database != "postgres" || s.ClientAddr != "127.0.0.1" || s.QueryStart == nil || s.WaitEvent != "Timeout:PgSleep" {
			return fmt.Errorf("first session %+v, want pid %d sleeping for >= 500ms", s, pid)
		}
		return nil
	})
	stopSleep()
	<-slept

	// A graceful stop ends with a summary saying so: the control plane
	// tells a planned stop (ticket) from a lost host (page) by it.
	ri := 0
	if c.Nodes[0].Name != replica {
		ri = 1
	}
	if err := c.Stop(ri, 60*time.Second); err != nil {
		t.Fatalf("graceful stop of %s: %v", replica, err)
	}
	ss := sink.summaries(t, replica)
	if len(ss) == 0 {
		t.Fatalf("no summaries from %s", replica)
	}
	if last := ss[len(ss)-1]; last.State != proto.StateStopped || last.Writable || last.Streaming == nil || *last.Streaming || last.Role != proto.RoleReplica {
		t.Errorf("last summary of the stopped replica %s: %+v, want role replica, state stopped, not streaming", replica, last)
	}
}
