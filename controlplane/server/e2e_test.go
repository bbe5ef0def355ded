package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/controlplane/server"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/internal/testutil"
)

var agentBin, hostBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dbpilot-server-test-")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	// PostgreSQL's OS user runs the agent binary as archive_command and
	// restore_command (wal-push, wal-fetch): it must reach it.
	_ = os.Chmod(dir, 0o755)
	agentBin = filepath.Join(dir, "dbpilot-agent")
	out, err := exec.Command("go", "build", "-race", "-o", agentBin, "github.com/dbpilot/dbpilot/cmd/dbpilot-agent").CombinedOutput()
	if err != nil {
		fmt.Printf("building dbpilot-agent: %v\n%s", err, out)
		os.Exit(1)
	}
	hostBin = filepath.Join(dir, "dbpilot-host")
	if out, err := exec.Command("go", "build", "-race", "-o", hostBin, "github.com/dbpilot/dbpilot/cmd/dbpilot-host").CombinedOutput(); err != nil {
		fmt.Printf("building dbpilot-host: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// client is a tiny API client for the tests.
type client struct {
	t     *testing.T
	base  string
	token string
}

func (c client) do(method, path string, body any, out any) int {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

type op struct {
	ID, ClusterID, State, Step, Progress, Error string
}

func (o *op) UnmarshalJSON(b []byte) error {
	var m struct {
		ID        string `json:"id"`
		ClusterID string `json:"cluster_id"`
		State     string `json:"state"`
		Step      string `json:"step"`
		Progress  string `json:"progress"`
		Error     string `json:"error"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*o = op{m.ID, m.ClusterID, m.State, m.Step, m.Progress, m.Error}
	return nil
}

// waitOp polls an operation until it is terminal.
func (c client) waitOp(ns, id string, timeout time.Duration) op {
	c.t.Helper()
	var o op
	testutil.Eventually(c.t, timeout, 250*time.Millisecond, "operation "+id+" to finish", func() error {
		if code := c.do("GET", "/v1/namespaces/"+ns+"/operations/"+id, nil, &o); code != 200 {
			c.t.Fatalf("get operation: %d", code)
		}
		if o.State == store.OpSucceeded || o.State == store.OpFailed {
			return nil
		}
		return fmt.Errorf("%+v", o)
	})
	return o
}

type member struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	State     string `json:"state"`
	Healthy   bool   `json:"healthy"`
	Streaming *bool  `json:"streaming"`
}

type clusterOut struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Phase    string   `json:"phase"`
	Reason   string   `json:"reason"`
	Primary  string   `json:"primary"`
	Term     uint64   `json:"term"`
	Replicas int      `json:"replicas"`
	Members  []member `json:"members"`
}

// testRepairInterval is the repair reconciler's interval in these tests:
// short, so a killed node is noticed at once, and running throughout every
// test, so that no node is ever restarted behind a workflow's back.
const testRepairInterval = time.Second

func startServer(t *testing.T, dir string) (*server.Server, client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	repairEvery := testRepairInterval
	// The alert engine is off here: on seeded clusters (no agents) it
	// would page and record alert events into the histories these tests
	// compare. alerts_test.go runs it (startAlertServer).
	alertsOff := false
	s, err := server.Start(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", AgentBin: agentBin, ReadyTimeout: 3 * time.Minute,
		RepairInterval: &repairEvery, Alerts: server.AlertsConfig{Enabled: &alertsOff}}, zaptest.NewLogger(t).Named("server"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.CreateNamespace(ctx, "acme"); err != nil && err.Error() != "" && !strings.Contains(err.Error(), "conflict") {
		t.Fatal(err)
	}
	tok, err := s.CreateToken(ctx, "test-admin", store.Grant{Namespace: "*", Role: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	return s, client{t: t, base: s.URL, token: tok}
}

func testDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "dbpilot-cp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(dir, "nodes", "*", "*", "agent.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("--- %s (tail)\n%s", l, b)
			}
		}
		// A failed test may leave agents running: kill what runs out of dir.
		for _, pid := range infra.ProcessesUsing(dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		os.RemoveAll(dir)
	})
	return dir
}

// primaryStreaming checks on the primary itself (pg_stat_replication)
// that want replicas stream from it.
func primaryStreaming(t *testing.T, p *infra.Process, c clusterOut, handles map[string]infra.ProcessHandle, want int) error {
	user, pw, err := p.ReadSuperuser(c.ID)
	if err != nil {
		return err
	}
	h := handles[c.Primary]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/postgres?sslmode=disable", user, pw, h.PGPort))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").Scan(&n); err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("%d streaming replicas, want %d", n, want)
	}
	return nil
}

func handlesOf(t *testing.T, s *server.Server, clusterID string) map[string]infra.ProcessHandle {
	t.Helper()
	nodes, err := s.Store.ListNodes(context.Background(), clusterID)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]infra.ProcessHandle{}
	for _, n := range nodes {
		var h infra.ProcessHandle
		_ = json.Unmarshal(n.Handle, &h)
		out[n.Name] = h
	}
	return out
}

// TestProvisionSwitchoverDelete drives a cluster through the API on the
// process provider: create → Ready (1 primary, 2 streaming replicas),
// a server restart in the middle of provisioning, switchover, scale
// 3→5→3, a killed replica repaired by the control plane, delete leaving no
// process and no folder behind.
func TestProvisionSwitchoverDelete(t *testing.T) {
	dir := testDir(t)
	s, c := startServer(t, dir)
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()

	var o op
	code := c.do("POST", "/v1/namespaces/acme/clusters", map[string]any{"name": "billing", "replicas": 3, "plan": "small"}, &o)
	if code != 202 || o.ID == "" {
		t.Fatalf("create: %d %+v", code, o)
	}
	clusterID := o.ClusterID

	// Restart the server mid-provisioning: once nodes are being created.
	testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, "provisioning reached the nodes step", func() error {
		var cur op
		c.do("GET", "/v1/namespaces/acme/operations/"+o.ID, nil, &cur)
		if cur.Step == "nodes" || cur.Step == "ready" {
			return nil
		}
		return fmt.Errorf("step %q", cur.Step)
	})
	s.Close()
	closed = true
	s, c = startServer(t, dir)
	closed = false

	done := c.waitOp("acme", o.ID, 4*time.Minute)
	if done.State != store.OpSucceeded {
		t.Fatalf("create failed: %+v", done)
	}
	var cl clusterOut
	testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, "projection shows 1 primary + 2 streaming replicas", func() error {
		if code := c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, &cl); code != 200 {
			return fmt.Errorf("get: %d", code)
		}
		if cl.Phase != store.PhaseReady || cl.Primary == "" || len(cl.Members) != 3 {
			return fmt.Errorf("cluster %+v", cl)
		}
		roles := map[string]int{}
		for _, m := range cl.Members {
			if !m.Healthy || m.State != "running" {
				return fmt.Errorf("member %+v", m)
			}
			roles[m.Role]++
			if m.Role == "replica" && (m.Streaming == nil || !*m.Streaming) {
				return fmt.Errorf("replica %s not streaming", m.Name)
			}
		}
		if roles["primary"] != 1 || roles["replica"] != 2 {
			return fmt.Errorf("roles %v", roles)
		}
		return nil
	})
	handles := handlesOf(t, s, clusterID)
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "primary reports 2 streaming replicas", func() error {
		return primaryStreaming(t, s.Process, cl, handles, 2)
	})

	// Switchover to a named replica.
	target := ""
	for _, m := range cl.Members {
		if m.Role == "replica" {
			target = m.Name
			break
		}
	}
	if code := c.do("POST", "/v1/namespaces/acme/clusters/billing/switchover", map[string]any{"to": target, "reason": "test"}, &o); code != 202 {
		t.Fatalf("switchover: %d", code)
	}
	if done := c.waitOp("acme", o.ID, 2*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("switchover failed: %+v", done)
	}
	testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, "projection follows the switchover", func() error {
		c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, &cl)
		if cl.Primary != target || cl.Term < 2 {
			return fmt.Errorf("primary %s term %d, want %s", cl.Primary, cl.Term, target)
		}
		return nil
	})

	// Synchronous mode on, live: the primary waits for a standby without a
	// restart; the scale-down then runs in synchronous mode (the removed
	// nodes leave the synchronous set first); then off again.
	setSyncAndCheck(t, s, c, clusterID, "on")
	scaleAndCheck(t, s, c, clusterID, 5)
	scaleAndCheck(t, s, c, clusterID, 3)
	setSyncAndCheck(t, s, c, clusterID, "off")
	killAndRepair(t, s, c, clusterID)

	// Events were recorded and are listed.
	var evs struct {
		Items []struct {
			Type string `json:"type"`
		} `json:"items"`
	}
	if code := c.do("GET", "/v1/namespaces/acme/events?cluster=billing&type=io.dbpilot.cluster.primary_changed.v1", nil, &evs); code != 200 || len(evs.Items) < 2 {
		t.Fatalf("primary_changed events: %d %+v", code, evs)
	}

	// Delete: nothing left behind.
	if code := c.do("DELETE", "/v1/namespaces/acme/clusters/billing", nil, &o); code != 202 {
		t.Fatalf("delete: %d", code)
	}
	if done := c.waitOp("acme", o.ID, 2*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("delete failed: %+v", done)
	}
	if code := c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, nil); code != 404 {
		t.Fatalf("deleted cluster: %d", code)
	}
	cdir := filepath.Join(s.Process.Root(), clusterID)
	if _, err := os.Stat(cdir); !os.IsNotExist(err) {
		t.Fatalf("cluster folder %s still exists (%v)", cdir, err)
	}
	if pids := infra.ProcessesUsing(s.Process.Root()); len(pids) != 0 {
		t.Fatalf("processes left behind: %v", pids)
	}
	resp, err := s.Etcd.Raw().Get(context.Background(), "/dbpilot/v1/clusters/acme/", clientv3WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("etcd keys left: %v %v", resp, err)
	}
}

// scaleAndCheck scales billing to n replicas through the API and checks
// the result: n healthy members (1 primary, n-1 streaming replicas, also
// seen on the primary itself), the primary unchanged, and for every removed
// node neither its folder, nor a process, nor its member key left.
func scaleAndCheck(t *testing.T, s *server.Server, c client, clusterID string, n int) {
	t.Helper()
	var before clusterOut
	c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, &before)
	oldHandles := handlesOf(t, s, clusterID)
	var o op
	if code := c.do("POST", "/v1/namespaces/acme/clusters/billing/scale", map[string]any{"replicas": n}, &o); code != 202 {
		t.Fatalf("scale to %d: %d", n, code)
	}
	if done := c.waitOp("acme", o.ID, 3*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("scale to %d failed: %+v", n, done)
	}
	var cl clusterOut
	testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, fmt.Sprintf("projection shows %d members", n), func() error {
		c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, &cl)
		if cl.Phase != store.PhaseReady || cl.Replicas != n || len(cl.Members) != n {
			return fmt.Errorf("phase %s replicas %d members %d", cl.Phase, cl.Replicas, len(cl.Members))
		}
		roles := map[string]int{}
		for _, m := range cl.Members {
			roles[m.Role]++
			if !m.Healthy || (m.Role == "replica" && (m.Streaming == nil || !*m.Streaming)) {
				return fmt.Errorf("member %+v", m)
			}
		}
		if roles["primary"] != 1 || roles["replica"] != n-1 {
			return fmt.Errorf("roles %v", roles)
		}
		return nil
	})
	if cl.Primary != before.Primary {
		t.Fatalf("scale to %d moved the primary from %s to %s", n, before.Primary, cl.Primary)
	}
	handles := handlesOf(t, s, clusterID)
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, fmt.Sprintf("primary reports %d streaming replicas", n-1), func() error {
		return primaryStreaming(t, s.Process, cl, handles, n-1)
	})
	for name, h := range oldHandles {
		if _, kept := handles[name]; kept {
			continue
		}
		if _, err := os.Stat(h.Dir); !os.IsNotExist(err) {
			t.Errorf("removed node %s: folder %s still exists (%v)", name, h.Dir, err)
		}
		if pids := infra.ProcessesUsing(h.Dir); len(pids) != 0 {
			t.Errorf("removed node %s: processes left: %v", name, pids)
		}
		resp, err := s.Etcd.Raw().Get(context.Background(), "/dbpilot/v1/clusters/acme/default/billing/members/"+name)
		if err != nil || len(resp.Kvs) != 0 {
			t.Errorf("removed node %s: member key left (%v)", name, err)
		}
	}
}

// setSyncAndCheck changes billing's synchronous_mode through PATCH and
// checks it on the primary itself: synchronous_standby_names is a quorum
// of replicas ("on") or empty ("off"), a commit is acknowledged, and the
// cluster shows the mode.
func setSyncAndCheck(t *testing.T, s *server.Server, c client, clusterID, mode string) {
	t.Helper()
	// Every replica streams first (after a switchover they reconnect):
	// then "in effect" means PostgreSQL waits for one of them.
	var cl clusterOut
	c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, &cl)
	testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, "every replica streams before the change", func() error {
		return primaryStreaming(t, s.Process, cl, handlesOf(t, s, clusterID), cl.Replicas-1)
	})
	var o op
	if code := c.do("PATCH", "/v1/namespaces/acme/clusters/billing", map[string]any{"synchronous_mode": mode}, &o); code != 202 {
		t.Fatalf("PATCH synchronous_mode %s: %d", mode, code)
	}
	if done := c.waitOp("acme", o.ID, 2*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("synchronous_mode %s failed: %+v", mode, done)
	}
	var sm struct {
		SynchronousMode string `json:"synchronous_mode"`
	}
	c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, &cl)
	if c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, &sm); sm.SynchronousMode != mode {
		t.Fatalf("cluster shows synchronous_mode %q, want %q", sm.SynchronousMode, mode)
	}
	// The operation succeeded once the primary reported the mode in
	// effect: PostgreSQL already agrees.
	user, pw, err := s.Process.ReadSuperuser(clusterID)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/postgres?sslmode=disable", user, pw, handlesOf(t, s, clusterID)[cl.Primary].PGPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var names string
	if err := conn.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&names); err != nil {
		t.Fatal(err)
	}
	if (mode == "on") != strings.HasPrefix(names, "ANY 1 (") {
		t.Fatalf("synchronous_mode %s: the primary %s has synchronous_standby_names = %q", mode, cl.Primary, names)
	}
	for _, q := range []string{"CREATE TABLE IF NOT EXISTS sync_probe (n int)", "INSERT INTO sync_probe VALUES (1)"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("synchronous_mode %s: %s on %s: %v", mode, q, cl.Primary, err)
		}
	}
	t.Logf("synchronous_mode %s: %s has synchronous_standby_names = %q", mode, cl.Primary, names)
}

// killAndRepair kills one replica of billing the way a host dies (SIGKILL
// to its process group: agent and PostgreSQL) and checks that the repair
// reconciler notices it, runs a repair operation that succeeds with the
// reason it saw, records node_repair events and an audit entry, and that
// the node streams again from the unchanged primary (cluster Ready with 3
// members).
func killAndRepair(t *testing.T, s *server.Server, c client, clusterID string) {
	t.Helper()
	var before clusterOut
	c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, &before)
	victim := ""
	for _, m := range before.Members {
		if m.Role == "replica" {
			victim = m.Name
		}
	}
	old := handlesOf(t, s, clusterID)[victim]
	if victim == "" || old.PID == 0 {
		t.Fatalf("no replica to kill in %+v", before)
	}
	killedAt := time.Now()
	if err := syscall.Kill(-old.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 -%d (%s): %v", old.PID, victim, err)
	}
	type repairOp struct {
		ID     string   `json:"id"`
		Kind   string   `json:"kind"`
		State  string   `json:"state"`
		Reason string   `json:"reason"`
		Nodes  []string `json:"nodes"`
	}
	var rep repairOp
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "a repair operation starts", func() error {
		var ops struct {
			Items []repairOp `json:"items"`
		}
		c.do("GET", "/v1/namespaces/acme/operations?cluster_id="+clusterID+"&limit=1000", nil, &ops)
		for _, o := range ops.Items {
			if o.Kind == "repair" {
				rep = o
				return nil
			}
		}
		return fmt.Errorf("%d operations, none a repair", len(ops.Items))
	})
	wantReason := fmt.Sprintf("node %s not running (provider status: agent pid %d not running)", victim, old.PID)
	if rep.Reason != wantReason || len(rep.Nodes) != 1 || rep.Nodes[0] != victim {
		t.Errorf("repair operation %+v, want reason %q for %s", rep, wantReason, victim)
	}
	if done := c.waitOp("acme", rep.ID, 3*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("repair failed: %+v", done)
	}
	var cl clusterOut
	testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, "cluster Ready again with 3 healthy members, replicas streaming", func() error {
		c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, &cl)
		if cl.Phase != store.PhaseReady || len(cl.Members) != 3 {
			return fmt.Errorf("phase %s (%s), %d members", cl.Phase, cl.Reason, len(cl.Members))
		}
		for _, m := range cl.Members {
			if !m.Healthy || m.State != "running" || (m.Role == "replica" && (m.Streaming == nil || !*m.Streaming)) {
				return fmt.Errorf("member %+v", m)
			}
		}
		return nil
	})
	if cl.Primary != before.Primary {
		t.Errorf("repairing replica %s moved the primary from %s to %s", victim, before.Primary, cl.Primary)
	}
	handles := handlesOf(t, s, clusterID)
	if handles[victim].PID == old.PID {
		t.Errorf("%s still has the killed pid %d", victim, old.PID)
	}
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "primary reports 2 streaming replicas after the repair", func() error {
		return primaryStreaming(t, s.Process, cl, handles, 2)
	})
	t.Logf("%s killed, repaired by %s and streaming again %s later", victim, rep.ID, time.Since(killedAt).Round(100*time.Millisecond))

	var evs struct {
		Items []struct {
			Node string `json:"node"`
			Data struct {
				State       string `json:"state"`
				OperationID string `json:"operation_id"`
				Reason      string `json:"reason"`
			} `json:"data"`
		} `json:"items"`
	}
	c.do("GET", "/v1/namespaces/acme/events?cluster=billing&type=io.dbpilot.controlplane.node_repair.v1", nil, &evs)
	var states []string
	for _, e := range evs.Items {
		if e.Node != victim || e.Data.OperationID != rep.ID || e.Data.Reason != wantReason {
			t.Errorf("node_repair event %+v", e)
		}
		states = append(states, e.Data.State)
	}
	if strings.Join(states, ",") != "started,succeeded" {
		t.Errorf("node_repair events %v, want started,succeeded", states)
	}
	var audit struct {
		Items []struct {
			Actor, Action, Result string
		} `json:"items"`
	}
	c.do("GET", "/v1/namespaces/acme/audit?limit=1000", nil, &audit)
	found := false
	for _, a := range audit.Items {
		found = found || (a.Action == "repair" && a.Result == "operation "+rep.ID+": "+wantReason)
	}
	if !found {
		t.Errorf("no audit entry for %s: %+v", rep.ID, audit.Items)
	}
}

func clientv3WithPrefix() clientv3.OpOption { return clientv3.WithPrefix() }
