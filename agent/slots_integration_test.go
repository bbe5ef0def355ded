package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/localcluster"
	"github.com/dbpilot/dbpilot/agent/postgres"
)

// slotRow is one managed slot on a node.
type slotRow struct {
	active     bool
	walStatus  string
	walFile    string // pg_walfile_name(restart_lsn), "" when none
	walPresent bool   // that WAL file is still in pg_wal
}

// slotsOn returns the managed physical slots of node i by name.
func slotsOn(c *localcluster.Cluster, i int) (map[string]slotRow, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.Connect(ctx, i)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT slot_name::text, active, coalesce(wal_status, ''),
		coalesce(pg_walfile_name(restart_lsn), ''),
		EXISTS (SELECT 1 FROM pg_ls_waldir() w WHERE w.name = pg_walfile_name(restart_lsn))
		FROM pg_replication_slots WHERE slot_type = 'physical' AND NOT temporary AND slot_name LIKE 'dbpilot\_%'`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]slotRow{}
	for rows.Next() {
		var name string
		var r slotRow
		if err := rows.Scan(&name, &r.active, &r.walStatus, &r.walFile, &r.walPresent); err != nil {
			return nil, err
		}
		out[name] = r
	}
	return out, rows.Err()
}

// waitSlots polls node i's managed slots until cond accepts them.
func waitSlots(t *testing.T, c *localcluster.Cluster, i int, d time.Duration, what string, cond func(map[string]slotRow) error) map[string]slotRow {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got, err := slotsOn(c, i)
		if err == nil {
			if err = cond(got); err == nil {
				return got
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: slots on %s: %v (%+v)", what, c.Nodes[i].Name, err, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wantSlots accepts exactly the slots of nodes, active as given.
func wantSlots(nodes map[string]bool) func(map[string]slotRow) error {
	return func(got map[string]slotRow) error {
		if len(got) != len(nodes) {
			return fmt.Errorf("%d managed slots, want %d", len(got), len(nodes))
		}
		for n, active := range nodes {
			r, ok := got[postgres.SlotName(n)]
			if !ok {
				return fmt.Errorf("no slot for %s", n)
			}
			if r.active != active {
				return fmt.Errorf("slot of %s active=%v, want %v", n, r.active, active)
			}
		}
		return nil
	}
}

func show(t *testing.T, c *localcluster.Cluster, i int, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.Connect(ctx, i)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func logSince(t *testing.T, path string, off int64) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off > int64(len(b)) {
		off = 0
	}
	return string(b[off:])
}

func logSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// TestSlotsIntegration: three agents with wal_keep_size = 0, so only the
// replication slots keep WAL for replicas. After bootstrap the primary has
// an active slot per replica and none for itself; a replica stopped while
// the primary writes and checkpoints past its position keeps its slot (a
// member that is merely down), the WAL it needs stays, and on restart it
// catches up by streaming (no clone, no rewind); after a host loss of the
// primary the new one has slots for both others (the dead one through the
// spec); a node removed from the spec keeps its slot while it runs and
// loses it once it is gone.
func TestSlotsIntegration(t *testing.T) {
	c := startCluster(t, localcluster.Options{Nodes: 3, Parameters: map[string]string{"wal_keep_size": "0"}})
	ctx := context.Background()
	s := waitFor(t, c, 90*time.Second, "one primary, two streaming replicas", healthy(c, false))
	leader, li := s.Leader, c.Index(s.Leader)
	var replicas []string
	for _, n := range c.Nodes {
		if n.Name != leader {
			replicas = append(replicas, n.Name)
		}
	}
	down, other := replicas[0], replicas[1]
	di := c.Index(down)

	// Bootstrap: an active slot per replica, none for the primary itself.
	waitSlots(t, c, li, 20*time.Second, "after bootstrap", wantSlots(map[string]bool{down: true, other: true}))
	for _, r := range replicas {
		if got, want := show(t, c, c.Index(r), "primary_slot_name"), postgres.SlotName(r); got != want {
			t.Errorf("%s: primary_slot_name = %q, want %q", r, got, want)
		}
	}
	if got := show(t, c, li, "max_slot_wal_keep_size"); got != "1GB" {
		t.Errorf("max_slot_wal_keep_size = %q, want the 1GB default", got)
	}
	if got := show(t, c, li, "wal_keep_size"); got != "0" {
		t.Fatalf("wal_keep_size = %q, want 0 (the test relies on slots alone)", got)
	}
	metrics := scrape(t, c.Nodes[li].HTTPPort)
	if want := `dbpilot_replication_slot_active{slot="` + postgres.SlotName(down) + `"} 1`; !strings.Contains(metrics, want) {
		t.Errorf("primary /metrics lacks %q:\n%s", want, grepLines(metrics, "replication_slot"))
	}
	// The engine metrics (agent/pgmetrics) are on the same endpoint.
	for _, want := range []string{"pg_up 1", "pg_exporter_last_scrape_error 0", `pg_stat_replication_replay_lag_bytes{application_name="` + down + `"`,
		`pg_stat_database_xact_commit{datid=`, `dbpilot_filesystem_used_percent{kind="wal"`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("primary /metrics lacks %q:\n%s", want, grepLines(metrics, "pg_"))
		}
	}

	// A replica down for a while: its slot stays (an empty spec says nothing
	// about who left), and keeps the WAL it will need.
	commit(t, c, li, "CREATE TABLE spec_sync (n int)", "INSERT INTO spec_sync VALUES (1)")
	waitSpecRow(t, c, di, 1)
	if err := c.Stop(di, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, 20*time.Second, down+"'s member key gone", func(s localcluster.Status) bool {
		_, ok := s.Member(down)
		return !ok
	})
	for k := 2; k <= 5; k++ {
		commit(t, c, li, fmt.Sprintf("INSERT INTO spec_sync SELECT %d FROM generate_series(1, 1000)", k), "SELECT pg_switch_wal()")
	}
	commit(t, c, li, "CHECKPOINT")
	time.Sleep(3 * time.Second) // a few primary cycles with down's member key gone
	got := waitSlots(t, c, li, 5*time.Second, "while "+down+" is down", wantSlots(map[string]bool{down: false, other: true}))
	if r := got[postgres.SlotName(down)]; !r.walPresent || (r.walStatus != "reserved" && r.walStatus != "extended") {
		t.Fatalf("slot of %s while down: %+v; want its restart WAL file kept", down, r)
	}
	// A marker in the data directory survives only if it is not re-cloned.
	marker := filepath.Join(c.Nodes[di].Dir, "data", "dbpilot_test_marker")
	if err := os.WriteFile(marker, []byte("kept\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	off := logSize(c.Nodes[di].LogPath)
	pglog := filepath.Join(c.Nodes[li].Dir, "postgres.log")
	pgOff := logSize(pglog)
	start := time.Now()
	if err := c.StartNode(di); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, 30*time.Second, down+" streaming again", func(s localcluster.Status) bool {
		m, ok := s.Member(down)
		return ok && m.Role == "replica" && m.Streaming && m.Upstream == leader
	})
	waitSpecRow(t, c, di, 5)
	t.Logf("%s streaming again %s after its restart", down, time.Since(start).Round(time.Millisecond))
	for _, bad := range []string{"base backup starting", "rewind starting", "cloning from the primary", "re-cloning"} {
		if l := logSince(t, c.Nodes[di].LogPath, off); strings.Contains(l, bad) {
			t.Errorf("%s's agent log after its restart contains %q: it did not catch up by streaming", down, bad)
		}
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("%s's data directory was replaced: %v", down, err)
	}
	// Root-owned and unreadable to PostgreSQL: it must not be copied by a
	// later pg_rewind or pg_basebackup from this node.
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	if l := logSince(t, pglog, pgOff); strings.Contains(l, "has already been removed") {
		t.Errorf("the primary removed WAL the restarted replica needed:\n%s", grepLines(l, "removed"))
	}
	waitSlots(t, c, li, 20*time.Second, down+" back", wantSlots(map[string]bool{down: true, other: true}))

	// Host loss of the primary: the new one has a slot for each other node,
	// the dead one included (the spec lists it).
	all := []string{c.Nodes[0].Name, c.Nodes[1].Name, c.Nodes[2].Name}
	if err := c.PutSpec(ctx, dcs.Spec{Replicas: 3, Nodes: all}); err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(li); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, c, 60*time.Second, "a new primary after the host loss", func(s localcluster.Status) bool {
		return s.Leader != "" && s.Leader != leader
	})
	newLeader, ni := s.Leader, c.Index(s.Leader)
	third := down
	if newLeader == down {
		third = other
	}
	waitSlots(t, c, ni, 30*time.Second, "on the new primary", wantSlots(map[string]bool{leader: false, third: true}))
	if err := c.StartNode(li); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, 60*time.Second, leader+" rejoined", func(s localcluster.Status) bool {
		m, ok := s.Member(leader)
		return ok && m.Role == "replica" && m.Streaming && m.Upstream == newLeader
	})
	waitSlots(t, c, ni, 20*time.Second, leader+" streaming through its slot", wantSlots(map[string]bool{leader: true, third: true}))

	// A node leaves the spec: its slot stays while it runs (a member), and
	// is dropped once it is gone.
	kept := []string{newLeader, leader}
	slices.Sort(kept)
	if err := c.PutSpec(ctx, dcs.Spec{Replicas: 2, Nodes: kept}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	waitSlots(t, c, ni, 5*time.Second, third+" left the spec but runs", wantSlots(map[string]bool{leader: true, third: true}))
	if err := c.Stop(c.Index(third), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	waitSlots(t, c, ni, 20*time.Second, third+" gone", wantSlots(map[string]bool{leader: true}))
	if !logContains(t, c.Nodes[ni], "replication slots changed") {
		t.Errorf("%s did not log its slot changes", newLeader)
	}
}

func scrape(t *testing.T, port int) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "dbpilot_replication_slot_active") || time.Now().After(deadline) {
				return string(b)
			}
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestSlotsBound: max_slot_wal_keep_size bounds what a dead replica's slot
// retains. With a 32MB bound, a replica that stays down while the primary
// writes and checkpoints well past it loses its slot's WAL (PostgreSQL
// invalidates the slot at the checkpoint) and the primary's pg_wal no
// longer holds that WAL; once the spec lists the node, the agent replaces
// the lost slot by a fresh one that reserves WAL from now on.
func TestSlotsBound(t *testing.T) {
	c := startCluster(t, localcluster.Options{Nodes: 2, Parameters: map[string]string{"wal_keep_size": "0", "max_slot_wal_keep_size": "32MB"}})
	s := waitFor(t, c, 90*time.Second, "one primary, one streaming replica", healthy(c, false))
	li := c.Index(s.Leader)
	down := c.Nodes[1-li].Name
	waitSlots(t, c, li, 20*time.Second, "after bootstrap", wantSlots(map[string]bool{down: true}))
	if got := show(t, c, li, "max_slot_wal_keep_size"); got != "32MB" {
		t.Fatalf("max_slot_wal_keep_size = %q, want the configured 32MB", got)
	}
	if err := c.Stop(1-li, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	before := waitSlots(t, c, li, 10*time.Second, down+" stopped", wantSlots(map[string]bool{down: false}))
	oldFile := before[postgres.SlotName(down)].walFile
	commit(t, c, li, "CREATE TABLE bound (n int)")
	for k := 1; k <= 5; k++ { // 5 segments of 16 MB: past the 32 MB bound
		commit(t, c, li, fmt.Sprintf("INSERT INTO bound SELECT %d FROM generate_series(1, 1000)", k), "SELECT pg_switch_wal()")
	}
	commit(t, c, li, "CHECKPOINT")
	// Lost: the slot no longer retains anything, and the primary dropped the
	// WAL. With an empty spec the slot of a member that is down is kept as
	// it is (nothing says it left).
	waitSlots(t, c, li, 10*time.Second, "the slot lost", func(got map[string]slotRow) error {
		if r, ok := got[postgres.SlotName(down)]; !ok || r.walStatus != "lost" {
			return fmt.Errorf("slot of %s: %+v, want lost", down, r)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.Connect(ctx, li)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var kept bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_ls_waldir() WHERE name = $1)", oldFile).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if kept {
		t.Errorf("the primary still keeps %s, past max_slot_wal_keep_size", oldFile)
	}
	// Once the spec lists the node, its lost slot is replaced by one that
	// reserves WAL from now on.
	if err := c.PutSpec(ctx, dcs.Spec{Replicas: 2, Nodes: []string{c.Nodes[0].Name, c.Nodes[1].Name}}); err != nil {
		t.Fatal(err)
	}
	got := waitSlots(t, c, li, 30*time.Second, "the lost slot replaced", func(got map[string]slotRow) error {
		r, ok := got[postgres.SlotName(down)]
		switch {
		case !ok:
			return fmt.Errorf("no slot for %s", down)
		case r.walStatus != "reserved" || !r.walPresent || r.active:
			return fmt.Errorf("slot of %s: %+v, want reserved with its WAL, inactive", down, r)
		case r.walFile == oldFile:
			return fmt.Errorf("slot of %s still retains %s", down, oldFile)
		}
		return nil
	})
	t.Logf("slot of %s: %s before, %+v after", down, oldFile, got[postgres.SlotName(down)])
	if !logContains(t, c.Nodes[li], "replication slots changed") {
		t.Errorf("the primary did not log replacing the lost slot")
	}
}
