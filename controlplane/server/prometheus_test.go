package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metricsql"
	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/internal/localhost"
	"github.com/dbpilot/dbpilot/internal/testutil"
	"github.com/dbpilot/dbpilot/proto"
	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// getTargets reads GET /v1/prometheus/targets with token and checks the
// answer is what Prometheus's HTTP SD accepts: 200, application/json, a
// JSON array (not null).
func getTargets(t *testing.T, base, token string) []proto.PrometheusTargetGroup {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/prometheus/targets", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("targets: %d %s", resp.StatusCode, raw)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("targets Content-Type %q, want application/json", ct)
	}
	if !strings.HasPrefix(strings.TrimSpace(string(raw)), "[") {
		t.Fatalf("targets body %q is not a JSON array", raw)
	}
	var out []proto.PrometheusTargetGroup
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("targets body %q: %v", raw, err)
	}
	return out
}

// targetClusters returns "namespace/cluster/node@target" of each group,
// and fails on a group that does not have one target and every label.
func targetClusters(t *testing.T, gs []proto.PrometheusTargetGroup) []string {
	t.Helper()
	var out []string
	for _, g := range gs {
		if len(g.Targets) != 1 {
			t.Errorf("group %+v: want one target", g)
			continue
		}
		for _, k := range []string{"namespace", "project", "cluster", "node", "role", "engine", "template"} {
			if g.Labels[k] == "" {
				t.Errorf("group %+v: no label %s", g, k)
			}
		}
		out = append(out, fmt.Sprintf("%s/%s/%s@%s", g.Labels["namespace"], g.Labels["cluster"], g.Labels["node"], g.Targets[0]))
	}
	return out
}

