package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/catalog"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/infra/fleet"
	"github.com/dbpilot/dbpilot/internal/testutil"
)

func enrol(t *testing.T, st *store.Store, id string, labels map[string]string, c store.Resources) {
	t.Helper()
	ctx := context.Background()
	hash := "join-" + id
	if err := st.CreateJoinToken(ctx, store.JoinToken{Hash: hash, ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.EnrollHost(ctx, hash, store.Host{ID: id, Name: id, Address: "10.0.0." + id[1:], Labels: labels, Capacity: c, CredentialHash: "cred-" + id}); err != nil {
		t.Fatal(err)
	}
	if err := st.TouchHost(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// TestFleetAllocation exercises the fleet provider against the real store:
// label selectors (template + plan), free capacity, spreading, one node of
// a cluster per host unless the template allows colocation, the release
// hand-shake with the host and the forced release of a silent host.
func TestFleetAllocation(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	enrol(t, st, "h1", map[string]string{"disk": "ssd", "zone": "a"}, store.Resources{CPU: 2, MemoryMB: 2048, DiskGB: 20})
	enrol(t, st, "h2", map[string]string{"disk": "ssd", "zone": "b"}, store.Resources{CPU: 8, MemoryMB: 8192, DiskGB: 100})
	enrol(t, st, "h3", map[string]string{"disk": "hdd", "zone": "a"}, store.Resources{CPU: 64, MemoryMB: 65536, DiskGB: 1000})

	tpl, ok := catalog.Lookup("postgres-15")
	if !ok {
		t.Fatal("no postgres-15 template")
	}
	tpl.HostSelector = map[string]string{"disk": "ssd"}
	f := fleet.New(st, zaptest.NewLogger(t))
	spec := func(cluster, node string, colocate bool) infra.NodeSpec {
		tp := tpl
		tp.AllowColocation = colocate
		return infra.NodeSpec{ClusterID: cluster, Namespace: "acme", Project: "default", Cluster: cluster, Node: node, Template: tp, Plan: tpl.Plans["small"]}
	}
	place := func(cluster, node string, colocate bool) (string, error) {
		h, err := f.Create(ctx, spec(cluster, node, colocate), nil)
		if err != nil {
			return "", err
		}
		a, err := st.GetAllocation(ctx, cluster, node)
		if err != nil {
			t.Fatal(err)
		}
		if f.NodeHost(h) != a.HostID {
			t.Fatalf("handle names %s, allocation %s", f.NodeHost(h), a.HostID)
		}
		return a.HostID, nil
	}
	expect := func(cluster, node string, colocate bool, want string) {
		t.Helper()
		got, err := place(cluster, node, colocate)
		if want == "" {
			if !errors.Is(err, infra.ErrNoCapacity) {
				t.Fatalf("%s/%s: placed on %q (%v), want no capacity", cluster, node, got, err)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("%s/%s: on %q (%v), want %s", cluster, node, got, err, want)
		}
	}
	expect("c1", "node1", false, "h2") // most free memory among ssd hosts
	expect("c1", "node1", false, "h2") // idempotent
	expect("c1", "node2", false, "h1") // anti-affinity: not h2 again
	expect("c1", "node3", false, "")   // h3 has room but the wrong label
	expect("c2", "node1", false, "h2")
	expect("c2", "node2", false, "h1") // h1 now full (2048 MB)
	expect("c3", "node1", true, "h2")
	expect("c3", "node2", true, "h2") // colocation allowed; h1 is full
	// The plan's selector narrows further: zone b only.
	zb := tpl.Plans["small"]
	zb.HostSelector = map[string]string{"zone": "a"}
	s := spec("c4", "node1", false)
	s.Plan = zb
	if _, err := f.Create(ctx, s, nil); !errors.Is(err, infra.ErrNoCapacity) {
		t.Fatalf("zone a ssd host h1 is full: %v", err)
	}
	// Credentials are per cluster and stable.
	c1, _ := st.GetClusterCredentials(ctx, "c1")
	c1b, _ := st.ClusterCredentials(ctx, "c1", infra.NewCredentials)
	c2, _ := st.GetClusterCredentials(ctx, "c2")
	if c1 == "" || c1 != c1b || c1 == c2 {
		t.Fatalf("credentials: c1 %q c1 again %q c2 %q", c1, c1b, c2)
	}

	// Release with the host's acknowledgement: capacity stays booked until
	// the host says the node is gone.
	done := make(chan error, 1)
	go func() { done <- f.Delete(ctx, spec("c1", "node2", false), nil) }()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "the allocation to be releasing", func() error {
		a, err := st.GetAllocation(ctx, "c1", "node2")
		if err == nil && a.State != store.AllocReleasing {
			err = fmt.Errorf("%+v", a)
		}
		return err
	})
	expect("c5", "node1", false, "h2") // h1 still full while releasing
	if err := st.ReleaseOnHost(ctx, "h2", "c1", "node2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another host acknowledged: %v", err)
	}
	if err := st.ReleaseOnHost(ctx, "h1", "c1", "node2"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("delete did not return after the host acknowledged")
	}
	expect("c6", "node1", false, "h2") // most free memory still h2
	expect("c6", "node2", false, "h1") // the freed capacity is usable again

	// A silent host: the release is forced.
	f.HostTimeout = time.Millisecond
	time.Sleep(5 * time.Millisecond)
	if err := f.DeleteCluster(ctx, "c6"); err != nil {
		t.Fatal(err)
	}
	all, _ := st.ListAllocations(ctx, "")
	for _, a := range all {
		if a.ClusterID == "c6" {
			t.Fatalf("c6 allocation left: %+v", a)
		}
	}
	// Deleting the cluster record drops its credentials.
	if err := st.DeleteCluster(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetClusterCredentials(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("c1 credentials after delete: %v", err)
	}
}
