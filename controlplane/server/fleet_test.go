package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/internal/testutil"
)

// TestFleetProvisionDelete: three fleet hosts on this machine (each a
// `dbpilot-host run` process with its own folder and loopback
// address) enrol with one-time join tokens; a cluster created with provider
// fleet lands one node per host, becomes Ready with 1 primary and 2
// streaming replicas (checked on the primary). On that cluster: a config
// push reaches a running agent without a restart and an invalid one is
// refused (fleetConfigPush), a rolling restart restarts every agent
// (fleetRestart), and draining the primary's host moves its node to a
// fourth host with the data intact (fleetDrain). Its deletion stops every
// agent, removes the node folders and releases the capacity.
func TestFleetProvisionDelete(t *testing.T) {
	dir := testDir(t)
	s, c := startServer(t, dir)
	defer s.Close()

	hostsDir := filepath.Join(dir, "hosts")
	for i, name := range []string{"host-a", "host-b", "host-c"} {
		startHostRunner(t, c, s.URL, hostsDir, name, fmt.Sprintf("127.0.0.%d", i+2))
	}
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "three hosts enrolled and polling", func() error {
		hs, err := s.Store.ListHosts(context.Background())
		if err != nil {
			return err
		}
		seen := 0
		for _, h := range hs {
			if time.Since(h.LastSeen) < 5*time.Second && h.Labels["rack"] == "r1" {
				seen++
			}
		}
		if seen != 3 {
			return fmt.Errorf("%d of 3 hosts polling", seen)
		}
		return nil
	})

	var o op
	if code := c.do("POST", "/v1/namespaces/acme/clusters", map[string]any{"name": "ledger", "replicas": 3, "plan": "small", "provider": "fleet"}, &o); code != 202 {
		t.Fatalf("create: %d %+v", code, o)
	}
	clusterID := o.ClusterID
	if done := c.waitOp("acme", o.ID, 4*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("create failed: %+v", done)
	}
	var cl clusterOut
	testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, "fleet cluster Ready with 1 primary + 2 streaming replicas", func() error {
		c.do("GET", "/v1/namespaces/acme/clusters/ledger", nil, &cl)
		roles := map[string]int{}
		for _, m := range cl.Members {
			if !m.Healthy || (m.Role == "replica" && (m.Streaming == nil || !*m.Streaming)) {
				return fmt.Errorf("member %+v", m)
			}
			roles[m.Role]++
		}
		if cl.Phase != store.PhaseReady || roles["primary"] != 1 || roles["replica"] != 2 {
			return fmt.Errorf("phase %s roles %v", cl.Phase, roles)
		}
		return nil
	})
	// One node per host.
	nodes, err := s.Store.ListNodes(context.Background(), clusterID)
	if err != nil {
		t.Fatal(err)
	}
	hostOf := map[string]string{}
	perHost := map[string]int{}
	for _, n := range nodes {
		hostOf[n.Name] = n.Host
		perHost[n.Host]++
	}
	if len(perHost) != 3 {
		t.Fatalf("nodes not spread over the three hosts: %v", hostOf)
	}
	// The primary itself sees two streaming replicas.
	var nh infra.ProcessHandle
	b, err := os.ReadFile(filepath.Join(hostsDir, hostOf[cl.Primary], "nodes", clusterID, cl.Primary, "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(b, &nh)
	credDoc, err := s.Store.GetClusterCredentials(context.Background(), clusterID)
	if err != nil {
		t.Fatal(err)
	}
	var cred struct {
		Superuser struct{ Username, Password string }
	}
	_ = yaml.Unmarshal([]byte(credDoc), &cred)
	addr := fleetAddr[hostOf[cl.Primary]]
	db := fleetDB{user: cred.Superuser.Username, password: cred.Superuser.Password}
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "primary reports 2 streaming replicas", func() error {
		n, err := db.count(addr, nh.PGPort, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
		if err == nil && n != 2 {
			err = fmt.Errorf("%d streaming", n)
		}
		return err
	})
	// Prometheus service discovery names each node's agent where its host
	// runs it (the host picks the port: it comes from the member key).
	wantTargets := map[string]string{}
	for _, n := range nodes {
		var h infra.ProcessHandle
		b, err := os.ReadFile(filepath.Join(hostsDir, n.Host, "nodes", clusterID, n.Name, "node.json"))
		if err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal(b, &h)
		wantTargets[n.Name] = net.JoinHostPort(fleetAddr[n.Host], strconv.Itoa(h.HTTPPort))
	}
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "prometheus targets of the fleet nodes", func() error {
		got := map[string]string{}
		for _, g := range getTargets(t, s.URL, c.token) {
			if g.Labels["cluster"] == "ledger" && len(g.Targets) == 1 {
				got[g.Labels["node"]] = g.Targets[0]
			}
		}
		if !maps.Equal(got, wantTargets) {
			return fmt.Errorf("targets %v, want %v", got, wantTargets)
		}
		return nil
	})
	// Data written now must survive the restart and the drain below.
	if err := db.exec(addr, nh.PGPort, "CREATE TABLE entries (id int PRIMARY KEY, body text); INSERT INTO entries SELECT g, 'entry ' || g FROM generate_series(1, 100) g"); err != nil {
		t.Fatal(err)
	}

	// cloud-init user-data for the same node carries the same credentials.
	var ci struct {
		UserData string `json:"user_data"`
	}
	if code := c.do("GET", "/v1/namespaces/acme/clusters/ledger/nodes/node2/cloud-init", nil, &ci); code != 200 ||
		!strings.HasPrefix(ci.UserData, "#cloud-config\n") || !strings.Contains(ci.UserData, cred.Superuser.Password) {
		t.Fatalf("cloud-init: %d %.200q", code, ci.UserData)
	}

	// Node life cycle on the fleet, on the same cluster: config push,
	// rolling restart, drain of the primary's host.
	fleetConfigPush(t, s, hostsDir, clusterID, hostOf)
	fleetRestart(t, s, c, hostsDir, clusterID)
	fleetDrain(t, s, c, hostsDir, clusterID, db)

	if code := c.do("DELETE", "/v1/namespaces/acme/clusters/ledger", nil, &o); code != 202 {
		t.Fatalf("delete: %d", code)
	}
	if done := c.waitOp("acme", o.ID, 3*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("delete failed: %+v", done)
	}
	allocs, err := s.Store.ListAllocations(context.Background(), "")
	if err != nil || len(allocs) != 0 {
		t.Fatalf("capacity not released: %+v %v", allocs, err)
	}
	for _, h := range []string{"host-a", "host-b", "host-c", "host-d"} {
		nd := filepath.Join(hostsDir, h, "nodes")
		if pids := infra.ProcessesUsing(nd); len(pids) != 0 {
			t.Errorf("%s: processes left: %v", h, pids)
		}
		if _, err := os.Stat(filepath.Join(nd, clusterID)); !os.IsNotExist(err) {
			t.Errorf("%s: cluster folder left (%v)", h, err)
		}
	}
	if _, err := s.Store.GetClusterCredentials(context.Background(), clusterID); err == nil {
		t.Error("cluster credentials left in the store")
	}
}