// TestPrometheusTargetsAccess: the metrics role opens the Prometheus
// targets (and whoami) and nothing else; the targets list only the
// namespaces a token may scrape (metrics, or viewer and above; "*" all);
// beside a ranked grant a metrics grant opens nothing more.
func TestPrometheusTargetsAccess(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	ctx := context.Background()

	// Before any cluster: an empty array, not null.
	if gs := getTargets(t, s.URL, admin.token); len(gs) != 0 {
		t.Fatalf("targets with no cluster: %+v", gs)
	}

	ports := map[string]int{"tenant-a": 30001, "tenant-b": 30002}
	for ns, port := range ports {
		if _, err := s.Store.CreateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		id := "c-" + ns[len(ns)-1:]
		seedCluster(t, s.Store, id, ns, "db-"+ns[len(ns)-1:])
		// A process handle with only a port: no agent runs, the
		// repair reconciler leaves it alone (no config), and the
		// address comes from the handle.
		h, _ := json.Marshal(map[string]any{"http_port": port})
		if err := s.Store.UpsertNode(ctx, store.Node{ClusterID: id, Name: "node1", State: "created", Handle: h}); err != nil {
			t.Fatal(err)
		}
	}
	wantA := "tenant-a/db-a/node1@127.0.0.1:30001"
	wantB := "tenant-b/db-b/node1@127.0.0.1:30002"

	tok := func(name string, gs ...store.Grant) client {
		secret, err := s.CreateToken(ctx, name, gs...)
		if err != nil {
			t.Fatal(err)
		}
		return client{t: t, base: s.URL, token: secret}
	}
	metricsA := tok("prom-a", store.Grant{Namespace: "tenant-a", Role: "metrics"})
	metricsAll := tok("prom-all", store.Grant{Namespace: "*", Role: "metrics"})
	viewerB := tok("viewer-b", store.Grant{Namespace: "tenant-b", Role: "viewer"})
	mixed := tok("ops-a-prom-b", store.Grant{Namespace: "tenant-a", Role: "operator"}, store.Grant{Namespace: "tenant-b", Role: "metrics"})

	for _, tc := range []struct {
		name string
		c    client
		want []string
	}{
		{"metrics on tenant-a", metricsA, []string{wantA}},
		{"metrics on *", metricsAll, []string{wantA, wantB}},
		{"viewer of tenant-b", viewerB, []string{wantB}},
		{"operator of a, metrics on b", mixed, []string{wantA, wantB}},
		{"platform admin", admin, []string{wantA, wantB}},
	} {
		got := targetClusters(t, getTargets(t, s.URL, tc.c.token))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: targets %v, want %v", tc.name, got, tc.want)
		}
	}
	gs := getTargets(t, s.URL, metricsA.token)
	want := map[string]string{"namespace": "tenant-a", "project": "default", "cluster": "db-a", "node": "node1",
		"role": "unknown", "engine": "postgres", "template": "postgres-15"}
	if len(gs) != 1 || !maps.Equal(gs[0].Labels, want) {
		t.Errorf("metrics-a labels %+v, want %v", gs, want)
	}

	// The address comes from the agent's member key (its api_url) when
	// etcd has one; once the key is gone (agent down, lease expired) the
	// address last read stays, so Prometheus sees the target down rather
	// than gone.
	memberKey := keyspace.NewKeys("tenant-a", "default", "db-a").Member("node1")
	doc, _ := json.Marshal(keyspace.Member{Node: "node1", Role: "primary", State: "running", Healthy: true, APIURL: "http://127.0.0.9:8123", UpdatedMS: 1})
	if _, err := s.Etcd.Raw().Put(ctx, memberKey, string(doc)); err != nil {
		t.Fatal(err)
	}
	if got := targetClusters(t, getTargets(t, s.URL, metricsA.token)); !slices.Equal(got, []string{"tenant-a/db-a/node1@127.0.0.9:8123"}) {
		t.Errorf("targets with a member key: %v, want its api_url", got)
	}
	if gs := getTargets(t, s.URL, metricsA.token); len(gs) != 1 || gs[0].Labels["role"] != "primary" {
		t.Errorf("role label with the member key saying primary: %+v", gs)
	}
	if _, err := s.Etcd.Raw().Delete(ctx, memberKey); err != nil {
		t.Fatal(err)
	}
	if got := targetClusters(t, getTargets(t, s.URL, metricsA.token)); !slices.Equal(got, []string{"tenant-a/db-a/node1@127.0.0.9:8123"}) {
		t.Errorf("targets after the member key is gone: %v, want the last api_url", got)
	}

	// whoami shows the metrics grant.
	var who proto.WhoAmI
	if code := metricsA.do("GET", "/v1/whoami", nil, &who); code != 200 || len(who.Grants) != 1 || who.Grants[0].Role != "metrics" {
		t.Errorf("whoami of a metrics token: %d %+v", code, who)
	}

	// Everything else is 403 for a metrics-only token, in both tenants,
	// whether the namespace exists or not.
	target := map[string]map[string]string{
		"tenant-a": {"{c}": "db-a", "{op}": "op-c-a"},
		"tenant-b": {"{c}": "db-b", "{op}": "op-c-b"},
		"nowhere":  {"{c}": "db-x", "{op}": "op-x"},
	}
	for _, c := range []client{metricsA, metricsAll} {
		for ns, m := range target {
			for _, ep := range matrix {
				path := fill(ep.path, ns, m)
				var e apiErr
				if code := c.do(ep.method, path, bodyOf(ep.body), &e); code != 403 || e.Code != "forbidden" {
					t.Errorf("metrics token %s %s: %d %+v, want 403", ep.method, path, code, e)
				}
			}
		}
		for _, g := range []struct{ method, path, body string }{
			{"GET", "/v1/namespaces", ""}, {"GET", "/v1/tokens", ""}, {"GET", "/v1/audit", ""}, {"GET", "/v1/infra/hosts", ""},
			{"POST", "/v1/namespaces", `{"name":"z"}`}, {"POST", "/v1/infra/join-tokens", `{}`},
			{"GET", "/v1/catalog/templates", ""}, {"GET", "/v1/catalog/templates/postgres-15", ""},
			{"POST", "/v1/tokens", `{"name":"x","grants":[{"namespace":"tenant-a","role":"metrics"}]}`},
			{"DELETE", "/v1/tokens/tok-nope", ""},
		} {
			if code := c.do(g.method, g.path, bodyOf(g.body), nil); code != 403 {
				t.Errorf("metrics token %s %s: %d, want 403", g.method, g.path, code)
			}
		}
	}

	// Beside a ranked grant, the metrics grant opens nothing more: the
	// operator of tenant-a operates it and cannot read tenant-b.
	if code := mixed.do("GET", "/v1/namespaces/tenant-a/clusters/db-a", nil, nil); code != 200 {
		t.Errorf("operator of tenant-a reading db-a: %d", code)
	}
	for _, p := range []string{"/v1/namespaces/tenant-b", "/v1/namespaces/tenant-b/clusters/db-b", "/v1/namespaces/tenant-b/events"} {
		if code := mixed.do("GET", p, nil, nil); code != 404 {
			t.Errorf("metrics grant on tenant-b opened GET %s: %d, want 404", p, code)
		}
	}
	var nsl struct {
		Items []struct{ Name string } `json:"items"`
	}
	mixed.do("GET", "/v1/namespaces", nil, &nsl)
	if len(nsl.Items) != 1 || nsl.Items[0].Name != "tenant-a" {
		t.Errorf("operator of a, metrics on b, lists namespaces %+v, want tenant-a only", nsl.Items)
	}

	// Granting metrics: a tenant admin may grant it on its namespace, not
	// elsewhere; unknown roles are refused naming the field.
	adminA := tok("admin-a", store.Grant{Namespace: "tenant-a", Role: "admin"})
	if code := adminA.do("POST", "/v1/tokens", `{"name":"p","grants":[{"namespace":"tenant-a","role":"metrics"}]}`, nil); code != 201 {
		t.Errorf("tenant admin granting metrics: %d, want 201", code)
	}
	if code := adminA.do("POST", "/v1/tokens", `{"name":"p","grants":[{"namespace":"*","role":"metrics"}]}`, nil); code != 403 {
		t.Errorf("tenant admin granting *=metrics: %d, want 403", code)
	}
	var e apiErr
	if code := admin.do("POST", "/v1/tokens", `{"name":"p","grants":[{"namespace":"tenant-a","role":"scraper"}]}`, &e); code != 400 || e.Field != "grants[0].role" {
		t.Errorf("unknown role: %d %+v", code, e)
	}
}

