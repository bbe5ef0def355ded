//go:build dapr

package daprtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/agent/report"
	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/server"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/internal/testutil"
	"github.com/dbpilot/dbpilot/proto"
)

const pubsubName = "dbpilot-pubsub"

func daprdPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("DBPILOT_DAPRD")
	if p == "" {
		home, _ := os.UserHomeDir()
		p = filepath.Join(home, ".cache", "dbpilot", "daprd-1.14.4")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("daprd not found at %s (run deploy/dev/build-daprd.sh or set DBPILOT_DAPRD): %v", p, err)
	}
	return p
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects a process's output for the failure log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a child process whose output is shown when the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

func start(t *testing.T, name string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// kill signals the process group and waits for the process (SIGKILL after 10 s).
func (p *proc) kill(sig syscall.Signal) {
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func waitTCP(t *testing.T, addr string, p *proc, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before listening on %s", p.name, addr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s after %s", p.name, addr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// daprd starts a sidecar and returns it with its gRPC and HTTP API
// addresses (host:port).
func daprd(t *testing.T, bin, appID, resources string, appPort int) (p *proc, grpcAddr, httpAddr string) {
	t.Helper()
	grpcPort, httpPort := strconv.Itoa(freePort(t)), strconv.Itoa(freePort(t))
	args := []string{"--app-id", appID, "--dapr-grpc-port", grpcPort, "--dapr-http-port", httpPort,
		"--dapr-internal-grpc-port", strconv.Itoa(freePort(t)), "--metrics-port", strconv.Itoa(freePort(t)),
		"--resources-path", resources, "--log-level", "warn"}
	if appPort > 0 {
		args = append(args, "--app-port", strconv.Itoa(appPort), "--app-protocol", "http")
	}
	return start(t, "daprd "+appID, bin, args...), "127.0.0.1:" + grpcPort, "127.0.0.1:" + httpPort
}

// TestDaprRedisKillConverges: 4 clusters × 3 members publish numbered
// member_state streams through the agent sidecar; redis-server is killed
// (SIGKILL, AOF with fsync always) and restarted mid-stream; the server
// must end with every published event recorded exactly once and every
// member at its last event. On the control plane's own topic, operations
// requested through the API just before the kill and after the restart
// travel through the server's sidecar to the workflow engine, which
// accepts each request once (redeliveries are recognised by id) and runs
// each operation once; malformed control-plane events published through
// the agents' sidecar are dropped once each, never redelivered.
func TestDaprRedisKillConverges(t *testing.T) {
	daprdBin := daprdPath(t)
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not on PATH (deploy/dev/install-dapr-deps.sh installs it)")
	}
	dir := t.TempDir()
	redisPort := freePort(t)
	redisDir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(redisDir, 0o755); err != nil {
		t.Fatal(err)
	}
	redisArgs := []string{"--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1", "--dir", redisDir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"}
	redis := start(t, "redis-server", redisBin, redisArgs...)
	redisAddr := "127.0.0.1:" + strconv.Itoa(redisPort)
	waitTCP(t, redisAddr, redis, 20*time.Second)

	resources := filepath.Join(dir, "components")
	if err := os.MkdirAll(resources, 0o755); err != nil {
		t.Fatal(err)
	}
	component := fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: %s
spec:
  type: pubsub.redis
  version: v1
  metadata:
    - name: redisHost
      value: "%s"
    - name: processingTimeout
      value: "5s"
    - name: redeliverInterval
      value: "1s"
`, pubsubName, redisAddr)
	if err := os.WriteFile(filepath.Join(resources, "pubsub.yaml"), []byte(component), 0o644); err != nil {
		t.Fatal(err)
	}

	// The server and its sidecar.
	appPort := freePort(t)
	serverSidecar, serverGRPC, _ := daprd(t, daprdBin, "dbpilot-server", resources, appPort)
	_ = serverSidecar
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	srv, err := server.Start(ctx, server.Config{DataDir: filepath.Join(dir, "server"), Listen: "127.0.0.1:0",
		Bus: server.BusConfig{Kind: server.BusDapr, Dapr: server.DaprConfig{GRPCAddress: serverGRPC, PubSub: pubsubName,
			AppListen: "127.0.0.1:" + strconv.Itoa(appPort)}}}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	const clusters, members, perMember = 4, 3, 100
	now := time.Now()
	// The namespace must exist (events and audit bind to its id) and only
	// nodes the control plane provisioned may speak (docs/security.md).
	if _, err := srv.Store.CreateNamespace(ctx, "ns"); err != nil {
		t.Fatal(err)
	}
	for c := range clusters {
		id := fmt.Sprintf("c%d", c)
		err := srv.Store.CreateCluster(ctx, store.Cluster{ID: id, Namespace: "ns", Project: "default", Name: "db" + strconv.Itoa(c),
			Engine: "postgres", Version: "16", Provider: "process", Replicas: members, Phase: store.PhaseReady, CreatedAt: now, UpdatedAt: now},
			store.Operation{ID: "op-" + id, Namespace: "ns", ClusterID: id, Kind: controlplane.KindCreate, State: store.OpSucceeded, CreatedAt: now, UpdatedAt: now})
		if err != nil {
			t.Fatal(err)
		}
		for m := range members {
			if err := srv.Store.UpsertNode(ctx, store.Node{ClusterID: id, Name: "node" + strconv.Itoa(m), State: store.NodeCreated}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Clusters without nodes for the control-plane operations: a restart
	// has nothing to restart and a delete nothing to stop, so each
	// completes as soon as the engine gets its request.
	const opClusters = 4
	for i := range opClusters {
		id := fmt.Sprintf("op%d", i)
		err := srv.Store.CreateCluster(ctx, store.Cluster{ID: id, Namespace: "ns", Project: "default", Name: "ops" + strconv.Itoa(i),
			Engine: "postgres", Version: "16", Template: "postgres-15", Plan: "small", Provider: "process", Replicas: 1,
			Phase: store.PhaseReady, CreatedAt: now, UpdatedAt: now},
			store.Operation{ID: "op-" + id, Namespace: "ns", ClusterID: id, Kind: controlplane.KindCreate, State: store.OpSucceeded, CreatedAt: now, UpdatedAt: now})
		if err != nil {
			t.Fatal(err)
		}
	}
	token, err := srv.CreateToken(ctx, "dapr-test", store.Grant{Namespace: "*", Role: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	api := func(method, path string, out any) int {
		req, _ := http.NewRequestWithContext(ctx, method, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
			}
		}
		return resp.StatusCode
	}
	var requested []string // operation ids
	request := func(method, path string) {
		var op struct {
			ID string `json:"id"`
		}
		if code := api(method, "/v1/namespaces/ns/clusters/"+path, &op); code != 202 || op.ID == "" {
			t.Fatalf("%s %s: %d %+v", method, path, code, op)
		}
		requested = append(requested, op.ID)
	}

	// The agents' sidecar (no app: it only publishes). The agents publish
	// through its HTTP API; the malformed control-plane events below go
	// through its gRPC API with the control plane's go-sdk bus.
	_, agentGRPC, agentHTTP := daprd(t, daprdBin, "dbpilot-agent", resources, 0)

	// Malformed events on the control plane's topic, through the agents'
	// sidecar: an agent event, a request with an unknown field, a request
	// without an operation id.
	cpBus, err := controlplane.NewDaprBus(ctx, agentGRPC, pubsubName)
	if err != nil {
		t.Fatal(err)
	}
	defer cpBus.Close()
	stray, err := proto.NewEnvelope(proto.TypeMemberState, proto.AgentSource("ns", "db0", "node0"),
		proto.Header{ClusterRef: proto.ClusterRef{Namespace: "ns", Project: "default", Cluster: "db0"}, Node: "node0", TimestampMS: now.UnixMilli()},
		proto.MemberState{Role: proto.RoleReplica, State: proto.StateRunning, Healthy: true})
	if err != nil {
		t.Fatal(err)
	}
	strayRaw, _ := json.Marshal(stray)
	valid, _ := controlplane.NewOperationRequested("dapr-test", controlplane.OperationRequested{OperationID: "op-nope", Kind: controlplane.KindRestart, Namespace: "ns", ClusterID: "op0"})
	var doc map[string]any
	_ = json.Unmarshal(valid, &doc)
	doc["data"].(map[string]any)["extra"] = true
	unknownField, _ := json.Marshal(doc)
	noID, _ := controlplane.NewOperationRequested("dapr-test", controlplane.OperationRequested{Kind: controlplane.KindRestart, Namespace: "ns", ClusterID: "op0"})
	malformed := [][]byte{strayRaw, unknownField, noID}
	for _, raw := range malformed {
		for err := cpBus.Publish(ctx, controlplane.TopicControlPlane, raw); err != nil; err = cpBus.Publish(ctx, controlplane.TopicControlPlane, raw) {
			if ctx.Err() != nil {
				t.Fatalf("publish a malformed control-plane event: %v", err)
			}
			time.Sleep(200 * time.Millisecond) // the sidecar may still be loading its component
		}
	}
	malformedAt := time.Now()

	// One Reporter per member, as each agent has, all through the sidecar.
	type member struct {
		cluster, node string
		rep           *report.Reporter
	}
	var ms []member
	runCtx, stopReporters := context.WithCancel(ctx)
	defer stopReporters()
	var wg sync.WaitGroup
	for c := range clusters {
		for m := range members {
			tr, err := report.NewDaprTransport(agentHTTP, pubsubName, controlplane.TopicAgentEvents)
			if err != nil {
				t.Fatal(err)
			}
			r := report.NewReporter(tr, log.Named("reporter"), report.WithBackoff(50*time.Millisecond, 500*time.Millisecond),
				report.WithSendTimeout(3*time.Second), report.WithQueueSize(10*perMember))
			wg.Add(1)
			go func() { defer wg.Done(); r.Run(runCtx) }()
			ms = append(ms, member{cluster: "db" + strconv.Itoa(c), node: "node" + strconv.Itoa(m), rep: r})
		}
	}
	defer func() { stopReporters(); wg.Wait() }()

	published := map[string]bool{}
	publish := func(seq int) {
		for _, m := range ms {
			h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: "ns", Project: "default", Cluster: m.cluster}, Node: m.node,
				Term: 1, Revision: int64(seq), TimestampMS: time.Now().UnixMilli()}
			e, err := proto.NewEnvelope(proto.TypeMemberState, proto.AgentSource("ns", m.cluster, m.node), h,
				proto.MemberState{Role: proto.RoleReplica, State: proto.StateRunning, Healthy: true, LagBytes: int64(seq)})
			if err != nil {
				t.Fatal(err)
			}
			published[e.ID] = true
			m.rep.Publish(e)
		}
	}
	total := clusters * members * perMember
	recorded := func() uint64 { s := srv.Projection.Stats(); return s.Applied + s.Stale }

	// Stream: one event per member every 50 ms. A quarter of the way in,
	// a burst of 20 events per member builds a backlog in the Redis stream
	// (accepted by the broker, not yet delivered to the server); redis is
	// killed with that backlog in it (SIGKILL: only its AOF survives),
	// restarted 1.5 s later, and the stream goes on meanwhile.
	delivered := func() uint64 {
		var n uint64
		for _, m := range ms {
			n += m.rep.Stats().Delivered
		}
		return n
	}
	const burst = 20
	killed, restarted := false, false
	var killedAt time.Time
	for seq := 1; seq <= perMember; seq++ {
		publish(seq)
		if !killed && seq >= perMember/4 && seq < perMember/4+burst {
			continue // the burst: no pacing
		}
		if !killed && seq >= perMember/4+burst {
			bd := time.Now().Add(10 * time.Second)
			for delivered() < recorded()+uint64(clusters*members*burst/4) && time.Now().Before(bd) {
				time.Sleep(5 * time.Millisecond)
			}
			// Operation requests published right before the kill: each is
			// delivered before it, or read but not acknowledged (Dapr
			// redelivers it after the restart), or still in the stream.
			request("POST", "ops0/restart")
			request("POST", "ops1/restart")
			request("DELETE", "ops2")
			t.Logf("killing redis-server: %d events accepted by the broker, %d recorded, %d of 3 operation requests handled",
				delivered(), recorded(), srv.Engine.Stats().Requested)
			redis.kill(syscall.SIGKILL)
			killed, killedAt = true, time.Now()
		}
		time.Sleep(50 * time.Millisecond) // pacing of the publishers, not a wait for a result
		if killed && !restarted && time.Since(killedAt) > 1500*time.Millisecond {
			redis = start(t, "redis-server (restarted)", redisBin, redisArgs...)
			waitTCP(t, redisAddr, redis, 20*time.Second)
			restarted = true
			t.Logf("redis-server restarted at seq %d of %d", seq, perMember)
		}
	}
	if !restarted {
		t.Fatal("the stream ended before redis-server was restarted")
	}
	// One more request once the broker is back: the server's subscription
	// to its own topic survived the restart.
	request("DELETE", "ops3")

	// Converge.
	testutil.Eventually(t, 90*time.Second, 100*time.Millisecond, "every event to be recorded", func() error {
		if n := recorded(); n < uint64(total) {
			var queued int
			for _, m := range ms {
				queued += m.rep.Stats().Queued
			}
			return fmt.Errorf("recorded %d of %d events (projection %+v, %d still queued at the publishers)", n, total, srv.Projection.Stats(), queued)
		}
		return nil
	})
	var retries uint64
	for _, m := range ms {
		s := m.rep.Stats()
		if s.Dropped != 0 {
			t.Fatalf("publisher %s/%s dropped %d events", m.cluster, m.node, s.Dropped)
		}
		retries += s.Retries
	}
	if retries == 0 {
		t.Fatal("no publish was retried: the redis outage did not happen mid-stream")
	}
	t.Logf("publishers retried %d times during the outage", retries)
	stats := srv.Projection.Stats()
	t.Logf("projection: %+v (duplicates are redeliveries recognised by id)", stats)
	if stats.Applied+stats.Stale != uint64(total) || stats.Malformed != 0 || stats.UnknownCluster != 0 {
		t.Fatalf("projection %+v: want applied+stale == %d published, nothing malformed or unknown", stats, total)
	}
	// Every published id recorded exactly once, nothing else.
	seen := map[string]int{}
	for after := int64(0); ; {
		evs, err := srv.Store.ListEvents(ctx, store.EventFilter{Namespace: "ns", AfterSeq: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			seen[e.ID]++
		}
		after = evs[len(evs)-1].Seq
	}
	for id := range published {
		if seen[id] != 1 {
			t.Errorf("event %s recorded %d times", id, seen[id])
		}
	}
	if len(seen) != len(published) {
		t.Errorf("store holds %d event ids, %d published", len(seen), len(published))
	}
	// Control plane: every request reached the engine through the
	// sidecars and each operation ran exactly once.
	testutil.Eventually(t, 60*time.Second, 100*time.Millisecond, "every operation request to reach the engine", func() error {
		if s := srv.Engine.Stats(); s.Requested < uint64(len(requested)) {
			return fmt.Errorf("the engine got %+v of %d operation requests", s, len(requested))
		}
		return nil
	})
	for _, id := range requested {
		var op struct {
			Kind, State, Error string
		}
		deadline := time.Now().Add(30 * time.Second)
		for api("GET", "/v1/namespaces/ns/operations/"+id, &op); op.State != store.OpSucceeded; api("GET", "/v1/namespaces/ns/operations/"+id, &op) {
			if op.State == store.OpFailed || time.Now().After(deadline) {
				t.Fatalf("operation %s: %+v, want succeeded", id, op)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, name := range []string{"ops2", "ops3"} {
		if code := api("GET", "/v1/namespaces/ns/clusters/"+name, nil); code != 404 {
			t.Errorf("cluster %s after its delete operation: %d, want 404", name, code)
		}
	}
	// Dapr redelivers an unacknowledged message after processingTimeout
	// (5 s): give a dropped one the time to come back if it were not acked.
	time.Sleep(time.Until(malformedAt.Add(8 * time.Second)))
	es := srv.Engine.Stats()
	t.Logf("engine: %+v (duplicates are redeliveries recognised by id)", es)
	if es.Requested != uint64(len(requested)) || es.Runs != uint64(len(requested)) || es.Malformed != uint64(len(malformed)) {
		t.Fatalf("engine %+v: want %d requests accepted and run once each, %d malformed events dropped once each",
			es, len(requested), len(malformed))
	}

	// Every member at its last event.
	for c := range clusters {
		nodes, err := srv.Store.ListNodes(ctx, fmt.Sprintf("c%d", c))
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) != members {
			t.Fatalf("cluster c%d: %d nodes, want %d", c, len(nodes), members)
		}
		for _, n := range nodes {
			if n.Revision != perMember || n.LagBytes != perMember {
				t.Errorf("cluster c%d %s: revision %d lag %d, want the last event (%d)", c, n.Name, n.Revision, n.LagBytes, perMember)
			}
		}
	}
}
