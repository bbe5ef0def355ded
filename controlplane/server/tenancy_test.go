package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/controlplane/api"
)

// createToken makes a token with one grant through the API and returns
// its id and secret.
func createToken(t *testing.T, admin client, name, ns, role string) (string, string) {
	t.Helper()
	var created struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if code := admin.do("POST", "/v1/tokens", map[string]any{"name": name, "grants": []map[string]string{{"namespace": ns, "role": role}}}, &created); code != 201 {
		t.Fatalf("create token %s: %d", name, code)
	}
	return created.ID, created.Token
}

// openStream opens ns's event stream with token and returns a channel
// closed when the server ends the stream.
func openStream(t *testing.T, base, token, ns string) (<-chan struct{}, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/namespaces/"+ns+"/events/stream", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		cancel()
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
		}
		resp.Body.Close()
	}()
	return ended, cancel
}

// TestNamespaceDeletionRevokes: deleting a namespace revokes its tokens
// and ends their streams; the namespace created again under the same name
// refuses the old token (401) and has none of the old templates, audit
// entries or events. The store file and data folder are private.
func TestNamespaceDeletionRevokes(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	if code := admin.do("POST", "/v1/namespaces", map[string]string{"name": "tenant"}, nil); code != 201 {
		t.Fatalf("create namespace: %d", code)
	}
	_, oldTok := createToken(t, admin, "tenant-admin", "tenant", "admin")
	old := client{t: t, base: s.URL, token: oldTok}
	if code := admin.do("POST", "/v1/namespaces/tenant/templates", `{"name":"t-old","engine":"postgres","engine_version":"15","agent_version":"v","plans":{"s":{"cpu":1,"memory_mb":512,"disk_gb":1}}}`, nil); code != 201 {
		t.Fatalf("create template: %d", code)
	}
	if code := old.do("POST", "/v1/namespaces/tenant/projects", map[string]string{"name": "p1"}, nil); code != 201 {
		t.Fatalf("create project: %d", code)
	}
	var audit struct {
		Items []json.RawMessage `json:"items"`
	}
	if code := old.do("GET", "/v1/namespaces/tenant/audit", nil, &audit); code != 200 || len(audit.Items) == 0 {
		t.Fatalf("old audit: %d %d entries", code, len(audit.Items))
	}
	var oldAudit struct {
		Items []json.RawMessage `json:"items"`
	}
	if code := admin.do("GET", "/v1/audit", nil, &oldAudit); code != 200 || len(oldAudit.Items) == 0 {
		t.Fatalf("global audit: %d", code)
	}
	ended, cancel := openStream(t, s.URL, oldTok, "tenant")
	defer cancel()

	if code := admin.do("DELETE", "/v1/namespaces/tenant", nil, nil); code != 204 {
		t.Fatalf("delete namespace: %d", code)
	}
	select {
	case <-ended:
	case <-time.After(time.Second):
		t.Fatal("the deleted namespace's stream still open after 1 s")
	}
	if code := admin.do("POST", "/v1/namespaces", map[string]string{"name": "tenant"}, nil); code != 201 {
		t.Fatalf("re-create namespace: %d", code)
	}
	audit.Items = nil
	if code := admin.do("GET", "/v1/namespaces/tenant/audit", nil, &audit); code != 200 || len(audit.Items) != 0 {
		t.Errorf("the re-created namespace's audit: %d, %d entries, want none: %s", code, len(audit.Items), audit.Items)
	}
	for _, path := range []string{"/v1/namespaces/tenant", "/v1/namespaces/tenant/templates", "/v1/namespaces/tenant/audit", "/v1/whoami"} {
		var e apiErr
		if code := old.do("GET", path, nil, &e); code != 401 || e.Code != "unauthenticated" {
			t.Errorf("old token, GET %s on the re-created namespace: %d %+v, want 401", path, code, e)
		}
	}
	var tpls struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
	}
	if code := admin.do("GET", "/v1/namespaces/tenant/templates", nil, &tpls); code != 200 {
		t.Fatalf("templates: %d", code)
	}
	for _, tp := range tpls.Items {
		if tp.Name == "t-old" {
			t.Errorf("the re-created namespace has the old template")
		}
	}
	// The old token's refused requests are the new namespace's only audit
	// entries (anonymous: the token is no longer known).
	audit.Items = nil
	if code := admin.do("GET", "/v1/namespaces/tenant/audit", nil, &audit); code != 200 || len(audit.Items) != 3 {
		t.Errorf("the re-created namespace's audit: %d, %d entries, want the 3 refused requests: %s", code, len(audit.Items), audit.Items)
	}
	for _, e := range audit.Items {
		if !strings.Contains(string(e), `"status":401`) {
			t.Errorf("audit entry of the re-created namespace: %s", e)
		}
	}
	// The platform's audit log keeps the old entries.
	var global struct {
		Items []json.RawMessage `json:"items"`
	}
	if code := admin.do("GET", "/v1/audit?limit=1000", nil, &global); code != 200 || len(global.Items) < len(oldAudit.Items) {
		t.Errorf("global audit after the deletion: %d, %d entries", code, len(global.Items))
	}
	var projects struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
	}
	if code := admin.do("GET", "/v1/namespaces/tenant/projects", nil, &projects); code != 200 || len(projects.Items) != 1 || projects.Items[0].Name != "default" {
		t.Errorf("the re-created namespace's projects: %d %+v", code, projects.Items)
	}

	// The store is private to the server's user.
	if st, err := os.Stat(filepath.Join(dir, "dbpilot.db")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("dbpilot.db: %v %v, want mode 0600", st.Mode().Perm(), err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm()&0o066 != 0 {
		t.Errorf("data dir: %v %v, want no read or write for group and others", st.Mode().Perm(), err)
	}
}

// TestRevokedTokenStreamCloses: an event stream opened with a token ends
// within one second of the token's revocation; the other token's stream
// stays open.
func TestRevokedTokenStreamCloses(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	id, tok := createToken(t, admin, "watcher", "acme", "viewer")
	_, keep := createToken(t, admin, "keeper", "acme", "viewer")
	ended, cancel := openStream(t, s.URL, tok, "acme")
	defer cancel()
	kept, cancelKept := openStream(t, s.URL, keep, "acme")
	defer cancelKept()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if code := admin.do("DELETE", "/v1/tokens/"+id, nil, nil); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	select {
	case <-ended:
		t.Logf("stream ended %s after the revocation", time.Since(start).Round(time.Millisecond))
	case <-time.After(time.Second):
		t.Fatal("the revoked token's stream still open after 1 s")
	}
	select {
	case <-kept:
		t.Fatal("the other token's stream ended")
	case <-time.After(api.StreamRecheckInterval * 3):
	}
}

// TestAnonymousRequestsBounded: 1,000 anonymous requests with a 16 KiB
// path and an 8 KiB User-Agent grow the audit log by at most
// MaxAuditField bytes per field of the entries written, and past the
// burst the address gets 429 (Retry-After, a JSON error) without an
// audit entry; a valid token from the same address still works.
func TestAnonymousRequestsBounded(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	auditSize := func() (rows, bytes int64) {
		t.Helper()
		err := s.Store.DB().QueryRowContext(context.Background(), `SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(actor AS BLOB)) + LENGTH(CAST(namespace AS BLOB)) +
 LENGTH(CAST(action AS BLOB)) + LENGTH(CAST(resource AS BLOB)) + LENGTH(CAST(result AS BLOB))), 0) FROM audit`).Scan(&rows, &bytes)
		if err != nil {
			t.Fatal(err)
		}
		return rows, bytes
	}
	rows0, bytes0 := auditSize()
	long := "/v1/namespaces/acme/clusters/" + strings.Repeat("x", 16<<10)
	ua := strings.Repeat("u", 8<<10)
	codes := map[int]int{}
	start := time.Now()
	for i := range 1000 {
		method, path := "POST", long+"/restart"
		if i%2 == 1 {
			method, path = "GET", long
		}
		req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(`{}`))
		req.Header.Set("User-Agent", ua)
		if i%3 == 0 {
			req.Header.Set("Authorization", "Bearer dbp_bogus")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 {
			var e apiErr
			if json.Unmarshal(body, &e) != nil || e.Code != "rate_limited" || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("429 answer: %q Retry-After %q", body, resp.Header.Get("Retry-After"))
			}
		}
	}
	elapsed := time.Since(start)
	rows1, bytes1 := auditSize()
	grown, written := bytes1-bytes0, rows1-rows0
	t.Logf("1000 anonymous requests in %s: %v; audit +%d entries, +%d bytes", elapsed.Round(time.Millisecond), codes, written, grown)
	if codes[401]+codes[429] != 1000 {
		t.Fatalf("statuses %v, want only 401 and 429", codes)
	}
	allowed := int64(api.DefaultFailedAuthBurst) + int64(elapsed.Seconds()*api.DefaultFailedAuthRate) + 1
	if int64(codes[401]) > allowed || written != int64(codes[401]) {
		t.Errorf("%d answered 401 and %d audited, want at most %d (burst + rate × time), each audited once", codes[401], written, allowed)
	}
	if max := written * 5 * api.MaxAuditField; grown > max {
		t.Errorf("audit grew by %d bytes for %d entries, more than %d (5 fields × %d)", grown, written, max, api.MaxAuditField)
	}
	var who struct {
		Name string `json:"name"`
	}
	if code := admin.do("GET", "/v1/whoami", nil, &who); code != 200 || who.Name != "test-admin" {
		t.Errorf("a valid token from the limited address: %d %+v", code, who)
	}
}