// Paths of the deployment files the Prometheus tests read, relative to
// this package.
const (
	promConfigFile = "../../deploy/prometheus/prometheus.yml"
	promRulesFile  = "../../deploy/prometheus/dbpilot.rules.yml"
	grafanaDir     = "../../deploy/grafana"
	metricsDoc     = "../../docs/metrics.md"
)

// grafanaVars replaces a dashboard's template variables in a query with
// values that make it plain PromQL: the interval variables by a duration,
// the others (inside label matchers) by the test cluster's values.
func grafanaVars(expr string, vars map[string]string) string {
	pairs := []string{"$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h"}
	for k, v := range vars {
		pairs = append(pairs, "${"+k+"}", v, "$"+k, v)
	}
	return strings.NewReplacer(pairs...).Replace(expr)
}

// labelValuesArg returns the series selector of a Grafana variable query
// label_values(SELECTOR, LABEL), or the query itself when it is not one.
func labelValuesArg(q string) string {
	inner, ok := strings.CutPrefix(strings.TrimSpace(q), "label_values(")
	if !ok {
		return q
	}
	inner = strings.TrimSuffix(strings.TrimSpace(inner), ")")
	if i := strings.LastIndex(inner, ","); i >= 0 {
		return strings.TrimSpace(inner[:i])
	}
	return inner
}

// promqlMetricNames returns the metric names a PromQL expression selects,
// sorted: every vector selector's name (its __name__ equality matcher).
// Errors: the expression does not parse.
func promqlMetricNames(expr string) ([]string, error) {
	e, err := metricsql.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", expr, err)
	}
	var out []string
	metricsql.VisitAll(e, func(x metricsql.Expr) {
		me, ok := x.(*metricsql.MetricExpr)
		if !ok {
			return
		}
		for _, lfs := range me.LabelFilterss {
			for _, lf := range lfs {
				if lf.Label == "__name__" && !lf.IsRegexp && !lf.IsNegative {
					out = append(out, lf.Value)
				}
			}
		}
	})
	slices.Sort(out)
	return slices.Compact(out), nil
}

