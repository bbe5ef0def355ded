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

func benchControlPlane(ctx context.Context, out io.Writer, o cpBenchOptions) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
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
	const ns = "bench"
	// Seed the store before the server opens it: Ready clusters (no
	// provisioning runs), an admin token and the ingest secret.
	secret := []byte(strings.Repeat("b", 64))
	if err := os.WriteFile(filepath.Join(dir, "ingest.key"), secret, 0o600); err != nil {
		return err
	}
	st, err := store.Open(ctx, filepath.Join(dir, "dbpilot.db"))
	if err != nil {
		return err
	}
	if _, err := st.CreateNamespace(ctx, ns); err != nil && !errors.Is(err, store.ErrConflict) {
		st.Close()
		return err
	}
	now := time.Now()
	ids := make([]string, o.Clusters)
	for i := range o.Clusters {
		ids[i] = fmt.Sprintf("c%05d", i)
		c := store.Cluster{ID: ids[i], Namespace: ns, Project: "default", Name: fmt.Sprintf("db%05d", i), Engine: "postgres", Version: "16",
			Template: "postgres-16", Plan: "small", Provider: "process", Replicas: o.Nodes, SynchronousMode: "off",
			Phase: store.PhaseReady, CreatedAt: now, UpdatedAt: now}
		op := store.Operation{ID: "op-" + ids[i], Namespace: ns, ClusterID: ids[i], Kind: controlplane.KindCreate, State: store.OpSucceeded, CreatedAt: now, UpdatedAt: now}
		if err := st.CreateCluster(ctx, c, op); err != nil {
			st.Close()
			return err
		}
		// The control plane applies events only for nodes it provisioned.
		for n := range o.Nodes {
			if err := st.UpsertNode(ctx, store.Node{ClusterID: ids[i], Name: "node" + strconv.Itoa(n+1), State: store.NodeCreated}); err != nil {
				st.Close()
				return err
			}
		}
	}
	token := controlplane.NewSecret("dbp_")
	if err := st.CreateToken(ctx, store.Token{ID: "tok-bench", Name: "bench", Hash: controlplane.HashSecret(token),
		Grants: []store.Grant{{Namespace: "*", Role: "admin"}}, CreatedBy: "bench", CreatedAt: now}); err != nil {
		st.Close()
		return err
	}
	st.Close()

	cfgPath := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(cfgPath, []byte("listen: 127.0.0.1:0\ndata_dir: "+dir+"\n"), 0o644); err != nil {
		return err
	}
	args := []string{"serve", "--config", cfgPath, "--log-level", "error"}
	if o.PprofAddr != "" {
		args = append(args, "--pprof-listen", o.PprofAddr)
	}
	srv := exec.Command(filepath.Join(filepath.Dir(self), "dbpilot-server"), args...)
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := srv.StdoutPipe()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	srv.Stderr = logf
	if err := srv.Start(); err != nil {
		return fmt.Errorf("start dbpilot-server (build it next to dbpilot-bench: make build): %w", err)
	}
	defer func() {
		_ = syscall.Kill(-srv.Process.Pid, syscall.SIGTERM)
		_ = srv.Wait()
	}()
	base, err := serverURL(stdout, 60*time.Second)
	if err != nil {
		return fmt.Errorf("dbpilot-server: %w (log: %s)", err, logf.Name())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	fmt.Fprintf(out, "server %s pid %d, %d clusters × %d nodes seeded\n", base, srv.Process.Pid, o.Clusters, o.Nodes)

	// Simulated agents.
	log := zap.NewNop()
	type node struct {
		cluster, name string
		rep           *report.Reporter
		rev           int64
	}
	var sims []*node
	rctx, stopReporters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopReporters(); wg.Wait() }()
	for i, id := range ids {
		u, _ := url.Parse(base + "/v1/ingest/events")
		u.User = url.UserPassword(id, controlplane.IngestKey(secret, id))
		for n := range o.Nodes {
			tr := report.NewHTTPTransport(u.String(), 10*time.Second, nil)
			r := report.NewReporter(tr, log, report.WithQueueSize(max(o.Pending, 1)), report.WithBackoff(50*time.Millisecond, time.Second))
			wg.Add(1)
			go func() { defer wg.Done(); r.Run(rctx) }()
			sims = append(sims, &node{cluster: fmt.Sprintf("db%05d", i), name: "node" + strconv.Itoa(n+1), rep: r})
		}
	}
	// Feeder: keep o.Pending events waiting (queued or in flight) at
	// every Reporter: an agent whose events are produced faster than the
	// server accepts them.
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, n := range sims {
				for k := n.rep.Stats().Queued; k < max(o.Pending, 1); k++ {
					n.rev++
					h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: ns, Project: "default", Cluster: n.cluster}, Node: n.name,
						Term: 1, Revision: n.rev, TimestampMS: time.Now().UnixMilli()}
					e, err := proto.NewEnvelope(proto.TypeMemberState, proto.AgentSource(ns, n.cluster, n.name), h,
						proto.MemberState{Role: proto.RoleReplica, State: proto.StateRunning, Healthy: true, LagBytes: n.rev % 1000})
					if err == nil {
						n.rep.Publish(e)
					}
				}
			}
			select {
			case <-rctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	delivered := func() (events, requests uint64) {
		for _, n := range sims {
			st := n.rep.Stats()
			events += st.Delivered
			requests += st.Requests
		}
		return events, requests
	}

	// API readers.
	var (
		latMu   sync.Mutex
		lats    []time.Duration
		apiErrs atomic.Int64
	)
	hc := &http.Client{Timeout: 10 * time.Second}
	for range o.Readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; rctx.Err() == nil; i++ {
				path := "/v1/namespaces/" + ns + "/clusters"
				if i%2 == 1 {
					path += "/" + ids[rand.IntN(len(ids))]
				}
				req, _ := http.NewRequestWithContext(rctx, http.MethodGet, base+path, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					if rctx.Err() == nil {
						apiErrs.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				d := time.Since(t0)
				if resp.StatusCode != http.StatusOK {
					apiErrs.Add(1)
					continue
				}
				latMu.Lock()
				lats = append(lats, d)
				latMu.Unlock()
			}
		}()
	}

	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.Warmup):
	}
	var rs []cpRound
	for r := range o.Rounds {
		latMu.Lock()
		lats = lats[:0]
		latMu.Unlock()
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
		latMu.Lock()
		p99, n := percentile(lats, 0.99), len(lats)
		latMu.Unlock()
		kb, err := rssKB(srv.Process.Pid)
		if err != nil {
			return err
		}
		x := cpRound{eventsPerS: float64(d1-d0) / el.Seconds(), p99: p99, rssMB: float64(kb) / 1024}
		rs = append(rs, x)
		fmt.Fprintf(out, "round %d: events_per_s=%.0f events_per_request=%.2f api_calls=%d api_p99_ms=%.1f rss_mb=%.0f server_cpu=%.2f cores simulator_cpu=%.2f cores\n",
			r+1, x.eventsPerS, float64(d1-d0)/float64(max(q1-q0, 1)), n, ms(x.p99), x.rssMB, float64(c1-c0)/clockTicks/el.Seconds(), float64(s1-s0)/clockTicks/el.Seconds())
	}
	if e := apiErrs.Load(); e > 0 {
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
