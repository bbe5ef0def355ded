package server_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dbpilot/dbpilot/controlplane/server"
	"github.com/dbpilot/dbpilot/controlplane/store"
)

// TestLoadConfigNamesTheField: a bad serve config is refused with the key
// and the fix; a good one loads.
func TestLoadConfigNamesTheField(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"ok", "data_dir: /tmp/x\nevent_retention: 240h\nstate_event_retention: -1s\n", ""},
		{"no data dir", "listen: 127.0.0.1:0\n", "data_dir: required"},
		{"typo", "data_dir: /tmp/x\nevent_retension: 1h\n", "event_retension"},
		{"bad bus", "data_dir: /tmp/x\nbus: {kind: kafka}\n", "bus.kind: must be embedded or dapr"},
		{"retention too short", "data_dir: /tmp/x\nstate_event_retention: 10m\n", "state_event_retention: must be at least 1h"},
		{"negative prune interval", "data_dir: /tmp/x\nprune_interval: -1m\n", "prune_interval: must be > 0"},
		{"abuse bounds ok", "data_dir: /tmp/x\naudit_retention: 720h\nfailed_auth_rate: 0.5\nfailed_auth_burst: 10\n", ""},
		{"audit retention too short", "data_dir: /tmp/x\naudit_retention: 10m\n", "audit_retention: must be at least 1h"},
		{"negative failed auth rate", "data_dir: /tmp/x\nfailed_auth_rate: -1\n", "failed_auth_rate"},
		{"alerts ok", "data_dir: /tmp/x\nalerts: {enabled: true, interval: 2s}\n", ""},
		{"alerts interval too short", "data_dir: /tmp/x\nalerts: {interval: 1ms}\n", "alerts.interval: must be at least 100ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "server.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := server.LoadConfig(p)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("LoadConfig: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("LoadConfig error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestIssueTokenOffline: the first admin token of a serve deployment is
// created in the store without a running server, and the server then
// accepts it; bad grants are refused naming the fix.
func TestIssueTokenOffline(t *testing.T) {
	dir := testDir(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		grants []store.Grant
		want   string
	}{
		{"", []store.Grant{{Namespace: "*", Role: "admin"}}, "name: required"},
		{"x", nil, "grant: at least one"},
		{"x", []store.Grant{{Namespace: "*", Role: "root"}}, "ROLE admin, operator, viewer or metrics"},
	} {
		if _, err := server.IssueToken(ctx, server.Config{DataDir: dir}, tc.name, tc.grants); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("IssueToken(%q, %v) = %v, want an error containing %q", tc.name, tc.grants, err, tc.want)
		}
	}
	tok, err := server.IssueToken(ctx, server.Config{DataDir: dir}, "first-admin", []store.Grant{{Namespace: "*", Role: "admin"}})
	if err != nil || !strings.HasPrefix(tok, "dbp_") {
		t.Fatalf("IssueToken: %q %v", tok, err)
	}
	s, _ := startServer(t, dir)
	defer s.Close()
	var who struct {
		Name string `json:"name"`
	}
	c := client{t: t, base: s.URL, token: tok}
	if code := c.do("GET", "/v1/whoami", nil, &who); code != 200 || who.Name != "first-admin" {
		t.Fatalf("whoami with the offline token: %d %+v", code, who)
	}
	if code := c.do("POST", "/v1/namespaces", map[string]any{"name": "fresh"}, nil); code != 201 {
		t.Fatalf("the offline admin token cannot create a namespace: %d", code)
	}
	// A Prometheus token made offline reads the targets and nothing else.
	prom, err := server.IssueToken(ctx, server.Config{DataDir: dir}, "prometheus", []store.Grant{{Namespace: "*", Role: "metrics"}})
	if err != nil {
		t.Fatal(err)
	}
	pc := client{t: t, base: s.URL, token: prom}
	if code := pc.do("GET", "/v1/prometheus/targets", nil, nil); code != 200 {
		t.Errorf("offline metrics token reading targets: %d", code)
	}
	if code := pc.do("GET", "/v1/namespaces", nil, nil); code != 403 {
		t.Errorf("offline metrics token listing namespaces: %d, want 403", code)
	}
}

// TestPagination follows next_page_token through a list: every item once,
// in order, full pages carry a token and the last one does not.
func TestPagination(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	var want []string
	for i := range 5 {
		id := fmt.Sprintf("c-page-%d", i)
		seedCluster(t, s.Store, id, "acme", fmt.Sprintf("db%d", i))
		want = append(want, id)
	}
	var got []string
	var sizes []int
	token := ""
	for range 10 {
		var page struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
			Next string `json:"next_page_token"`
		}
		path := "/v1/namespaces/acme/clusters?limit=2"
		if token != "" {
			path += "&page_token=" + url.QueryEscape(token)
		}
		if code := admin.do("GET", path, nil, &page); code != 200 {
			t.Fatalf("GET %s: %d", path, code)
		}
		sizes = append(sizes, len(page.Items))
		for _, c := range page.Items {
			got = append(got, c.ID)
		}
		if token = page.Next; token == "" {
			break
		}
	}
	if !slices.Equal(got, want) || !slices.Equal(sizes, []int{2, 2, 1}) {
		t.Fatalf("pages %v of %v, want pages [2 2 1] of %v", sizes, got, want)
	}
}