// TestPromQLMetricNames: the extraction the dashboard and rule checks rely
// on finds every selector's name and nothing else (functions, label
// names, label values, keywords, durations, numbers).
func TestPromQLMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up{job="dbpilot"} == 0`, []string{"up"}},
		{`count by (namespace, cluster) (up) unless on (namespace, cluster) count by (namespace) (dbpilot_role{role="primary"} == 1 and on (instance, job) pg_replication_is_replica == 0)`,
			[]string{"dbpilot_role", "pg_replication_is_replica", "up"}},
		{`increase(pg_stat_archiver_failed_count[5m]) > 0 and on (instance) increase(pg_stat_archiver_archived_count[5m] offset 1m) == 0`,
			[]string{"pg_stat_archiver_archived_count", "pg_stat_archiver_failed_count"}},
		{`topk(10, sum by (queryid, user) (rate(pg_stat_statements_seconds_total{cluster=~"x", datname!="rate"}[1m])))`, []string{"pg_stat_statements_seconds_total"}},
		{`dbpilot_lag_bytes > 64 * 1024 * 1024`, []string{"dbpilot_lag_bytes"}},
		{`max_over_time(dbpilot_term[1h] offset 5m) or vector(0)`, []string{"dbpilot_term"}},
		{`time() - pg_stat_wal_receiver_last_msg_receipt_time`, []string{"pg_stat_wal_receiver_last_msg_receipt_time"}},
		{`{__name__="pg_up", node="n1"}`, []string{"pg_up"}},
	} {
		got, err := promqlMetricNames(tc.expr)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("promqlMetricNames(%q) = %v, %v; want %v", tc.expr, got, err, tc.want)
		}
	}
	if _, err := promqlMetricNames(`sum(up`); err == nil {
		t.Error("promqlMetricNames of a broken expression: no error")
	}
	if got := grafanaVars(`rate(x{cluster=~"$cluster", ns="${namespace}"}[$__rate_interval])`, map[string]string{"cluster": "c", "namespace": "n"}); got != `rate(x{cluster=~"c", ns="n"}[1m])` {
		t.Errorf("grafanaVars: %s", got)
	}
	if got := labelValuesArg(`label_values(up{job="dbpilot", namespace=~"$namespace"}, cluster)`); got != `up{job="dbpilot", namespace=~"$namespace"}` {
		t.Errorf("labelValuesArg: %s", got)
	}
}

// deployQueries returns every PromQL query of the alerting rules and the
// Grafana dashboards (panels, rows' panels and variable queries), each
// with where it comes from, Grafana variables replaced with vars.
func deployQueries(t *testing.T, vars map[string]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, err := os.ReadFile(promRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out["rule "+r.Alert] = r.Expr
		}
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	files, _ := filepath.Glob(filepath.Join(grafanaDir, "*.json"))
	if len(files) < 4 {
		t.Fatalf("%d dashboards in %s, want 4", len(files), grafanaDir)
	}
	for _, f := range files {
		var d struct {
			Panels     []json.RawMessage `json:"panels"`
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		base := filepath.Base(f)
		hasCluster := false
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			hasCluster = hasCluster || v.Name == "cluster"
			q, _ := v.Query.(string)
			if m, ok := v.Query.(map[string]any); ok {
				q, _ = m["query"].(string)
			}
			out[base+" variable "+v.Name] = grafanaVars(labelValuesArg(q), vars)
		}
		if !hasCluster {
			t.Errorf("%s: no cluster variable", base)
		}
		var walk func(raw []json.RawMessage)
		walk = func(raw []json.RawMessage) {
			for _, r := range raw {
				var p panel
				if err := json.Unmarshal(r, &p); err != nil {
					t.Fatalf("%s: %v", base, err)
				}
				for _, tg := range p.Targets {
					out[base+" panel "+p.Title+" "+tg.RefID] = grafanaVars(tg.Expr, vars)
				}
				walk(p.Panels)
			}
		}
		walk(d.Panels)
	}
	return out
}

// documentedMetrics returns the metric names docs/metrics.md's tables
// list.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "| `")
		if !ok {
			continue
		}
		if name, _, ok := strings.Cut(rest, "`"); ok {
			out = append(out, name)
		}
	}
	return out
}

// promAPI is a client of a Prometheus server's HTTP API.
type promAPI struct{ base string }

