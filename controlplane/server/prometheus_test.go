package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
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
