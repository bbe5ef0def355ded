package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/localcluster"
	"github.com/dbpilot/dbpilot/agent/postgres"
)

// TestSpecSynchronousModeAndNodes: a three-node cluster whose agents are
// configured with synchronous_mode "off" follows the control plane's spec
// key at run time, without a restart: synchronous mode on (sync key set,
// then synchronous_standby_names), a replica dropped from spec.nodes
// leaving the synchronous set, synchronous mode off again, and that
// replica not promoted when the primary host dies although it would win
// the tie-break (smaller name); it keeps replicating from the new primary.
func TestSpecSynchronousModeAndNodes(t *testing.T) {
	// debug: the removed node's reason for not campaigning is a no-op decision.
	c := startCluster(t, localcluster.Options{Nodes: 3, LogLevel: "debug"})
	ctx := context.Background()
	s := waitFor(t, c, 90*time.Second, "one primary, two streaming replicas", healthy(c, false))
	leader, li := s.Leader, c.Index(s.Leader)
	var all, replicas []string
	for _, n := range c.Nodes {
		all = append(all, n.Name)
		if n.Name != leader {
			replicas = append(replicas, n.Name)
		}
	}
	// removed would win an election on a tie (smaller name); kept stays.
	removed, kept := replicas[0], replicas[1]
	if m, _ := s.Member(leader); m.SynchronousMode != "off" || m.Synchronous {
		t.Fatalf("before any spec: primary reports synchronous_mode %q, synchronous %v; want off, false", m.SynchronousMode, m.Synchronous)
	}
	if got := showSync(t, c, li); got != "" {
		t.Fatalf("before any spec: synchronous_standby_names = %q, want empty", got)
	}
	putSpec := func(mode string, nodes []string) {
		t.Helper()
		if err := c.PutSpec(ctx, dcs.Spec{Replicas: len(nodes), SynchronousMode: mode, Nodes: nodes}); err != nil {
			t.Fatal(err)
		}
	}

	// A malformed spec is reported (once per change) and ignored: the
	// agents keep their local configuration.
	if _, err := c.Admin.Raw().Put(ctx, c.Keys.Spec(), `{"synchronous_mode":"yes","nodes":["node1"]}`); err != nil {
		t.Fatal(err)
	}
	const malformed = "ignoring the malformed spec key"
	for _, n := range c.Nodes {
		deadline := time.Now().Add(15 * time.Second)
		for !logContains(t, n, malformed) {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not report the malformed spec key", n.Name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// On: the sync key lists both replicas, then PostgreSQL waits for one.
	start := time.Now()
	putSpec("on", all)
	s = waitFor(t, c, 30*time.Second, "the primary synchronous over both replicas", func(s localcluster.Status) bool {
		m, _ := s.Member(leader)
		return s.Leader == leader && m.SynchronousMode == "on" && m.Synchronous && s.SyncSettled()
	})
	t.Logf("synchronous_mode on in effect %s after the spec write", time.Since(start).Round(time.Millisecond))
	want := postgres.SynchronousStandbyNames(replicas)
	if got := showSync(t, c, li); got != want {
		t.Fatalf("spec on: synchronous_standby_names = %q, want %q (sync key %v)", got, want, s.Sync)
	}
	for _, m := range s.Members {
		if m.SynchronousMode != "on" {
			t.Errorf("spec on: %s reports synchronous_mode %q", m.Node, m.SynchronousMode)
		}
	}
	commit(t, c, li, "CREATE TABLE spec_sync (n int)", "INSERT INTO spec_sync VALUES (1)")
	for _, n := range c.Nodes {
		b, _ := os.ReadFile(n.LogPath)
		if k := bytes.Count(b, []byte(malformed)); k != 1 {
			t.Errorf("%s reported the malformed spec key %d times, want once", n.Name, k)
		}
	}

	// A replica leaves spec.nodes: PostgreSQL stops waiting for it, then the
	// key drops it (once the other standby has the primary's WAL).
	putSpec("on", []string{leader, kept})
	s = waitFor(t, c, 30*time.Second, "the sync key without "+removed, func(s localcluster.Status) bool {
		return s.SyncLeader == leader && slices.Equal(s.Sync, []string{kept})
	})
	if got, want := showSync(t, c, li), postgres.SynchronousStandbyNames([]string{kept}); got != want {
		t.Fatalf("%s removed: synchronous_standby_names = %q, want %q", removed, got, want)
	}
	if m, ok := s.Member(removed); !ok || m.Role != "replica" {
		t.Fatalf("%s left the spec: member %+v, want a replica still", removed, m)
	}
	commit(t, c, li, "INSERT INTO spec_sync VALUES (2)")

	// Off: PostgreSQL first, then the key is emptied.
	putSpec("off", []string{leader, kept})
	s = waitFor(t, c, 30*time.Second, "the primary asynchronous with an empty sync key", func(s localcluster.Status) bool {
		m, _ := s.Member(leader)
		return m.SynchronousMode == "off" && !m.Synchronous && s.SyncLeader == leader && len(s.Sync) == 0
	})
	if got := showSync(t, c, li); got != "" {
		t.Fatalf("spec off: synchronous_standby_names = %q, want empty", got)
	}

	// Host loss of the primary: only the replica the spec keeps may take
	// over; the removed one follows it.
	for _, n := range replicas {
		waitSpecRow(t, c, c.Index(n), 2)
	}
	if err := c.Kill(li); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, c, 60*time.Second, "a new primary after SIGKILL of the primary host", func(s localcluster.Status) bool {
		return s.Leader != "" && s.Leader != leader
	})
	if s.Leader != kept {
		t.Fatalf("%s was promoted although the spec removes it; want %s", s.Leader, kept)
	}
	for _, h := range s.History {
		if h.Node == removed {
			t.Fatalf("%s claimed term %d although the spec removes it", removed, h.Term)
		}
	}
	waitFor(t, c, 60*time.Second, removed+" streaming from "+kept, func(s localcluster.Status) bool {
		m, ok := s.Member(removed)
		return ok && m.Role == "replica" && m.Streaming && m.Upstream == kept
	})
	if !logContains(t, c.Nodes[c.Index(removed)], "not in the cluster spec's nodes (being removed)") {
		t.Errorf("%s's log does not say why it did not campaign", removed)
	}
}

// showSync returns SHOW synchronous_standby_names on node i.
func showSync(t *testing.T, c *localcluster.Cluster, i int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.Connect(ctx, i)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// commit runs statements on node i; each must be acknowledged within 10 s
// (in synchronous mode: a standby flushed it).
func commit(t *testing.T, c *localcluster.Cluster, i int, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.Connect(ctx, i)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(fmt.Errorf("%s on %s: %w", q, c.Nodes[i].Name, err))
		}
	}
}

// waitSpecRow waits until row n of spec_sync has reached node i.
func waitSpecRow(t *testing.T, c *localcluster.Cluster, i int, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := c.Connect(ctx, i)
		if err == nil {
			var found bool
			err = conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM spec_sync WHERE n = $1)", n).Scan(&found)
			conn.Close(context.Background())
			if err == nil && !found {
				err = fmt.Errorf("row %d not there yet", n)
			}
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("row %d never reached %s: %v", n, c.Nodes[i].Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
