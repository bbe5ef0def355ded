package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/internal/testutil"
)

func TestSlotName(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, tc := range []struct {
		node, want string // want "" means: hashed, check the prefix only
		prefix     string
	}{
		{node: "node1", want: "dbpilot_node1"},
		{node: "db_node_1", want: "dbpilot_db_node_1"},
		{node: "0node", want: "dbpilot_0node"},
		{node: strings.Repeat("a", 55), want: "dbpilot_" + strings.Repeat("a", 55)},
		{node: strings.Repeat("a", 56), prefix: "dbpilot__" + strings.Repeat("a", 41) + "_"},
		{node: long, prefix: "dbpilot__" + strings.Repeat("a", 41) + "_"},
		{node: "db-node-1", prefix: "dbpilot__db_node_1_"},
		{node: "db.node.1", prefix: "dbpilot__db_node_1_"},
		{node: "Node1", prefix: "dbpilot__node1_"},
		{node: "_x", prefix: "dbpilot___x_"},
	} {
		got := SlotName(tc.node)
		if !ValidSlotName(got) || !ManagedSlot(got) {
			t.Errorf("SlotName(%q) = %q: not a valid managed slot name", tc.node, got)
		}
		if tc.want != "" && got != tc.want {
			t.Errorf("SlotName(%q) = %q, want %q", tc.node, got, tc.want)
		}
		if tc.prefix != "" && (!strings.HasPrefix(got, tc.prefix) || len(got) != len(tc.prefix)+slotHashHex) {
			t.Errorf("SlotName(%q) = %q, want %q + %d hex digits", tc.node, got, tc.prefix, slotHashHex)
		}
		if again := SlotName(tc.node); again != got {
			t.Errorf("SlotName(%q) not deterministic: %q then %q", tc.node, got, again)
		}
	}
	// The names that sanitise alike still map to distinct slots.
	seen := map[string]string{}
	for _, n := range []string{"db-node-1", "db.node.1", "db_node_1", "DB-node-1", "db-node-1.", "db_node_1_", "node1", "Node1",
		long, long[:62] + "b", strings.Repeat("a", 55), strings.Repeat("a", 56)} {
		s := SlotName(n)
		if prev, dup := seen[s]; dup {
			t.Errorf("SlotName(%q) = SlotName(%q) = %q", n, prev, s)
		}
		seen[s] = n
	}
}

