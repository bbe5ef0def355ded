package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// seedCluster inserts a cluster whose create operation already finished,
// so no workflow touches it.
func seedCluster(t *testing.T, st *store.Store, id, ns, name string) {
	t.Helper()
	now := time.Now()
	c := store.Cluster{ID: id, Namespace: ns, Project: "default", Name: name, Engine: "postgres", Version: "15", Template: "postgres-15",
		Plan: "small", Provider: "process", Replicas: 3, SynchronousMode: "off", Phase: store.PhaseReady, CreatedAt: now, UpdatedAt: now}
	op := store.Operation{ID: "op-" + id, Namespace: ns, ClusterID: id, Kind: "create", State: store.OpSucceeded, CreatedAt: now, UpdatedAt: now}
	if err := st.CreateCluster(context.Background(), c, op); err != nil {
		t.Fatal(err)
	}
	if err := st.UpsertNode(context.Background(), store.Node{ClusterID: id, Name: "node1", State: "created"}); err != nil {
		t.Fatal(err)
	}
}

type endpoint struct {
	method, path string // {ns}, {c}, {op} are replaced
	body         string
	// role is the weakest role allowed; "" means every authenticated caller.
	role string
	// okStatus is what an allowed caller gets (bodies are chosen so that
	// allowed mutations stop at validation: no side effects).
	okStatus int
}

var matrix = []endpoint{
	{"GET", "/v1/namespaces/{ns}", "", "viewer", 200},
	{"GET", "/v1/namespaces/{ns}/projects", "", "viewer", 200},
	{"POST", "/v1/namespaces/{ns}/projects", `{"name":"BAD NAME"}`, "admin", 400},
	{"GET", "/v1/namespaces/{ns}/projects/default", "", "viewer", 200},
	{"GET", "/v1/namespaces/{ns}/clusters", "", "viewer", 200},
	{"POST", "/v1/namespaces/{ns}/clusters", `{"name":"x","replicas":0}`, "operator", 400},
	{"GET", "/v1/namespaces/{ns}/clusters/{c}", "", "viewer", 200},
	{"GET", "/v1/namespaces/{ns}/clusters/{c}/nodes", "", "viewer", 200},
	{"GET", "/v1/namespaces/{ns}/clusters/{c}/nodes/node1/cloud-init", "", "admin", 200},
	{"GET", "/v1/namespaces/{ns}/clusters/{c}/top", "", "viewer", 503},      // seeded: no primary in etcd
	{"GET", "/v1/namespaces/{ns}/clusters/{c}/sessions", "", "viewer", 503}, // likewise
	{"PATCH", "/v1/namespaces/{ns}/clusters/{c}", `{"synchronous_mode":"maybe"}`, "operator", 400},
	{"POST", "/v1/namespaces/{ns}/clusters/{c}/scale", `{"replicas":99}`, "operator", 400},
	{"POST", "/v1/namespaces/{ns}/clusters/{c}/switchover", `{"to":"nope"}`, "operator", 400},
	{"POST", "/v1/namespaces/{ns}/clusters/{c}/failover", `{}`, "operator", 400},
	{"POST", "/v1/namespaces/{ns}/clusters/{c}/restart", `{"x":1}`, "operator", 400},
	{"GET", "/v1/namespaces/{ns}/clusters/{c}/backups", "", "viewer", 200},
	{"POST", "/v1/namespaces/{ns}/clusters/{c}/backups", `{"job":"nope"}`, "operator", 400},
	{"POST", "/v1/namespaces/{ns}/clusters/{c}/restore", `{"target":"BAD NAME"}`, "operator", 400},
	{"DELETE", "/v1/namespaces/{ns}/clusters/{c}", "", "operator", 202},
	{"GET", "/v1/namespaces/{ns}/operations", "", "viewer", 200},
	{"GET", "/v1/namespaces/{ns}/operations/{op}", "", "viewer", 200},
	{"GET", "/v1/namespaces/{ns}/events", "", "viewer", 200},
	{"GET", "/v1/namespaces/{ns}/templates", "", "viewer", 200},
	{"POST", "/v1/namespaces/{ns}/templates", `{"name":"t","engine":"oracle"}`, "admin", 400},
	{"GET", "/v1/namespaces/{ns}/templates/postgres-15", "", "viewer", 200},
	{"DELETE", "/v1/namespaces/{ns}/templates/nope", "", "admin", 404},
	{"GET", "/v1/namespaces/{ns}/audit", "", "admin", 200},
	{"GET", "/v1/namespaces/{ns}/alerts", "", "viewer", 200},
	{"GET", "/v1/namespaces/{ns}/alerts/0123456789abcdef", "", "viewer", 404},
	{"POST", "/v1/namespaces/{ns}/alerts/0123456789abcdef/ack", "", "operator", 404},
	{"POST", "/v1/namespaces/{ns}/alerts/0123456789abcdef/silence", `{}`, "operator", 404},
	{"GET", "/v1/namespaces/{ns}/notification-channels", "", "viewer", 200},
	{"POST", "/v1/namespaces/{ns}/notification-channels", `{"name":"x","kind":"sms"}`, "admin", 400},
	{"DELETE", "/v1/namespaces/{ns}/notification-channels/nope", "", "admin", 404},
	{"GET", "/v1/namespaces/{ns}/notification-channels/nope/deliveries", "", "viewer", 404},
	{"GET", "/v1/namespaces/{ns}/clusters/{c}/alert-thresholds", "", "viewer", 200},
	{"PUT", "/v1/namespaces/{ns}/clusters/{c}/alert-thresholds", `{"disk_page_pct":200}`, "operator", 400},
}

