package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dbpilot/dbpilot/controlplane/server"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/proto"
)

func newAlertsCmd() *cobra.Command {
	var o alertBenchOptions
	cmd := &cobra.Command{
		Use:   "alerts",
		Short: "Alert detection and notification latency, false pages during switchovers, /metrics scrape latency",
		Long: `Runs dbpilot-server (in this process: embedded etcd, SQLite, process
provider, the alert engine on) with one 3-node PostgreSQL cluster of the
shipped postgres-15 template, a signed webhook notification channel pointing
at a receiver in this process, and a scraper reading every agent's /metrics
once a second. Then:

 1. --faults randomised faults (primary host kill, replica host kill, backup
    failure: the cluster's backup repository replaced by a file, then a backup
    requested), each after a random 0-3 s delay so it falls anywhere in the
    agents' heartbeat and lease cycles; after each, the repair reconciler
    brings the node back and the bench waits for every alert to resolve.
    detect_ms: fault → the expected alert firing (its fired_at in the API);
    notify_ms: fault → the webhook receiving that alert's firing notification.
 2. --switchovers planned switchovers under a writer's load; every page
    notified or firing meanwhile is a false page.

scrape_ms_p99 is over every /metrics scrape of the whole run. The last line
is the summary; it exits 1 when a fault's alert never fired or a false page
was seen.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return benchAlerts(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	cmd.Flags().IntVar(&o.Faults, "faults", 12, "randomised faults (at least 10 for the issue's figure)")
	cmd.Flags().IntVar(&o.Switchovers, "switchovers", 10, "planned switchovers in the false-page phase")
	cmd.Flags().Uint64Var(&o.Seed, "seed", 0, "fault plan seed (0: from the clock; printed)")
	cmd.Flags().StringVar(&o.Dir, "dir", ".dbpilot/bench-alerts", "work folder (wiped)")
	cmd.Flags().DurationVar(&o.DetectTimeout, "detect-timeout", 90*time.Second, "how long a fault's alert may take to fire before it counts as missed")
	return cmd
}

type alertBenchOptions struct {
	Faults, Switchovers int
	Seed                uint64
	Dir                 string
	DetectTimeout       time.Duration
}

// Fault kinds of the alert bench and the alert each must raise.
const (
	faultPrimaryKill = "primary_kill"
	faultReplicaKill = "replica_kill"
	faultBackup      = "backup_failure"
)

const (
	alertBenchNS      = "bench"
	alertBenchCluster = "alerts"
	alertBenchSecret  = "bench-webhook-secret"
)

// benchAlert is the part of an alert (API and webhook body) the bench reads.
type benchAlert struct {
	ID       string     `json:"id"`
	Rule     string     `json:"rule"`
	Severity string     `json:"severity"`
	State    string     `json:"state"`
	Cluster  string     `json:"cluster"`
	Node     string     `json:"node"`
	FiredAt  *time.Time `json:"fired_at"`
}

// notification is one webhook delivery the receiver accepted.
type notification struct {
	at    time.Time
	alert benchAlert
	event string // the transition: firing, resolved, repeat
}

// receiver is the webhook endpoint: it checks the HMAC signature and keeps
// what arrived.
type receiver struct {
	mu       sync.Mutex
	got      []notification
	badSig   int
	srv      *httptest.Server
	notified chan struct{}
}

func newReceiver() *receiver {
	r := &receiver{notified: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	at := time.Now()
	if !webhookSignatureOK(req.Header, body) {
		r.mu.Lock()
		r.badSig++
		r.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	n, err := decodeNotification(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n.at = at
	r.mu.Lock()
	r.got = append(r.got, n)
	r.mu.Unlock()
	select {
	case r.notified <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusNoContent)
}

// since returns the notifications received at or after t.
func (r *receiver) since(t time.Time) []notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []notification
	for _, n := range r.got {
		if !n.at.Before(t) {
			out = append(out, n)
		}
	}
	return out
}

// scraper reads every agent's /metrics once a second and keeps the
// latencies.
type scraper struct {
	mu    sync.Mutex
	lat   durations
	fails int
}

func (s *scraper) run(ctx context.Context, targets func() []string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	cl := &http.Client{Timeout: 5 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, addr := range targets() {
			go func() {
				start := time.Now()
				resp, err := cl.Get("http://" + addr + "/metrics")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				d := time.Since(start)
				s.mu.Lock()
				defer s.mu.Unlock()
				if err != nil {
					s.fails++ // a killed node's agent: not a latency
					return
				}
				s.lat = append(s.lat, d)
			}()
		}
	}
}

// api is a tiny JSON client of the server's REST API.
type api struct {
	base, token string
}

func (a api) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	if out != nil && len(raw) > 0 {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func (a api) cluster(ctx context.Context) (proto.Cluster, error) {
	var c proto.Cluster
	err := a.do(ctx, "GET", "/v1/namespaces/"+alertBenchNS+"/clusters/"+alertBenchCluster, nil, &c)
	return c, err
}

func (a api) alerts(ctx context.Context, query string) ([]benchAlert, error) {
	var page struct {
		Items []benchAlert `json:"items"`
	}
	err := a.do(ctx, "GET", "/v1/namespaces/"+alertBenchNS+"/alerts?"+query, nil, &page)
	return page.Items, err
}

func (a api) waitOp(ctx context.Context, id string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var op proto.Operation
		if err := a.do(ctx, "GET", "/v1/namespaces/"+alertBenchNS+"/operations/"+id, nil, &op); err != nil {
			return err
		}
		switch op.State {
		case store.OpSucceeded:
			return nil
		case store.OpFailed:
			return fmt.Errorf("operation %s (%s) failed: %s", id, op.Kind, op.Error)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("operation %s (%s) still %s after %s", id, op.Kind, op.State, timeout)
		}
		if err := sleepOrDone(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleepOrDone(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// waitFor polls cond every 200 ms until it returns nil or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %s: %w", what, timeout, err)
		}
		if err := sleepOrDone(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

type faultResult struct {
	kind, node, rule string
	detect, notify   time.Duration
	notified         bool
	err              error
}

func benchAlerts(ctx context.Context, out io.Writer, o alertBenchOptions) error {
	if o.Faults < 1 || o.Switchovers < 0 {
		return errors.New("--faults must be >= 1 and --switchovers >= 0")
	}
	seed := o.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(seed, 0x616c65727473))
	self, err := os.Executable()
	if err != nil {
		return err
	}
	agentBin := filepath.Join(filepath.Dir(self), "dbpilot-agent")
	if _, err := os.Stat(agentBin); err != nil {
		return fmt.Errorf("dbpilot-agent must be built next to dbpilot-bench (make build): %w", err)
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	for _, pid := range infra.ProcessesUsing(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// PostgreSQL's OS user runs the agent binary as archive_command.
	_ = os.Chmod(dir, 0o755)
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logf), zapcore.InfoLevel))
	repairEvery := 2 * time.Second
	s, err := server.Start(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", AgentBin: agentBin,
		ReadyTimeout: 3 * time.Minute, RepairInterval: &repairEvery}, log)
	if err != nil {
		return fmt.Errorf("start dbpilot-server: %w (log: %s)", err, logf.Name())
	}
	defer func() {
		s.Close()
		for _, pid := range infra.ProcessesUsing(dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	if _, err := s.Store.CreateNamespace(ctx, alertBenchNS); err != nil {
		return err
	}
	tok, err := s.CreateToken(ctx, "bench-admin", store.Grant{Namespace: "*", Role: "admin"})
	if err != nil {
		return err
	}
	a := api{base: s.URL, token: tok}
	rcv := newReceiver()
	defer rcv.srv.Close()
	if err := a.do(ctx, "POST", "/v1/namespaces/"+alertBenchNS+"/notification-channels", map[string]any{
		"name": "bench", "kind": "webhook", "url": rcv.srv.URL, "secret": alertBenchSecret,
	}, nil); err != nil {
		return fmt.Errorf("create the webhook channel: %w", err)
	}
	fmt.Fprintf(out, "bench-alerts: seed=%d faults=%d switchovers=%d dir=%s\n", seed, o.Faults, o.Switchovers, dir)

	var created proto.Operation
	if err := a.do(ctx, "POST", "/v1/namespaces/"+alertBenchNS+"/clusters", map[string]any{
		"name": alertBenchCluster, "replicas": 3, "template": "postgres-15",
	}, &created); err != nil {
		return err
	}
	t0 := time.Now()
	if err := a.waitOp(ctx, created.ID, 4*time.Minute); err != nil {
		return err
	}
	c, err := a.cluster(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "bench-alerts: cluster %s Ready in %s\n", c.ID, time.Since(t0).Round(100*time.Millisecond))
	handles := func() map[string]infra.ProcessHandle {
		nodes, err := s.Store.ListNodes(ctx, c.ID)
		out := map[string]infra.ProcessHandle{}
		if err != nil {
			return out
		}
		for _, n := range nodes {
			var h infra.ProcessHandle
			if json.Unmarshal(n.Handle, &h) == nil {
				out[n.Name] = h
			}
		}
		return out
	}
	scr := &scraper{}
	sctx, stopScrape := context.WithCancel(ctx)
	defer stopScrape()
	go scr.run(sctx, func() []string {
		var t []string
		for _, h := range handles() {
			t = append(t, fmt.Sprintf("127.0.0.1:%d", h.HTTPPort))
		}
		return t
	})
	if err := waitQuiet(ctx, a, 3*time.Minute); err != nil {
		return fmt.Errorf("before the first fault: %w", err)
	}

	// 1. Faults: a shuffled plan with every kind in equal shares.
	kinds := []string{faultPrimaryKill, faultReplicaKill, faultBackup}
	plan := make([]string, o.Faults)
	for i := range plan {
		plan[i] = kinds[i%len(kinds)]
	}
	rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	var results []faultResult
	for i, kind := range plan {
		delay := time.Duration(rng.Int64N(int64(3 * time.Second)))
		if err := sleepOrDone(ctx, delay); err != nil {
			return err
		}
		r := oneAlertFault(ctx, a, s, rcv, handles, kind, o.DetectTimeout)
		results = append(results, r)
		status := "ok"
		if r.err != nil {
			status = "MISSED: " + r.err.Error()
		}
		fmt.Fprintf(out, "fault %2d/%d %-14s node=%-8s rule=%-22s detect_ms=%6d notify_ms=%6d %s\n", i+1, len(plan), kind, r.node,
			orDash(r.rule), r.detect.Milliseconds(), r.notify.Milliseconds(), status)
		if err := waitQuiet(ctx, a, 4*time.Minute); err != nil {
			return fmt.Errorf("after fault %d (%s): %w", i+1, kind, err)
		}
	}

	// 2. Planned switchovers under load: no page may go out.
	falseStart := time.Now()
	lctx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan int)
	go func() { loadDone <- writeLoad(lctx, s, c.ID, handles) }()
	var swErr error
	for i := 0; i < o.Switchovers && swErr == nil; i++ {
		var op proto.Operation
		if swErr = a.do(ctx, "POST", "/v1/namespaces/"+alertBenchNS+"/clusters/"+alertBenchCluster+"/switchover", map[string]any{"reason": "bench-alerts"}, &op); swErr == nil {
			swErr = a.waitOp(ctx, op.ID, 2*time.Minute)
		}
		if swErr == nil {
			swErr = sleepOrDone(ctx, time.Duration(2000+rng.Int64N(2000))*time.Millisecond)
		}
	}
	// Pages raised by the last switchover would show within their rules'
	// pending windows: keep watching that long.
	if swErr == nil {
		swErr = sleepOrDone(ctx, 20*time.Second)
	}
	stopLoad()
	writes := <-loadDone
	if swErr != nil {
		return fmt.Errorf("switchover phase: %w", swErr)
	}
	falsePages := 0
	for _, n := range rcv.since(falseStart) {
		if n.alert.Severity == "page" {
			falsePages++
			fmt.Fprintf(out, "false page: %s %s %s at %s\n", n.alert.Rule, n.alert.Node, n.event, n.at.Format(time.RFC3339Nano))
		}
	}
	fired, err := a.alerts(ctx, "severity=page")
	if err != nil {
		return err
	}
	for _, al := range fired {
		if al.FiredAt != nil && al.FiredAt.After(falseStart) {
			falsePages++
			fmt.Fprintf(out, "false page (API): %s %s fired at %s\n", al.Rule, al.Node, al.FiredAt.Format(time.RFC3339Nano))
		}
	}
	fmt.Fprintf(out, "switchovers: %d under load (%d writes committed)\n", o.Switchovers, writes)
	stopScrape()

	var detect, notify durations
	missed := 0
	byKind := map[string]durations{}
	for _, r := range results {
		if r.err != nil {
			missed++
			continue
		}
		detect = append(detect, r.detect)
		byKind[r.kind] = append(byKind[r.kind], r.detect)
		if r.notified {
			notify = append(notify, r.notify)
		}
	}
	for _, k := range kinds {
		fmt.Fprintf(out, "detect %-14s %s\n", k, byKind[k].summary())
	}
	fmt.Fprintf(out, "detect all            %s\nnotify all            %s\n", detect.summary(), notify.summary())
	scr.mu.Lock()
	scrapes := slicesClone(scr.lat)
	fails := scr.fails
	scr.mu.Unlock()
	fmt.Fprintf(out, "scrapes: %s (%d failed: nodes down)\n", scrapes.summary(), fails)
	rcv.mu.Lock()
	if rcv.badSig > 0 {
		fmt.Fprintf(out, "webhook: %d deliveries with a bad signature\n", rcv.badSig)
	}
	rcv.mu.Unlock()
	fmt.Fprintf(out, "bench-alerts: faults=%d detect_ms_p50=%d notify_ms_p50=%d false_pages=%d scrape_ms_p99=%.1f\n",
		len(results), detect.median().Milliseconds(), notify.median().Milliseconds(), falsePages, ms(percentile(scrapes, 0.99)))
	if missed > 0 || falsePages > 0 {
		return exitCode(1)
	}
	return nil
}

func slicesClone(d durations) durations { return append(durations(nil), d...) }

// expectedRule is the alert a fault must raise: a lost host is a silent
// agent (page), a failed backup run a ticket.
func expectedRule(kind string) (rule, severity string) {
	switch kind {
	case faultBackup:
		return "backup_failed", "ticket"
	default:
		return "agent_silent", "page"
	}
}

// oneAlertFault injects one fault and measures fault → alert firing (the
// alert's fired_at) and fault → webhook notification.
func oneAlertFault(ctx context.Context, a api, s *server.Server, rcv *receiver, handles func() map[string]infra.ProcessHandle,
	kind string, timeout time.Duration) (r faultResult) {
	r.kind = kind
	c, err := a.cluster(ctx)
	if err != nil {
		r.err = err
		return r
	}
	wantRule, _ := expectedRule(kind)
	var t0 time.Time
	switch kind {
	case faultPrimaryKill, faultReplicaKill:
		for _, m := range c.Members {
			if (kind == faultPrimaryKill) == (m.Name == c.Primary) {
				r.node = m.Name
				break
			}
		}
		h := handles()[r.node]
		if r.node == "" || h.PID == 0 {
			r.err = fmt.Errorf("no %s to kill in %+v", kind, c.Members)
			return r
		}
		t0 = time.Now()
		if err := syscall.Kill(-h.PID, syscall.SIGKILL); err != nil {
			r.err = fmt.Errorf("kill -9 -%d: %w", h.PID, err)
			return r
		}
	case faultBackup:
		r.node = c.Primary
		repo := s.Process.BackupRepository(c.ID)
		aside := repo + ".aside"
		if err := os.Rename(repo, aside); err != nil {
			r.err = fmt.Errorf("move the backup repository aside: %w", err)
			return r
		}
		if err := os.WriteFile(repo, []byte("not a directory\n"), 0o644); err != nil {
			r.err = err
			return r
		}
		defer func() {
			_ = os.Remove(repo)
			_ = os.Rename(aside, repo)
		}()
		t0 = time.Now()
		var op proto.Operation
		if err := a.do(ctx, "POST", "/v1/namespaces/"+alertBenchNS+"/clusters/"+alertBenchCluster+"/backups", map[string]any{}, &op); err != nil {
			r.err = err
			return r
		}
		// The operation fails with the backup; the alert is what we time.
		go func() { _ = a.waitOp(ctx, op.ID, 3*time.Minute) }()
	}
	err = waitFor(ctx, timeout, "alert "+wantRule+" firing for "+r.node, func() error {
		al, err := a.alerts(ctx, "state=firing&cluster="+alertBenchCluster)
		if err != nil {
			return err
		}
		for _, x := range al {
			if x.Rule == wantRule && (x.Node == "" || x.Node == r.node) && x.FiredAt != nil && !x.FiredAt.Before(t0) {
				r.rule, r.detect = x.Rule, x.FiredAt.Sub(t0)
				return nil
			}
		}
		return fmt.Errorf("%d firing alerts, none %s", len(al), wantRule)
	})
	if err != nil {
		r.err = err
		return r
	}
	_ = waitFor(ctx, 30*time.Second, "webhook notification", func() error {
		for _, n := range rcv.since(t0) {
			if n.alert.Rule == wantRule && n.event == "firing" {
				r.notify, r.notified = n.at.Sub(t0), true
				return nil
			}
		}
		return errors.New("not yet")
	})
	return r
}

// waitQuiet waits until the cluster is Ready with every member healthy and
// no alert is firing (info alerts such as failover_happened resolve on
// their own).
func waitQuiet(ctx context.Context, a api, timeout time.Duration) error {
	return waitFor(ctx, timeout, "cluster Ready and no alert firing", func() error {
		c, err := a.cluster(ctx)
		if err != nil {
			return err
		}
		if c.Phase != store.PhaseReady || len(c.Members) != 3 {
			return fmt.Errorf("phase %s (%s), %d members", c.Phase, c.Reason, len(c.Members))
		}
		for _, m := range c.Members {
			if !m.Healthy || m.State != proto.StateRunning {
				return fmt.Errorf("member %s %s healthy=%v", m.Name, m.State, m.Healthy)
			}
		}
		al, err := a.alerts(ctx, "state=firing&cluster="+alertBenchCluster)
		if err != nil {
			return err
		}
		var names []string
		for _, x := range al {
			if x.Severity != "info" {
				names = append(names, x.Rule+"/"+x.Node)
			}
		}
		if len(names) > 0 {
			return fmt.Errorf("firing: %s", strings.Join(names, ", "))
		}
		return nil
	})
}

// writeLoad inserts rows on the current primary until ctx ends and returns
// how many committed; it follows the primary through the switchovers.
func writeLoad(ctx context.Context, s *server.Server, clusterID string, handles func() map[string]infra.ProcessHandle) int {
	user, pw, err := s.Process.ReadSuperuser(clusterID)
	if err != nil {
		return 0
	}
	n := 0
	for ctx.Err() == nil {
		for _, h := range handles() {
			if ctx.Err() != nil {
				break
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			conn, err := pgx.Connect(cctx, fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/postgres?sslmode=disable&target_session_attrs=read-write", user, pw, h.PGPort))
			cancel()
			if err != nil {
				continue
			}
			_, err = conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS bench_alerts_load (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
			for err == nil && ctx.Err() == nil {
				if _, err = conn.Exec(ctx, "INSERT INTO bench_alerts_load DEFAULT VALUES"); err == nil {
					n++
				}
				time.Sleep(20 * time.Millisecond)
			}
			conn.Close(context.Background())
		}
		_ = sleepOrDone(ctx, 100*time.Millisecond)
	}
	return n
}

// webhookSignatureOK checks the X-Dbpilot-Signature header: "sha256=" and
// the hex HMAC-SHA256, keyed with the channel's secret, of the timestamp
// header, a '.', and the body.
func webhookSignatureOK(h http.Header, body []byte) bool {
	sig, ok := strings.CutPrefix(h.Get("X-Dbpilot-Signature"), "sha256=")
	if !ok {
		return false
	}
	want, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(alertBenchSecret))
	mac.Write([]byte(h.Get("X-Dbpilot-Timestamp")))
	mac.Write([]byte("."))
	mac.Write(body)
	return hmac.Equal(mac.Sum(nil), want)
}

// decodeNotification reads a webhook body: the transition and its alert.
func decodeNotification(body []byte) (notification, error) {
	var m struct {
		Transition string     `json:"transition"`
		Alert      benchAlert `json:"alert"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return notification{}, err
	}
	return notification{event: m.Transition, alert: m.Alert}, nil
}