func TestSlotValidName(t *testing.T) {
	for s, want := range map[string]bool{
		"dbpilot_n1": true, "a": true, strings.Repeat("a", 63): true,
		"": false, strings.Repeat("a", 64): false, "A": false, "a-b": false, "a.b": false, "a b": false,
	} {
		if got := ValidSlotName(s); got != want {
			t.Errorf("ValidSlotName(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestSlotRender(t *testing.T) {
	c := validConfig(t).withDefaults()
	conninfo := c.primaryConninfo(Upstream{Host: "10.0.0.2", Port: 5433, Name: "n2"})
	replica := renderPostgresqlConf(c, RoleReplica, conninfo, nil, nil)
	for _, want := range []string{"primary_slot_name = 'dbpilot_n1'\n", "max_slot_wal_keep_size = '1GB'\n", "wal_keep_size = '512MB'\n"} {
		if !strings.Contains(replica, want) {
			t.Errorf("replica conf lacks %q:\n%s", want, replica)
		}
	}
	if noUp := renderPostgresqlConf(c, RoleReplica, "", nil, nil); strings.Contains(noUp, "primary_slot_name") {
		t.Errorf("replica conf without upstream names a slot:\n%s", noUp)
	}
	if primary := renderPostgresqlConf(c, RolePrimary, "", nil, nil); strings.Contains(primary, "primary_slot_name") {
		t.Errorf("primary conf names a slot:\n%s", primary)
	}
	c.Parameters = map[string]string{"max_slot_wal_keep_size": "256MB"}
	if conf := renderPostgresqlConf(c, RolePrimary, "", nil, nil); !strings.Contains(conf, "max_slot_wal_keep_size = '256MB'\n") ||
		strings.Count(conf, "max_slot_wal_keep_size") != 1 {
		t.Errorf("max_slot_wal_keep_size not overridable:\n%s", conf)
	}
	c.Parameters = map[string]string{"max_replication_slots": "0"}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "max_replication_slots") {
		t.Errorf("max_replication_slots = 0 accepted: %v", err)
	}
	c.Parameters = map[string]string{"primary_slot_name": "x"}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "primary_slot_name") {
		t.Errorf("primary_slot_name in Parameters accepted: %v", err)
	}
}

// TestSlotsRealPostgres: ApplySlots and ReplicationSlots against a real
// primary and a replica that streams through its slot; a replica creates
// its own slot on the upstream before it starts.
func TestSlotsRealPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	root := testRoot(t)
	n1, n2 := newNode(t, root, "n1"), newNode(t, root, "n2")
	if err := n1.Initdb(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n1.Start(ctx, RolePrimary, nil); err != nil {
		t.Fatal(err)
	}
	if err := n1.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	slot := func(name string) (ReplicationSlot, bool) {
		t.Helper()
		st, err := n1.ReplicationSlots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.InRecovery || st.WriteLSN == 0 {
			t.Fatalf("primary slot state: %+v", st)
		}
		i := slices.IndexFunc(st.Slots, func(s ReplicationSlot) bool { return s.Name == name })
		if i < 0 {
			return ReplicationSlot{}, false
		}
		return st.Slots[i], true
	}

	if _, err := n1.ApplySlots(ctx, []string{"not_ours"}, nil); err == nil {
		t.Fatal("ApplySlots accepted a slot name without the dbpilot_ prefix")
	}
	done, err := n1.ApplySlots(ctx, []string{"dbpilot_a", "dbpilot_b"}, nil)
	if err != nil || !slices.Equal(done.Created, []string{"dbpilot_a", "dbpilot_b"}) {
		t.Fatalf("create: %+v, %v", done, err)
	}
	if done, err := n1.ApplySlots(ctx, []string{"dbpilot_a"}, []string{"dbpilot_missing"}); err != nil || len(done.Created)+len(done.Dropped) != 0 {
		t.Fatalf("create existing, drop missing: %+v, %v (want no change, no error)", done, err)
	}
	a, ok := slot("dbpilot_a")
	if !ok || a.Type != "physical" || a.Active || a.RestartLSN == 0 || a.WALStatus != "reserved" {
		t.Fatalf("dbpilot_a: %+v, want a physical, inactive slot reserving WAL", a)
	}
	if done, err := n1.ApplySlots(ctx, nil, []string{"dbpilot_b"}); err != nil || !slices.Equal(done.Dropped, []string{"dbpilot_b"}) {
		t.Fatalf("drop: %+v, %v", done, err)
	}
	if _, ok := slot("dbpilot_b"); ok {
		t.Fatal("dbpilot_b still there after the drop")
	}

	// The replica creates its own slot on n1 before the clone and streams
	// through it; the active slot is not dropped.
	if err := n2.BaseBackup(ctx, upstreamOf(n1)); err != nil {
		t.Fatal(err)
	}
	if _, ok := slot(SlotName("n2")); !ok {
		t.Fatal("BaseBackup did not create the replica's slot on the upstream")
	}
	up1 := upstreamOf(n1)
	if err := n2.Start(ctx, RoleReplica, &up1); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, "n2 streaming through its slot", func() error {
		if s, ok := slot(SlotName("n2")); !ok || !s.Active {
			return fmt.Errorf("slot %+v", s)
		}
		return nil
	})
	// hot_standby_feedback (on by default) gives the slot an xmin.
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, "the slot's xmin from hot_standby_feedback", func() error {
		if s, _ := slot(SlotName("n2")); s.XminAge < 0 {
			return fmt.Errorf("slot %+v", s)
		}
		return nil
	})
	if a, _ := slot("dbpilot_a"); a.XminAge != -1 {
		t.Errorf("unused slot dbpilot_a: xmin age %d, want -1", a.XminAge)
	}
	if done, err := n1.ApplySlots(ctx, nil, []string{SlotName("n2")}); err != nil || len(done.Dropped) != 0 {
		t.Fatalf("drop of an active slot: %+v, %v; want skipped", done, err)
	}
	if _, ok := slot(SlotName("n2")); !ok {
		t.Fatal("the active slot was dropped")
	}
	if _, err := n2.ApplySlots(ctx, []string{"dbpilot_x"}, nil); !errors.Is(err, ErrWrongRole) {
		t.Fatalf("ApplySlots on a replica = %v, want ErrWrongRole", err)
	}
}