// TestTenantIsolationMatrix: every namespaced endpoint × three roles × two
// tenants. A tenant's tokens get 404 for everything of the other tenant
// (reads and writes alike); inside its own namespace each role gets
// exactly what its rank allows (403 below it).
func TestTenantIsolationMatrix(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	ctx := context.Background()
	for _, ns := range []string{"tenant-a", "tenant-b"} {
		if _, err := s.Store.CreateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	seedCluster(t, s.Store, "c-a", "tenant-a", "db-a")
	seedCluster(t, s.Store, "c-b", "tenant-b", "db-b")
	target := map[string]map[string]string{
		"tenant-a": {"{c}": "db-a", "{op}": "op-c-a"},
		"tenant-b": {"{c}": "db-b", "{op}": "op-c-b"},
	}
	rank := map[string]int{"viewer": 1, "operator": 2, "admin": 3}
	for _, tenant := range []string{"tenant-a", "tenant-b"} {
		other := "tenant-b"
		if tenant == "tenant-b" {
			other = "tenant-a"
		}
		for _, role := range []string{"viewer", "operator", "admin"} {
			tok, err := s.CreateToken(ctx, tenant+"-"+role, store.Grant{Namespace: tenant, Role: role})
			if err != nil {
				t.Fatal(err)
			}
			c := client{t: t, base: s.URL, token: tok}
			for _, ep := range matrix {
				// Cross-tenant: always 404, and it must not depend on
				// whether the resource exists.
				if ep.method == "DELETE" && strings.Contains(ep.path, "{c}") {
					// deleting the other tenant's cluster: 404 and nothing happens
				}
				path := fill(ep.path, other, target[other])
				var e apiErr
				if code := c.do(ep.method, path, bodyOf(ep.body), &e); code != 404 {
					t.Errorf("%s %s %s %s (other tenant): %d, want 404 (%+v)", tenant, role, ep.method, path, code, e)
				}
				// Own tenant. Skip the real delete except for the last role.
				if ep.method == "DELETE" && strings.Contains(ep.path, "{c}") {
					continue
				}
				path = fill(ep.path, tenant, target[tenant])
				want := ep.okStatus
				if rank[role] < rank[ep.role] {
					want = 403
				}
				if code := c.do(ep.method, path, bodyOf(ep.body), &e); code != want {
					t.Errorf("%s %s %s %s: %d, want %d (%+v)", tenant, role, ep.method, path, code, want, e)
				}
			}
			// The other tenant never appears in lists.
			var nsl struct {
				Items []struct{ Name string } `json:"items"`
			}
			c.do("GET", "/v1/namespaces", nil, &nsl)
			if len(nsl.Items) != 1 || nsl.Items[0].Name != tenant {
				t.Errorf("%s %s sees namespaces %+v", tenant, role, nsl.Items)
			}
			// Global endpoints need the platform admin.
			for _, g := range []struct{ method, path, body string }{
				{"GET", "/v1/tokens", ""}, {"GET", "/v1/audit", ""}, {"GET", "/v1/infra/hosts", ""},
				{"POST", "/v1/namespaces", `{"name":"z"}`}, {"POST", "/v1/infra/join-tokens", `{}`},
				{"POST", "/v1/infra/hosts/h-1/cordon", ""}, {"POST", "/v1/infra/hosts/h-1/uncordon", ""},
				{"POST", "/v1/infra/hosts/h-1/drain", ""}, {"GET", "/v1/infra/operations/op-c-a", ""},
			} {
				if code := c.do(g.method, g.path, bodyOf(g.body), nil); code != 403 {
					t.Errorf("%s %s %s %s: %d, want 403", tenant, role, g.method, g.path, code)
				}
			}
		}
	}
	// The platform admin's own-tenant delete goes through (202), and the
	// audit log holds every mutation above, refused ones included.
	if code := admin.do("DELETE", "/v1/namespaces/tenant-a/clusters/db-a", nil, nil); code != 202 {
		t.Fatalf("admin delete: %d", code)
	}
	var audit struct {
		Items []struct {
			Actor  string `json:"actor"`
			Action string `json:"action"`
			Status int    `json:"status"`
		} `json:"items"`
	}
	admin.do("GET", "/v1/audit?limit=1000", nil, &audit)
	statuses := map[int]int{}
	for _, a := range audit.Items {
		statuses[a.Status]++
		if method, path, ok := strings.Cut(a.Action, " "); !ok || !strings.HasPrefix(path, "/v1/") || strings.Contains(path, method+" ") {
			t.Errorf("audit action %q, want \"METHOD /v1/pattern\" (the method once)", a.Action)
		}
	}
	if statuses[404] == 0 || statuses[403] == 0 || statuses[400] == 0 || statuses[202] == 0 {
		t.Fatalf("audit log misses refused or accepted mutations: %v", statuses)
	}
}

type apiErr struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field"`
}