// get decodes the data member of GET path's answer into out; errors: the
// request failed or Prometheus answered an error.
func (p promAPI) get(path string, q url.Values, out any) error {
	resp, err := http.Get(p.base + path + "?" + q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("%s: %d: %w", path, resp.StatusCode, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s %s: %s", path, q.Encode(), env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

// promSample is one element of an instant vector.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

// query runs an instant query and returns its vector.
func (p promAPI) query(q string) ([]promSample, error) {
	var data struct {
		ResultType string       `json:"resultType"`
		Result     []promSample `json:"result"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {q}}, &data); err != nil {
		return nil, err
	}
	return data.Result, nil
}

// startPrometheus runs a real Prometheus with the example configuration
// of deploy/prometheus, changed only where a test must: scrape and rule
// evaluation every second, target discovery from sdURL every second with
// the token in a file, the rule file by absolute path, no Alertmanager.
// It is stopped when the test ends.
func startPrometheus(t *testing.T, sdURL, token string) promAPI {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: run deploy/dev/install-deps.sh --test (Debian's prometheus package)")
	}
	dir := t.TempDir()
	var cfg map[string]any
	b, err := os.ReadFile(promConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rules, err := filepath.Abs(promRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"}
	cfg["rule_files"] = []any{rules}
	delete(cfg, "alerting")
	job := cfg["scrape_configs"].([]any)[0].(map[string]any)
	job["scrape_timeout"] = "1s"
	sd := job["http_sd_configs"].([]any)[0].(map[string]any)
	sd["url"], sd["refresh_interval"] = sdURL, "1s"
	sd["authorization"].(map[string]any)["credentials_file"] = tokenFile
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, out, 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := localhost.FreePort("")
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--log.level=info")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("--- prometheus log (tail)\n%s\n--- configuration\n%s", b, out)
		}
	})
	p := promAPI{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	testutil.Eventually(t, 30*time.Second, 200*time.Millisecond, "prometheus ready", func() error {
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("ready: %d", resp.StatusCode)
		}
		return nil
	})
	return p
}

// TestPrometheusScrapesAgents: a real Prometheus, configured from
// deploy/prometheus/prometheus.yml with a metrics-role token, discovers
// the agents of a real two-node cluster through dbpilot-server and
// scrapes them: both targets up with the labels namespace, project,
// cluster, node, role (the primary's "primary"), engine and template; the
// documented metrics present; dbpilot_role keeping its own role label;
// the alerting rules loaded and evaluated without error, none of the
// healthy cluster's alerts firing; and every metric the rules and the
// Grafana dashboards name exists on the live agents (the test lists the
// missing ones), every one of their queries accepted by Prometheus.
func TestPrometheusScrapesAgents(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	ctx := context.Background()

	// A template with pg_stat_statements preloaded, WAL archiving and an
	// onChange handler: every family of metric the dashboards and rules
	// name then has series.
	tpl := map[string]any{"name": "pg15-stats", "engine": "postgres", "engine_version": "15", "agent_version": "dev",
		"bin_dir":    "/usr/lib/postgresql/15/bin",
		"parameters": map[string]string{"max_connections": "100", "shared_preload_libraries": "pg_stat_statements"},
		"handlers":   map[string]any{"onChange": map[string]any{"shell": "true"}},
		"backup":     map[string]any{"wal_archive": true, "jobs": []any{}},
		"plans":      map[string]any{"small": map[string]any{"cpu": 1, "memory_mb": 512, "disk_gb": 1}}}
	var e apiErr
	if code := admin.do("POST", "/v1/namespaces/acme/templates", tpl, &e); code != 201 {
		t.Fatalf("create template: %d %+v", code, e)
	}
	var o op
	if code := admin.do("POST", "/v1/namespaces/acme/clusters", map[string]any{"name": "metrics", "replicas": 2, "template": "pg15-stats", "plan": "small"}, &o); code != 202 {
		t.Fatalf("create cluster: %d", code)
	}
	if done := admin.waitOp("acme", o.ID, 4*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("create failed: %+v", done)
	}
	var cl clusterOut
	testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, "a primary and a streaming replica", func() error {
		admin.do("GET", "/v1/namespaces/acme/clusters/metrics", nil, &cl)
		roles := map[string]int{}
		for _, m := range cl.Members {
			if m.Role == "replica" && (m.Streaming == nil || !*m.Streaming) {
				return fmt.Errorf("replica %s not streaming", m.Name)
			}
			roles[m.Role]++
		}
		if cl.Primary == "" || roles["primary"] != 1 || roles["replica"] != 1 {
			return fmt.Errorf("primary %q roles %v", cl.Primary, roles)
		}
		return nil
	})
	nodeRole := map[string]string{}
	for _, m := range cl.Members {
		nodeRole[m.Name] = m.Role
	}

	// Statements for pg_stat_statements, and a WAL segment to archive.
	user, pw, err := s.Process.ReadSuperuser(cl.ID)
	if err != nil {
		t.Fatal(err)
	}
	h := handlesOf(t, s, cl.ID)[cl.Primary]
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/postgres?sslmode=disable", user, pw, h.PGPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{"CREATE EXTENSION IF NOT EXISTS pg_stat_statements", "CREATE TABLE IF NOT EXISTS prom_t (i int)",
		"INSERT INTO prom_t SELECT generate_series(1, 1000)", "SELECT count(*) FROM prom_t", "SELECT pg_switch_wal()"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	// The Prometheus token: the metrics role on the namespace.
	token, err := s.CreateToken(ctx, "prometheus", store.Grant{Namespace: "acme", Role: "metrics"})
	if err != nil {
		t.Fatal(err)
	}
	prom := startPrometheus(t, s.URL+"/v1/prometheus/targets", token)

	// Both agents discovered and up, with the cluster's labels.
	testutil.Eventually(t, 90*time.Second, 500*time.Millisecond, "both agents scraped with their labels", func() error {
		var data struct {
			ActiveTargets []struct {
				Labels    map[string]string `json:"labels"`
				Health    string            `json:"health"`
				LastError string            `json:"lastError"`
				ScrapeURL string            `json:"scrapeUrl"`
			} `json:"activeTargets"`
		}
		if err := prom.get("/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
			return err
		}
		if len(data.ActiveTargets) != len(nodeRole) {
			return fmt.Errorf("%d active targets, want %d", len(data.ActiveTargets), len(nodeRole))
		}
		for _, tg := range data.ActiveTargets {
			l := tg.Labels
			if tg.Health != "up" {
				return fmt.Errorf("target %s: %s %s", tg.ScrapeURL, tg.Health, tg.LastError)
			}
			want := map[string]string{"job": "dbpilot", "namespace": "acme", "project": "default", "cluster": "metrics",
				"node": l["node"], "role": nodeRole[l["node"]], "engine": "postgres", "template": "pg15-stats", "instance": l["instance"]}
			if nodeRole[l["node"]] == "" || !maps.Equal(l, want) {
				return fmt.Errorf("target %s labels %v, want %v", tg.ScrapeURL, l, want)
			}
		}
		return nil
	})

	// The series carry the target labels; the primary's are role primary.
	ups, err := prom.query(`up{job="dbpilot"} == 1`)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range ups {
		if u.Metric["cluster"] != "metrics" || u.Metric["engine"] != "postgres" || nodeRole[u.Metric["node"]] != u.Metric["role"] {
			t.Errorf("up series %v: want cluster metrics, engine postgres and the node's role", u.Metric)
		}
	}
	testutil.Eventually(t, 30*time.Second, 500*time.Millisecond, "pg_up of the primary, role primary", func() error {
		r, err := prom.query(`pg_up{cluster="metrics", role="primary"} == 1`)
		if err != nil || len(r) != 1 || r[0].Metric["node"] != cl.Primary {
			return fmt.Errorf("%v %v, want the primary %s", r, err, cl.Primary)
		}
		return nil
	})
	// dbpilot_role keeps its own role label (metric_relabel_configs):
	// role="primary" is 1 on the primary alone, and no exported_role.
	r, err := prom.query(`dbpilot_role{cluster="metrics", role="primary"} == 1`)
	if err != nil || len(r) != 1 || r[0].Metric["node"] != cl.Primary {
		t.Errorf(`dbpilot_role{role="primary"} == 1: %v %v, want the primary %s alone`, r, err, cl.Primary)
	}
	if r, err := prom.query(`count({job="dbpilot", exported_role!=""})`); err != nil || len(r) != 0 {
		t.Errorf("series with exported_role: %v %v, want none", r, err)
	}

	// The rules loaded and evaluate cleanly; the healthy cluster fires
	// none of them.
	rulesOK(t, prom, false)

	// A switchover: the role labels follow it (service discovery and
	// dbpilot_role), and the HA loop's first actions start
	// dbpilot_ha_actions_total (it counts actions other than noop).
	old := cl.Primary
	target := ""
	for n, r := range nodeRole {
		if r == "replica" {
			target = n
		}
	}
	if code := admin.do("POST", "/v1/namespaces/acme/clusters/metrics/switchover", map[string]any{"to": target, "reason": "prometheus test"}, &o); code != 202 {
		t.Fatalf("switchover: %d", code)
	}
	if done := admin.waitOp("acme", o.ID, 2*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("switchover failed: %+v", done)
	}
	nodeRole[target], nodeRole[old] = "primary", "replica"
	testutil.Eventually(t, 60*time.Second, 500*time.Millisecond, "the role labels follow the switchover", func() error {
		for q, want := range map[string]string{
			`up{job="dbpilot", cluster="metrics", role="primary"} == 1`:                          target,
			`up{job="dbpilot", cluster="metrics", role="replica"} == 1`:                          old,
			`dbpilot_role{cluster="metrics", role="primary"} == 1`:                               target,
			`pg_replication_is_replica{cluster="metrics", role="primary"} == 0`:                  target,
			`sum by (node) (dbpilot_ha_actions_total{cluster="metrics", action="handover"}) > 0`: old,
		} {
			r, err := prom.query(q)
			if err != nil {
				return err
			}
			if len(r) != 1 || r[0].Metric["node"] != want {
				return fmt.Errorf("%s: %v, want node %s alone", q, r, want)
			}
		}
		return nil
	})

	// Every documented metric, and every metric the rules and dashboards
	// name, is scraped. The ones the setup cannot produce are listed.
	vars := map[string]string{"namespace": "acme", "cluster": "metrics", "datasource": "prometheus"}
	queries := deployQueries(t, vars)
	need := map[string][]string{}
	for _, m := range documentedMetrics(t) {
		need[m] = append(need[m], "docs/metrics.md")
	}
	for where, q := range queries {
		names, err := promqlMetricNames(q)
		if err != nil {
			t.Errorf("%s: %v", where, err)
		}
		for _, n := range names {
			need[n] = append(need[n], where)
		}
	}
	if len(need) < 60 {
		t.Fatalf("only %d metric names from the docs, rules and dashboards: the extraction is broken", len(need))
	}
	testutil.Eventually(t, 90*time.Second, time.Second, "every documented metric and every metric of the rules and dashboards scraped", func() error {
		var have []string
		if err := prom.get("/api/v1/label/__name__/values", url.Values{"match[]": {`{job="dbpilot", cluster="metrics"}`}}, &have); err != nil {
			return err
		}
		var missing []string
		for n, where := range need {
			if !slices.Contains(have, n) {
				slices.Sort(where)
				missing = append(missing, n+" (named in "+strings.Join(slices.Compact(where), "; ")+")")
			}
		}
		slices.Sort(missing)
		if len(missing) > 0 {
			return fmt.Errorf("%d metrics not on the live agents:\n  %s", len(missing), strings.Join(missing, "\n  "))
		}
		return nil
	})

	// Prometheus accepts and evaluates every query.
	for where, q := range queries {
		if _, err := prom.query(q); err != nil {
			t.Errorf("%s: %v", where, err)
		}
	}

	// After the switchover the rules still evaluate cleanly and the cluster,
	// healthy again, pages for nothing.
	rulesOK(t, prom, true)
}

// rulesOK waits until Prometheus has loaded the 10 alerting rules of
// deploy/prometheus and evaluated each without error, none firing (with
// infoAllowed, info alerts may fire: the primary changed).
func rulesOK(t *testing.T, prom promAPI, infoAllowed bool) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, 500*time.Millisecond, "rules evaluated, none firing", func() error {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name      string            `json:"name"`
					Health    string            `json:"health"`
					LastError string            `json:"lastError"`
					State     string            `json:"state"`
					Labels    map[string]string `json:"labels"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := prom.get("/api/v1/rules", url.Values{"type": {"alert"}}, &data); err != nil {
			return err
		}
		n := 0
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					return fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
				}
				if r.State == "firing" && !(infoAllowed && r.Labels["severity"] == "info") {
					return fmt.Errorf("rule %s fires on a healthy cluster", r.Name)
				}
			}
		}
		if n != 10 {
			return fmt.Errorf("%d alerting rules loaded, want 10", n)
		}
		return nil
	})
}
