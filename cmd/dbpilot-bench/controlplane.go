package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/report"
	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

func newControlPlaneCmd() *cobra.Command {
	var (
		clusters, nodes, rounds, readers int
		pending                          int
		window, warmup                   time.Duration
		dir, pprofAddr                   string
	)
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Events ingested/s, API p99 and server RSS with simulated agents (the real publisher, no database)",
		Long: `Starts dbpilot-server serve (embedded default: SQLite, embedded etcd,
embedded bus) as a separate process with N Ready clusters seeded in its
store, then runs one agent/report Reporter with the HTTP transport per
simulated node, posting member_state events to the server's ingest endpoint
(POST /v1/ingest/events, basic auth with the cluster's ingest key) exactly
as provisioned agents do. Each Reporter always has an event waiting, so the
offered load is as high as the server accepts. Meanwhile readers alternate
GET /v1/namespaces/{ns}/clusters and GET /v1/namespaces/{ns}/clusters/{id}.
Per round: events accepted (202: stored and projected) per second, p99 of
the API calls, server RSS at the end of the round.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return benchControlPlane(cmd.Context(), cmd.OutOrStdout(), cpBenchOptions{Clusters: clusters, Nodes: nodes,
				Rounds: rounds, Readers: readers, Pending: pending, Window: window, Warmup: warmup, Dir: dir, PprofAddr: pprofAddr})
		},
	}
	cmd.Flags().IntVar(&clusters, "clusters", 1000, "simulated clusters")
	cmd.Flags().IntVar(&nodes, "nodes", 3, "nodes per cluster")
	cmd.Flags().IntVar(&rounds, "rounds", 3, "measurement rounds")
	cmd.Flags().IntVar(&readers, "readers", 4, "concurrent API readers")
	cmd.Flags().IntVar(&pending, "pending", 8, "events kept waiting per simulated node (queued + in flight); the Reporter sends what is queued in one batch request, so 1 means one event per request")
	cmd.Flags().DurationVar(&window, "window", 10*time.Second, "length of a round")
	cmd.Flags().DurationVar(&warmup, "warmup", 3*time.Second, "load before the first round")
	cmd.Flags().StringVar(&dir, "dir", ".dbpilot/bench-controlplane", "work folder (wiped)")
	cmd.Flags().StringVar(&pprofAddr, "server-pprof", "", "start the server with --pprof-listen ADDR (profile it with go tool pprof http://ADDR/debug/pprof/profile)")
	return cmd
}

type cpBenchOptions struct {
	Clusters, Nodes, Rounds, Readers int
	Pending                          int
	Window, Warmup                   time.Duration
	Dir, PprofAddr                   string
}

type cpRound struct {
	eventsPerS float64
	p99        time.Duration
	rssMB      float64
}

// cpBenchNS is the namespace of the seeded clusters.
const cpBenchNS = "bench"

// benchControlPlane seeds o.Clusters Ready clusters into a fresh store,
// starts dbpilot-server (next to this binary) on it, drives it with
// simulated agents (events) and API readers, and prints o.Rounds rounds
// of o.Window each, then the medians.
func benchControlPlane(ctx context.Context, out io.Writer, o cpBenchOptions) error {
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	seed, err := seedControlPlane(ctx, dir, o)
	if err != nil {
		return err
	}
	srv, base, stopServer, err := startBenchServer(dir, o.PprofAddr)
	if err != nil {
		return err
	}
	defer stopServer()
	fmt.Fprintf(out, "server %s pid %d, %d clusters × %d nodes seeded\n", base, srv.Process.Pid, o.Clusters, o.Nodes)

	rctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopLoad(); wg.Wait() }()
	delivered := simulateAgents(rctx, &wg, base, seed, o)
	lat := readAPI(rctx, &wg, base, seed, o.Readers)

	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.Warmup):
	}
	var rs []cpRound
	for r := range o.Rounds {
		lat.reset()
		d0, q0 := delivered()
		t0 := time.Now()
		c0, _ := cpuTicks(srv.Process.Pid)
		s0, _ := cpuTicks(os.Getpid())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.Window):
		}
		d1, q1 := delivered()
		el := time.Since(t0)
		c1, _ := cpuTicks(srv.Process.Pid)
		s1, _ := cpuTicks(os.Getpid())
		p99, n := lat.p99()
		kb, err := rssKB(srv.Process.Pid)
		if err != nil {
			return err
		}
		x := cpRound{eventsPerS: float64(d1-d0) / el.Seconds(), p99: p99, rssMB: float64(kb) / 1024}
		rs = append(rs, x)
		fmt.Fprintf(out, "round %d: events_per_s=%.0f events_per_request=%.2f api_calls=%d api_p99_ms=%.1f rss_mb=%.0f server_cpu=%.2f cores simulator_cpu=%.2f cores\n",
			r+1, x.eventsPerS, float64(d1-d0)/float64(max(q1-q0, 1)), n, ms(x.p99), x.rssMB, float64(c1-c0)/clockTicks/el.Seconds(), float64(s1-s0)/clockTicks/el.Seconds())
	}
	if e := lat.errs.Load(); e > 0 {
		fmt.Fprintf(out, "api errors: %d\n", e)
	}
	eps := make([]float64, len(rs))
	p99s := make([]float64, len(rs))
	rss := make([]float64, len(rs))
	for i, x := range rs {
		eps[i], p99s[i], rss[i] = x.eventsPerS, ms(x.p99), x.rssMB
	}
	fmt.Fprintf(out, "events_per_s: %s\napi_p99_ms:   %s\nrss_mb:       %s\n", mmm(eps, "%.0f"), mmm(p99s, "%.1f"), mmm(rss, "%.0f"))
	fmt.Fprintf(out, "bench-controlplane: clusters=%d nodes=%d events_per_s=%.0f api_p99_ms=%.1f rss_mb=%.0f\n",
		o.Clusters, o.Clusters*o.Nodes, median(eps), median(p99s), median(rss))
	return nil
}

// cpSeed is what seedControlPlane put into the store.
type cpSeed struct {
	// ids are the cluster ids ("c00000", …); cluster i is named db%05d.
	ids []string
	// secret derives the clusters' ingest keys.
	secret []byte
	// token is a platform admin's bearer token.
	token string
}

// seedControlPlane writes dir/ingest.key and, before the server opens it,
// seeds dir/dbpilot.db with o.Clusters Ready clusters of o.Nodes created
// nodes each (no provisioning runs) and an admin token.
func seedControlPlane(ctx context.Context, dir string, o cpBenchOptions) (cpSeed, error) {
	seed := cpSeed{secret: []byte(strings.Repeat("b", 64)), token: controlplane.NewSecret("dbp_")}
	if err := os.WriteFile(filepath.Join(dir, "ingest.key"), seed.secret, 0o600); err != nil {
		return seed, err
	}
	st, err := store.Open(ctx, filepath.Join(dir, "dbpilot.db"))
	if err != nil {
		return seed, err
	}
	defer st.Close()
	if _, err := st.CreateNamespace(ctx, cpBenchNS); err != nil && !errors.Is(err, store.ErrConflict) {
		return seed, err
	}
	now := time.Now()
	seed.ids = make([]string, o.Clusters)
	for i := range o.Clusters {
		id := fmt.Sprintf("c%05d", i)
		seed.ids[i] = id
		c := store.Cluster{ID: id, Namespace: cpBenchNS, Project: "default", Name: fmt.Sprintf("db%05d", i), Engine: "postgres", Version: "16",
			Template: "postgres-16", Plan: "small", Provider: "process", Replicas: o.Nodes, SynchronousMode: "off",
			Phase: store.PhaseReady, CreatedAt: now, UpdatedAt: now}
		op := store.Operation{ID: "op-" + id, Namespace: cpBenchNS, ClusterID: id, Kind: controlplane.KindCreate, State: store.OpSucceeded, CreatedAt: now, UpdatedAt: now}
		if err := st.CreateCluster(ctx, c, op); err != nil {
			return seed, err
		}
		// The control plane applies events only for nodes it provisioned.
		for n := range o.Nodes {
			if err := st.UpsertNode(ctx, store.Node{ClusterID: id, Name: "node" + strconv.Itoa(n+1), State: store.NodeCreated}); err != nil {
				return seed, err
			}
		}
	}
	return seed, st.CreateToken(ctx, store.Token{ID: "tok-bench", Name: "bench", Hash: controlplane.HashSecret(seed.token),
		Grants: []store.Grant{{Namespace: "*", Role: "admin"}}, CreatedBy: "bench", CreatedAt: now})
}

// startBenchServer starts dbpilot-server (next to this binary) on dir in
// its own process group, with pprof on pprofAddr unless empty, and returns
// it with its API URL and a stop function (SIGTERM to the group, then
// wait). Its log is dir/server.log.
func startBenchServer(dir, pprofAddr string) (srv *exec.Cmd, base string, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", nil, err
	}
	cfgPath := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(cfgPath, []byte("listen: 127.0.0.1:0\ndata_dir: "+dir+"\n"), 0o644); err != nil {
		return nil, "", nil, err
	}
	args := []string{"serve", "--config", cfgPath, "--log-level", "error"}
	if pprofAddr != "" {
		args = append(args, "--pprof-listen", pprofAddr)
	}
	srv = exec.Command(filepath.Join(filepath.Dir(self), "dbpilot-server"), args...)
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := srv.StdoutPipe()
	if err != nil {
		return nil, "", nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, "", nil, err
	}
	srv.Stderr = logf
	if err := srv.Start(); err != nil {
		logf.Close()
		return nil, "", nil, fmt.Errorf("start dbpilot-server (build it next to dbpilot-bench: make build): %w", err)
	}
	stop = func() {
		_ = syscall.Kill(-srv.Process.Pid, syscall.SIGTERM)
		_ = srv.Wait()
		logf.Close()
	}
	base, err = serverURL(stdout, 60*time.Second)
	if err != nil {
		stop()
		return nil, "", nil, fmt.Errorf("dbpilot-server: %w (log: %s)", err, logf.Name())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return srv, base, stop, nil
}

// simulateAgents starts one Reporter per seeded node, posting to base's
// ingest endpoint with its cluster's key, and a feeder that keeps
// o.Pending events waiting (queued or in flight) at every Reporter: an
// agent whose events are produced faster than the server accepts them.
// All run in wg until ctx ends. delivered sums the Reporters' delivered
// events and requests.
func simulateAgents(ctx context.Context, wg *sync.WaitGroup, base string, seed cpSeed, o cpBenchOptions) (delivered func() (events, requests uint64)) {
	log := zap.NewNop()
	type node struct {
		cluster, name string
		rep           *report.Reporter
		rev           int64
	}
	var sims []*node
	for i, id := range seed.ids {
		u, _ := url.Parse(base + "/v1/ingest/events")
		u.User = url.UserPassword(id, controlplane.IngestKey(seed.secret, id))
		for n := range o.Nodes {
			tr := report.NewHTTPTransport(u.String(), 10*time.Second, nil)
			r := report.NewReporter(tr, log, report.WithQueueSize(max(o.Pending, 1)), report.WithBackoff(50*time.Millisecond, time.Second))
			wg.Add(1)
			go func() { defer wg.Done(); r.Run(ctx) }()
			sims = append(sims, &node{cluster: fmt.Sprintf("db%05d", i), name: "node" + strconv.Itoa(n+1), rep: r})
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, n := range sims {
				for k := n.rep.Stats().Queued; k < max(o.Pending, 1); k++ {
					n.rev++
					h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: cpBenchNS, Project: "default", Cluster: n.cluster}, Node: n.name,
						Term: 1, Revision: n.rev, TimestampMS: time.Now().UnixMilli()}
					e, err := proto.NewEnvelope(proto.TypeMemberState, proto.AgentSource(cpBenchNS, n.cluster, n.name), h,
						proto.MemberState{Role: proto.RoleReplica, State: proto.StateRunning, Healthy: true, LagBytes: n.rev % 1000})
					if err == nil {
						n.rep.Publish(e)
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() (events, requests uint64) {
		for _, n := range sims {
			st := n.rep.Stats()
			events += st.Delivered
			requests += st.Requests
		}
		return events, requests
	}
}

// apiLatencies collects the latencies of the API readers' successful
// calls and counts the failed ones.
type apiLatencies struct {
	mu   sync.Mutex
	lats []time.Duration
	errs atomic.Int64
}

func (l *apiLatencies) reset() {
	l.mu.Lock()
	l.lats = l.lats[:0]
	l.mu.Unlock()
}

// p99 returns the 99th percentile since the last reset and the number of
// calls it is taken over.
func (l *apiLatencies) p99() (time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return percentile(l.lats, 0.99), len(l.lats)
}

// readAPI starts readers goroutines (in wg, until ctx ends) that list the
// seeded clusters and get one at random, alternately, as the platform
// admin.
func readAPI(ctx context.Context, wg *sync.WaitGroup, base string, seed cpSeed, readers int) *apiLatencies {
	l := &apiLatencies{}
	hc := &http.Client{Timeout: 10 * time.Second}
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				path := "/v1/namespaces/" + cpBenchNS + "/clusters"
				if i%2 == 1 {
					path += "/" + seed.ids[rand.IntN(len(seed.ids))]
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
				req.Header.Set("Authorization", "Bearer "+seed.token)
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						l.errs.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				d := time.Since(t0)
				if resp.StatusCode != http.StatusOK {
					l.errs.Add(1)
					continue
				}
				l.mu.Lock()
				l.lats = append(l.lats, d)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// serverURL reads "dbpilot-server: API at URL" from the server's stdout.
func serverURL(r io.Reader, timeout time.Duration) (string, error) {
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "dbpilot-server: API at "); ok {
				found <- strings.TrimSpace(u)
				return
			}
		}
		close(found)
	}()
	select {
	case u, ok := <-found:
		if !ok {
			return "", errors.New("exited before printing its API address")
		}
		return u, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no API address after %s", timeout)
	}
}

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*q))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mmm(v []float64, f string) string {
	return fmt.Sprintf("min="+f+" median="+f+" max="+f, slices.Min(v), median(v), slices.Max(v))
}
