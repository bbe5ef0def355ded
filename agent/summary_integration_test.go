package agent_test

import (
	"context"
	"fmt"
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

// TestMemberSummaries: a real two-node cluster posting to an HTTP events
// sink sends member summaries every report.summary_interval: the primary's
// say primary, writable, no streaming; the replica's replica, streaming,
// not writable; both carry the data and WAL filesystems and the term. The
// primary also preloads and creates pg_stat_statements (replicated).
func TestMemberSummaries(t *testing.T) {
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
}
