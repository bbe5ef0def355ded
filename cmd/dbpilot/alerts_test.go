package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/controlplane/store"
)

// TestAlertsCLI: `dbpilot alerts` against `dbpilot-server dev`: list with
// filters, get, ack, silence (an alert row written into the dev server's
// store, as the engine would), and the channels commands (the webhook
// secret read from a file and never printed).
func TestAlertsCLI(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := newCLI(t, "DBPILOT_SERVER="+srv.url, "DBPILOT_TOKEN="+srv.token, "DBPILOT_NAMESPACE=default")
	if r := c.ok("alerts", "list"); !strings.Contains(r.stdout, "No alerts in namespace default.") {
		t.Errorf("empty list: %s", r)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(srv.dir, "server", "dbpilot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	const id = "0123456789abcdef"
	if err := st.SaveAlert(ctx, store.Alert{ID: id, Namespace: "default", Project: "default", Cluster: "db", ClusterID: "c-x", Node: "node1",
		Rule: "agent_silent", Severity: "page", State: "firing", Summary: "node node1: no summary for 12s", FirstSeen: now, LastSeen: now,
		FiredAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if r := c.ok("alerts", "list", "--state", "firing"); !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "agent_silent") || !strings.Contains(r.stdout, "no summary for 12s") {
		t.Errorf("list: %s", r)
	}
	if r := c.ok("alerts", "list", "--severity", "ticket"); strings.Contains(r.stdout, id) {
		t.Errorf("severity filter: %s", r)
	}
	c.exit(2, []string{"alerts", "list", "--state", "open"}, "state: must be pending, firing or resolved")
	if got := c.json("alerts", "get", id); got["rule"] != "agent_silent" || got["state"] != "firing" {
		t.Errorf("get: %v", got)
	}
	c.exit(3, []string{"alerts", "get", "fedcba9876543210"}, "not found")
	if got := c.json("alerts", "ack", id); !strings.Contains(got["acked_by"].(string), "dev-admin") {
		t.Errorf("ack: %v", got)
	}
	c.exit(2, []string{"alerts", "silence", id, "--for", "2h"}, "--reason: required")
	if got := c.json("alerts", "silence", id, "--for", "2h", "--reason", "disk swap"); got["silence_reason"] != "disk swap" || got["silenced_until"] == nil {
		t.Errorf("silence: %v", got)
	}

	// Channels.
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer hook.Close()
	secret := filepath.Join(t.TempDir(), "hook.secret")
	if err := os.WriteFile(secret, []byte("s3cr3t-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.exit(2, []string{"alerts", "channels", "add", "ops", "--webhook", hook.URL}, "--secret-file: required")
	if r := c.ok("alerts", "channels", "add", "ops", "--webhook", hook.URL, "--secret-file", secret); !strings.Contains(r.stdout, "webhook") || strings.Contains(r.stdout, "s3cr3t") {
		t.Errorf("add: %s", r)
	}
	c.exit(1, []string{"alerts", "channels", "add", "pager", "--dapr-binding", "pagerduty"}, "Dapr sidecar")
	r := c.ok("alerts", "channels", "list", "-o", "json")
	if !strings.Contains(r.stdout, `"has_secret": true`) || strings.Contains(r.stdout, "s3cr3t") {
		t.Errorf("channels list: %s", r)
	}
	if r := c.ok("alerts", "channels", "deliveries", "ops"); !strings.Contains(r.stdout, "no deliveries yet") {
		t.Errorf("deliveries: %s", r)
	}
	c.exit(2, []string{"alerts", "channels", "delete", "ops"}, "refusing without --yes")
	c.ok("alerts", "channels", "delete", "ops", "--yes")
	c.exit(3, []string{"alerts", "channels", "delete", "ops", "--yes"}, "not found")
}
