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

	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/server"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/internal/testutil"
)

// fleetAddr is the loopback address each test host's databases listen on.
var fleetAddr = map[string]string{"host-a": "127.0.0.2", "host-b": "127.0.0.3", "host-c": "127.0.0.4", "host-d": "127.0.0.5"}

// startHostRunner enrols a fleet host (label rack=r1) by running
// `dbpilot-host run` as a process with its own folder under hostsDir;
// its log is shown when the test fails.
func startHostRunner(t *testing.T, c client, serverURL, hostsDir, name, addr string) {
	t.Helper()
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
	cmd := exec.Command(hostBin, "run", "--server", serverURL, "--join-token", jt.JoinToken, "--name", name,
		"--address", addr, "--root", root, "--interval", "500ms",
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

// fleetNode is a fleet node's node.json as the host runner keeps it.
type fleetNode struct {
	PID               int    `json:"pid"`
	PGPort            int    `json:"pg_port"`
	RestartGeneration int64  `json:"restart_generation"`
	ConfigSHA256      string `json:"config_sha256"`
	RejectedSHA256    string `json:"rejected_sha256"`
	ConfigError       string `json:"config_error"`
}

func nodeDir(hostsDir, host, clusterID, node string) string {
	return filepath.Join(hostsDir, host, "nodes", clusterID, node)
}

func readFleetNode(t *testing.T, hostsDir, host, clusterID, node string) fleetNode {
	t.Helper()
	var n fleetNode
	b, err := os.ReadFile(filepath.Join(nodeDir(hostsDir, host, clusterID, node), "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// fleetDB reaches the cluster's databases as the superuser.
type fleetDB struct{ user, password string }

func (d fleetDB) conn(ctx context.Context, host string, port int) (*pgx.Conn, error) {
	return pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s:%d/postgres?sslmode=disable", d.user, d.password, host, port))
}

func (d fleetDB) exec(host string, port int, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.conn(ctx, host, port)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func (d fleetDB) count(host string, port int, query string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := d.conn(ctx, host, port)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, query).Scan(&n)
	return n, err
}

// fleetReady waits until ledger is Ready with 1 primary and n-1 streaming
// replicas and returns it.
func fleetReady(t *testing.T, c client, n int, what string) clusterOut {
	t.Helper()
	var cl clusterOut
	testutil.Eventually(t, 90*time.Second, 250*time.Millisecond, what, func() error {
		c.do("GET", "/v1/namespaces/acme/clusters/ledger", nil, &cl)
		roles := map[string]int{}
		for _, m := range cl.Members {
			if !m.Healthy || m.State != "running" || (m.Role == "replica" && (m.Streaming == nil || !*m.Streaming)) {
				return fmt.Errorf("member %+v", m)
			}
			roles[m.Role]++
		}
		if cl.Phase != store.PhaseReady || cl.Replicas != n || len(cl.Members) != n || roles["primary"] != 1 || roles["replica"] != n-1 {
			return fmt.Errorf("phase %s replicas %d members %d roles %v", cl.Phase, cl.Replicas, len(cl.Members), roles)
		}
		return nil
	})
	return cl
}

// fleetConfigPush re-renders node1's agent config with an extra handler
// through the fleet provider (as an operation re-rendering it would): the
// host writes it and sends SIGHUP, the agent reloads it without a restart
// (same pid) and the host acknowledges its hash. A config the agent would
// refuse (unknown key) is refused by the host before it reaches the agent:
// reported with the validation error, the agent keeps running the previous
// one. Finally the original config is pushed back.
func fleetConfigPush(t *testing.T, s *server.Server, hostsDir, clusterID string, hostOf map[string]string) {
	t.Helper()
	ctx := context.Background()
	const node = "node1"
	host := hostOf[node]
	cl, err := s.Store.GetCluster(ctx, clusterID)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := s.Engine.NodeSpec(ctx, cl, node)
	if err != nil {
		t.Fatal(err)
	}
	before := readFleetNode(t, hostsDir, host, clusterID, node)
	push := func(handlers map[string]any) string {
		t.Helper()
		spec := orig
		spec.Template.Handlers = handlers
		if _, err := s.Fleet.Create(ctx, spec, nil); err != nil {
			t.Fatal(err)
		}
		a, err := s.Store.GetAllocation(ctx, clusterID, node)
		if err != nil {
			t.Fatal(err)
		}
		return infra.ConfigSHA256(a.Config)
	}
	applied := func(what, sum string) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, what, func() error {
			n := readFleetNode(t, hostsDir, host, clusterID, node)
			a, err := s.Store.GetAllocation(ctx, clusterID, node)
			switch {
			case err != nil:
				return err
			case n.ConfigSHA256 != sum:
				return fmt.Errorf("node.json config_sha256 %s, want %s (%s)", n.ConfigSHA256, sum, n.ConfigError)
			case a.ConfigApplied != sum || a.ConfigError != "":
				return fmt.Errorf("allocation acknowledges %s (%q), want %s", a.ConfigApplied, a.ConfigError, sum)
			}
			return nil
		})
	}

	good := push(map[string]any{"onChange": map[string]any{"shell": "true", "timeout": "5s"}})
	applied("host applied the pushed config", good)
	cfg, _ := os.ReadFile(filepath.Join(nodeDir(hostsDir, host, clusterID, node), "agent.yaml"))
	if !strings.Contains(string(cfg), "onChange") {
		t.Fatalf("agent.yaml lacks the pushed handler:\n%s", cfg)
	}
	testutil.Eventually(t, 10*time.Second, 250*time.Millisecond, "agent reloaded its config", func() error {
		b, _ := os.ReadFile(filepath.Join(nodeDir(hostsDir, host, clusterID, node), "agent.log"))
		if !strings.Contains(string(b), "configuration reloaded") {
			return fmt.Errorf("no reload in agent.log")
		}
		return nil
	})

	bad := push(map[string]any{"onChange": map[string]any{"shel": "true"}})
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "host refused the invalid config", func() error {
		n := readFleetNode(t, hostsDir, host, clusterID, node)
		a, err := s.Store.GetAllocation(ctx, clusterID, node)
		switch {
		case err != nil:
			return err
		case n.RejectedSHA256 != bad || n.ConfigSHA256 != good:
			return fmt.Errorf("node.json %+v", n)
		case !strings.Contains(a.ConfigError, "shel") || a.ConfigApplied != good:
			return fmt.Errorf("allocation acknowledges %s with error %q", a.ConfigApplied, a.ConfigError)
		}
		return nil
	})
	cfg, _ = os.ReadFile(filepath.Join(nodeDir(hostsDir, host, clusterID, node), "agent.yaml"))
	if strings.Contains(string(cfg), "shel:") {
		t.Fatalf("the refused config reached agent.yaml:\n%s", cfg)
	}

	applied("host applied the original config again", push(orig.Template.Handlers))
	if after := readFleetNode(t, hostsDir, host, clusterID, node); after.PID != before.PID {
		t.Fatalf("config pushes restarted the agent: pid %d → %d", before.PID, after.PID)
	}
}

// fleetRestart restarts ledger through the API: every node's agent is
// restarted by its host (new pid), replicas first without moving the term,
// then the primary, which hands over (term + 1) on its graceful stop; the
// cluster is Ready again with every restart acknowledged.
func fleetRestart(t *testing.T, s *server.Server, c client, hostsDir, clusterID string) {
	t.Helper()
	ctx := context.Background()
	nodes, err := s.Store.ListNodes(ctx, clusterID)
	if err != nil {
		t.Fatal(err)
	}
	pids := func() map[string]int {
		out := map[string]int{}
		for _, n := range nodes {
			out[n.Name] = readFleetNode(t, hostsDir, n.Host, clusterID, n.Name).PID
		}
		return out
	}
	before := pids()
	l0, err := controlplane.ReadLive(ctx, s.Etcd, "acme", "default", "ledger")
	if err != nil || l0.Leader == nil {
		t.Fatalf("live: %+v %v", l0, err)
	}
	primary, term := l0.Leader.Node, l0.Leader.Term
	a0, err := s.Store.GetAllocation(ctx, clusterID, primary)
	if err != nil {
		t.Fatal(err)
	}

	var o op
	if code := c.do("POST", "/v1/namespaces/acme/clusters/ledger/restart", nil, &o); code != 202 {
		t.Fatalf("restart: %d %+v", code, o)
	}
	// Until the primary's restart is requested, the term stays: restarting
	// replicas causes no election. Watch it, and see both replicas
	// restarted under the same term at least once.
	sawReplicas := false
	deadline := time.Now().Add(4 * time.Minute)
	for {
		c.do("GET", "/v1/namespaces/acme/operations/"+o.ID, nil, &o)
		if o.State == store.OpSucceeded || o.State == store.OpFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restart not finished: %+v", o)
		}
		a, err := s.Store.GetAllocation(ctx, clusterID, primary)
		if err == nil && a.RestartGeneration == a0.RestartGeneration {
			now := pids()
			l, err := controlplane.ReadLive(ctx, s.Etcd, "acme", "default", "ledger")
			if err == nil && l.Leader != nil && l.Leader.Term != term {
				t.Fatalf("term moved from %d to %d (leader %s) before the primary's restart", term, l.Leader.Term, l.Leader.Node)
			}
			restarted := 0
			for n, pid := range now {
				if n != primary && pid != before[n] {
					restarted++
				}
			}
			sawReplicas = sawReplicas || restarted == len(nodes)-1
		}
		time.Sleep(200 * time.Millisecond)
	}
	if o.State != store.OpSucceeded {
		t.Fatalf("restart failed: %+v", o)
	}
	if !sawReplicas {
		t.Error("never saw both replicas restarted before the primary")
	}
	after := pids()
	for n, pid := range before {
		if after[n] == pid {
			t.Errorf("%s: agent pid %d unchanged by the restart", n, pid)
		}
	}
	for _, n := range nodes {
		a, err := s.Store.GetAllocation(ctx, clusterID, n.Name)
		if err != nil || a.RestartGeneration != a0.RestartGeneration+1 || a.RestartApplied != a.RestartGeneration {
			t.Errorf("%s: allocation %+v %v, want generation %d acknowledged", n.Name, a, err, a0.RestartGeneration+1)
		}
	}
	fleetReady(t, c, 3, "fleet cluster Ready after the restart")
	l, err := controlplane.ReadLive(ctx, s.Etcd, "acme", "default", "ledger")
	if err != nil || l.Leader == nil || l.Leader.Term != term+1 || l.Leader.Node == primary {
		t.Fatalf("after the restart: leader %+v (%v), want a replica at term %d (one hand-over from %s)", l.Leader, err, term+1, primary)
	}
}

// fleetDrain enrols a fourth host, drains the primary's host through the
// API and checks that its node moved to the new host (switching over
// first), the cluster is Ready with three nodes, nothing runs on the
// drained host any more, and the data written before is on the new
// primary. Uncordoning is refused while the drain runs, allowed after.
func fleetDrain(t *testing.T, s *server.Server, c client, hostsDir, clusterID string, db fleetDB) {
	t.Helper()
	ctx := context.Background()
	startHostRunner(t, c, s.URL, hostsDir, "host-d", fleetAddr["host-d"])
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "host-d enrolled and polling", func() error {
		h, err := s.Store.GetHost(ctx, "host-d")
		if err == nil && time.Since(h.LastSeen) > 5*time.Second {
			err = fmt.Errorf("last seen %s", h.LastSeen)
		}
		return err
	})
	l, err := controlplane.ReadLive(ctx, s.Etcd, "acme", "default", "ledger")
	if err != nil || l.Leader == nil {
		t.Fatalf("live: %+v %v", l, err)
	}
	oldPrimary := l.Leader.Node
	hostOf := map[string]string{}
	nodes, _ := s.Store.ListNodes(ctx, clusterID)
	for _, n := range nodes {
		hostOf[n.Name] = n.Host
	}
	drained := hostOf[oldPrimary]

	var o op
	if code := c.do("POST", "/v1/infra/hosts/"+drained+"/drain", nil, &o); code != 202 || o.ID == "" {
		t.Fatalf("drain %s: %d %+v", drained, code, o)
	}
	var e apiErr
	if code := c.do("POST", "/v1/infra/hosts/"+drained+"/drain", nil, &e); code != 409 {
		t.Errorf("second drain: %d %+v, want 409", code, e)
	}
	if code := c.do("POST", "/v1/infra/hosts/"+drained+"/uncordon", nil, &e); code != 409 {
		t.Errorf("uncordon while draining: %d %+v, want 409", code, e)
	}
	testutil.Eventually(t, 4*time.Minute, 250*time.Millisecond, "the drain to finish", func() error {
		if o.State == store.OpSucceeded || o.State == store.OpFailed {
			return nil
		}
		if code := c.do("GET", "/v1/infra/operations/"+o.ID, nil, &o); code != 200 {
			t.Fatalf("get drain operation: %d", code)
		}
		return fmt.Errorf("%+v", o)
	})
	if o.State != store.OpSucceeded {
		t.Fatalf("drain failed: %+v", o)
	}
	t.Logf("drain: %s", o.Progress)

	h, _ := s.Store.GetHost(ctx, drained)
	if allocs, err := s.Store.ListAllocations(ctx, h.ID); err != nil || len(allocs) != 0 {
		t.Fatalf("allocations left on %s: %+v %v", drained, allocs, err)
	}
	if pids := infra.ProcessesUsing(filepath.Join(hostsDir, drained, "nodes")); len(pids) != 0 {
		t.Errorf("%s: processes left: %v", drained, pids)
	}
	cl := fleetReady(t, c, 3, "fleet cluster Ready with three nodes after the drain")
	if cl.Primary == oldPrimary {
		t.Errorf("primary still %s", cl.Primary)
	}
	nodes, _ = s.Store.ListNodes(ctx, clusterID)
	perHost := map[string]int{}
	for _, n := range nodes {
		perHost[n.Host]++
	}
	if len(nodes) != 3 || perHost[drained] != 0 || perHost["host-d"] != 1 {
		t.Fatalf("nodes after the drain: %+v", perHost)
	}
	var hosts struct {
		Items []struct {
			Name  string `json:"name"`
			State string `json:"state"`
			Nodes int    `json:"nodes"`
		} `json:"items"`
	}
	c.do("GET", "/v1/infra/hosts", nil, &hosts)
	for _, x := range hosts.Items {
		if x.Name == drained && (x.State != store.HostCordoned || x.Nodes != 0) {
			t.Errorf("drained host listed as %+v", x)
		}
	}
	var ops struct {
		Items []struct {
			Kind  string `json:"kind"`
			State string `json:"state"`
		} `json:"items"`
	}
	c.do("GET", "/v1/namespaces/acme/operations?cluster_id="+clusterID, nil, &ops)
	moves := 0
	for _, x := range ops.Items {
		if x.Kind == controlplane.KindMove && x.State == store.OpSucceeded {
			moves++
		}
	}
	if moves != 1 {
		t.Errorf("%d succeeded move operations in the cluster's list, want 1: %+v", moves, ops.Items)
	}
	// The rows written before the restart and the drain are on the new primary.
	var hostOfPrimary string
	for _, n := range nodes {
		if n.Name == cl.Primary {
			hostOfPrimary = n.Host
		}
	}
	pn := readFleetNode(t, hostsDir, hostOfPrimary, clusterID, cl.Primary)
	if n, err := db.count(fleetAddr[hostOfPrimary], pn.PGPort, "SELECT count(*) FROM entries"); err != nil || n != 100 {
		t.Fatalf("rows on the new primary %s: %d %v, want 100", cl.Primary, n, err)
	}
	var hj struct {
		State string `json:"state"`
	}
	if code := c.do("POST", "/v1/infra/hosts/"+drained+"/uncordon", nil, &hj); code != 200 || hj.State != store.HostReady {
		t.Fatalf("uncordon: %d %+v", code, hj)
	}
}