func bodyOf(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func fill(p, ns string, m map[string]string) string {
	p = strings.ReplaceAll(p, "{ns}", ns)
	for k, v := range m {
		p = strings.ReplaceAll(p, k, v)
	}
	return p
}

// TestAuthAndValidation: 401 without or with a bad token; 400 naming the
// field for malformed JSON, unknown fields, wrong types and out-of-range
// values; the OpenAPI document covers every route.
func TestAuthAndValidation(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	for _, tok := range []string{"", "dbp_bogus"} {
		c := client{t: t, base: s.URL, token: tok}
		for _, p := range []struct{ m, path string }{{"GET", "/v1/namespaces"}, {"POST", "/v1/namespaces/acme/clusters"}, {"GET", "/v1/namespaces/acme/events/stream"}} {
			var e apiErr
			if code := c.do(p.m, p.path, bodyOf(`{}`), &e); code != 401 || e.Code != "unauthenticated" {
				t.Errorf("token %q %s %s: %d %+v, want 401", tok, p.m, p.path, code, e)
			}
		}
	}
	// A revoked token stops working.
	var created struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if code := admin.do("POST", "/v1/tokens", map[string]any{"name": "ci", "grants": []map[string]string{{"namespace": "acme", "role": "viewer"}}}, &created); code != 201 {
		t.Fatalf("create token: %d", code)
	}
	ci := client{t: t, base: s.URL, token: created.Token}
	if code := ci.do("GET", "/v1/namespaces/acme/clusters", nil, nil); code != 200 {
		t.Fatalf("new token: %d", code)
	}
	if code := admin.do("DELETE", "/v1/tokens/"+created.ID, nil, nil); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	if code := ci.do("GET", "/v1/namespaces/acme/clusters", nil, nil); code != 401 {
		t.Fatalf("revoked token: %d, want 401", code)
	}

	cases := []struct {
		name, body, code, field string
	}{
		{"malformed", `{"name":`, "malformed_json", ""},
		{"not an object", `[1]`, "malformed_json", ""},
		{"trailing", `{"name":"a"} {}`, "malformed_json", ""},
		{"unknown field", `{"name":"a","replica":3}`, "unknown_field", "replica"},
		{"wrong type", `{"name":"a","replicas":"3"}`, "invalid_argument", "replicas"},
		{"replicas range", `{"name":"a","replicas":10}`, "invalid_argument", "replicas"},
		{"replicas zero", `{"name":"a","replicas":0}`, "invalid_argument", "replicas"},
		{"name", `{"name":"Bad_Name"}`, "invalid_argument", "name"},
		{"plan", `{"name":"a","plan":"huge"}`, "invalid_argument", "plan"},
		{"version", `{"name":"a","version":"9"}`, "invalid_argument", "version"},
		{"engine", `{"name":"a","engine":"mysql"}`, "invalid_argument", "engine"},
		{"sync", `{"name":"a","synchronous_mode":"maybe"}`, "invalid_argument", "synchronous_mode"},
		{"template", `{"name":"a","template":"nope"}`, "invalid_argument", "template"},
		{"project", `{"name":"a","project":"nope"}`, "invalid_argument", "project"},
		{"provider", `{"name":"a","provider":"aws"}`, "invalid_argument", "provider"},
	}
	for _, tc := range cases {
		var e apiErr
		code := admin.do("POST", "/v1/namespaces/acme/clusters", tc.body, &e)
		if code != 400 || e.Code != tc.code || e.Field != tc.field || (tc.field != "" && !strings.Contains(e.Message, tc.field)) {
			t.Errorf("%s: %d %+v, want 400 %s naming %q", tc.name, code, e, tc.code, tc.field)
		}
	}
	var e apiErr
	if code := admin.do("GET", "/v1/namespaces/acme/clusters?limit=0", nil, &e); code != 400 || e.Field != "limit" {
		t.Errorf("limit=0: %d %+v", code, e)
	}
	if code := admin.do("POST", "/v1/namespaces/acme/templates", `{"name":"t1","engine":"postgres","engine_version":"15","agent_version":"v","plans":{"s":{"cpu":0,"memory_mb":512,"disk_gb":1}}}`, &e); code != 400 || e.Field != "plans.s.cpu" {
		t.Errorf("template plan: %d %+v", code, e)
	}

	// A template in use cannot be deleted: 409 naming the clusters.
	if code := admin.do("POST", "/v1/namespaces/acme/templates", `{"name":"t-used","engine":"postgres","engine_version":"15","agent_version":"v","plans":{"s":{"cpu":1,"memory_mb":512,"disk_gb":1}}}`, &e); code != 201 {
		t.Fatalf("create template: %d %+v", code, e)
	}
	now := time.Now()
	if err := s.Store.CreateCluster(context.Background(), store.Cluster{ID: "c-tu", Namespace: "acme", Project: "default", Name: "uses-t", Engine: "postgres", Version: "15",
		Template: "t-used", Plan: "s", Provider: "process", Replicas: 1, SynchronousMode: "off", Phase: store.PhaseReady, CreatedAt: now, UpdatedAt: now},
		store.Operation{ID: "op-tu", Namespace: "acme", ClusterID: "c-tu", Kind: "create", State: store.OpSucceeded, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if code := admin.do("DELETE", "/v1/namespaces/acme/templates/t-used", nil, &e); code != 409 || e.Field != "name" || !strings.Contains(e.Message, "uses-t") {
		t.Errorf("delete a template in use: %d %+v, want 409 naming cluster uses-t", code, e)
	}
	if err := s.Store.DeleteCluster(context.Background(), "c-tu"); err != nil {
		t.Fatal(err)
	}
	if code := admin.do("DELETE", "/v1/namespaces/acme/templates/t-used", nil, nil); code != 204 {
		t.Errorf("delete an unused template: %d, want 204", code)
	}

	// OpenAPI: every route documented, nothing documented that is not served.
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	resp, err := http.Get(s.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi document: %v %q", err, doc.OpenAPI)
	}
	if len(proto.OpenAPI) == 0 {
		t.Fatal("empty embedded document")
	}
	documented := map[string]bool{}
	for p, ms := range doc.Paths {
		for m := range ms {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	for _, r := range s.Routes() {
		if !documented[r] && r != "GET /healthz" {
			t.Errorf("route %s is not in proto/openapi.json", r)
		}
		delete(documented, r)
	}
	for r := range documented {
		t.Errorf("proto/openapi.json documents %s, which is not served", r)
	}

	// Query parameters: the document names exactly those each handler
	// reads (queryParams), and the ones the handlers validate are probed:
	// a GET route that reads limit, page_token, after or format answers 400
	// naming it for a bad value, one that does not read it ignores it.
	for p, ms := range doc.Paths {
		for m, raw := range ms {
			var op struct {
				Parameters []struct{ Name, In string } `json:"parameters"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", m, p, err)
			}
			var names []string
			for _, x := range op.Parameters {
				if x.In == "query" {
					names = append(names, x.Name)
				}
			}
			r := strings.ToUpper(m) + " " + p
			if got := strings.Join(names, " "); got != queryParams[r] {
				t.Errorf("proto/openapi.json: %s has query parameters %q, the handler reads %q", r, got, queryParams[r])
			}
		}
	}
	seedCluster(t, s.Store, "c-q", "acme", "q")
	fillPath := strings.NewReplacer("{ns}", "acme", "{cluster}", "q", "{node}", "node1", "{project}", "default",
		"{name}", "postgres-15", "{id}", "op-c-q")
	for _, r := range s.Routes() {
		method, path, _ := strings.Cut(r, " ")
		if method != "GET" {
			continue
		}
		for _, pr := range []struct{ param, bad string }{{"limit", "0"}, {"page_token", "%21"}, {"after", "-1"}, {"format", "x"}} {
			reads := slices.Contains(strings.Fields(queryParams[r]), pr.param)
			if !reads && strings.HasSuffix(path, "/stream") {
				continue // a valid request would stream forever
			}
			var raw json.RawMessage
			code := admin.do("GET", fillPath.Replace(path)+"?"+pr.param+"="+pr.bad, nil, &raw)
			var e apiErr
			_ = json.Unmarshal(raw, &e) // an array (the Prometheus targets) is no error
			if got := code == 400 && e.Field == pr.param; got != reads {
				t.Errorf("%s?%s=%s: %d %+v; the handler reads %s: %v", r, pr.param, pr.bad, code, e, pr.param, reads)
			}
		}
	}

	// Query insight of a cluster without a primary: 503 saying so.
	for _, p := range []string{"top", "sessions"} {
		var e apiErr
		if code := admin.do("GET", "/v1/namespaces/acme/clusters/q/"+p, nil, &e); code != 503 || e.Code != "unavailable" ||
			!strings.Contains(e.Message, "no primary known for cluster acme/q: no member holds the leader key") {
			t.Errorf("GET …/q/%s without a primary: %d %+v", p, code, e)
		}
	}
}

// queryParams lists, per route, the query parameters its handler reads,
// in the order proto/openapi.json lists them (controlplane/api: pageOf
// reads limit and page_token, the cluster lookup reads project,
// eventFilter reads cluster, node, type, after and limit).
var queryParams = map[string]string{
	"GET /v1/namespaces":                                                 "limit page_token",
	"GET /v1/namespaces/{ns}/projects":                                   "limit page_token",
	"GET /v1/namespaces/{ns}/clusters":                                   "limit page_token",
	"GET /v1/namespaces/{ns}/clusters/{cluster}":                         "project",
	"DELETE /v1/namespaces/{ns}/clusters/{cluster}":                      "project",
	"PATCH /v1/namespaces/{ns}/clusters/{cluster}":                       "project",
	"POST /v1/namespaces/{ns}/clusters/{cluster}/scale":                  "project",
	"POST /v1/namespaces/{ns}/clusters/{cluster}/switchover":             "project",
	"POST /v1/namespaces/{ns}/clusters/{cluster}/failover":               "project",
	"POST /v1/namespaces/{ns}/clusters/{cluster}/restart":                "project",
	"GET /v1/namespaces/{ns}/clusters/{cluster}/nodes":                   "project",
	"GET /v1/namespaces/{ns}/clusters/{cluster}/top":                     "project limit",
	"GET /v1/namespaces/{ns}/clusters/{cluster}/sessions":                "project",
	"GET /v1/namespaces/{ns}/clusters/{cluster}/nodes/{node}/cloud-init": "project format",
	"GET /v1/namespaces/{ns}/clusters/{cluster}/backups":                 "project limit page_token",
	"POST /v1/namespaces/{ns}/clusters/{cluster}/backups":                "project",
	"POST /v1/namespaces/{ns}/clusters/{cluster}/restore":                "project",
	"GET /v1/namespaces/{ns}/operations":                                 "cluster_id limit page_token",
	"GET /v1/namespaces/{ns}/events":                                     "cluster node type after limit",
	"GET /v1/namespaces/{ns}/events/stream":                              "cluster node type after limit",
	"GET /v1/namespaces/{ns}/audit":                                      "limit page_token",
	"GET /v1/namespaces/{ns}/alerts":                                     "state severity cluster limit",
	"GET /v1/namespaces/{ns}/notification-channels/{name}/deliveries":    "limit",
	"GET /v1/namespaces/{ns}/clusters/{cluster}/alert-thresholds":        "project",
	"PUT /v1/namespaces/{ns}/clusters/{cluster}/alert-thresholds":        "project",
	"GET /v1/tokens": "limit page_token",
	"GET /v1/audit":  "limit page_token",
}
