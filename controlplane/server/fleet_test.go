package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
)

// TestFleetProvisionDelete: three fleet hosts on this machine (each a
// `dbpilot-host run` process with its own folder and loopback
// address) enrol with one-time join tokens; a cluster created with provider
// fleet lands one node per host, becomes Ready with 1 primary and 2
// streaming replicas (checked on the primary), and its deletion stops every
// agent, removes the node folders and releases the capacity.
func TestFleetProvisionDelete(t *testing.T) {
	dir := testDir(t)
	s, c := startServer(t, dir)
	defer s.Close()

	hostsDir := filepath.Join(dir, "hosts")
	for i, name := range []string{"host-a", "host-b", "host-c"} {
		var jt struct {
			JoinToken string `json:"join_token"`
		}
		if code := c.do("POST", "/v1/infra/join-tokens", map[string]any{"labels": map[string]string{"rack": "r1"}}, &jt); code != 201 {
			t.Fatalf("join token: %d", code)
		}
		root := filepath.Join(hostsDir, name)
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(root, "runner.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(hostBin, "run", "--server", s.URL, "--join-token", jt.JoinToken, "--name", name,
			"--address", fmt.Sprintf("127.0.0.%d", i+2), "--root", root, "--interval", "500ms",
			"--cpu", "2", "--memory-mb", "2048", "--disk-gb", "20", "--agent-bin", agentBin)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("--- %s (tail)\n%s", logf.Name(), b)
			}
		})
	}
	eventually(t, 30*time.Second, "three hosts enrolled and polling", func() error {
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
	eventually(t, 60*time.Second, "fleet cluster Ready with 1 primary + 2 streaming replicas", func() error {
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
	addr := map[string]string{"host-a": "127.0.0.2", "host-b": "127.0.0.3", "host-c": "127.0.0.4"}[hostOf[cl.Primary]]
	eventually(t, 30*time.Second, "primary reports 2 streaming replicas", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s:%d/postgres?sslmode=disable", cred.Superuser.Username, cred.Superuser.Password, addr, nh.PGPort))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").Scan(&n); err != nil {
			return err
		}
		if n != 2 {
			return fmt.Errorf("%d streaming", n)
		}
		return nil
	})

	// cloud-init user-data for the same node carries the same credentials.
	var ci struct {
		UserData string `json:"user_data"`
	}
	if code := c.do("GET", "/v1/namespaces/acme/clusters/ledger/nodes/node2/cloud-init", nil, &ci); code != 200 ||
		!strings.HasPrefix(ci.UserData, "#cloud-config\n") || !strings.Contains(ci.UserData, cred.Superuser.Password) {
		t.Fatalf("cloud-init: %d %.200q", code, ci.UserData)
	}

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
	for _, h := range []string{"host-a", "host-b", "host-c"} {
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
