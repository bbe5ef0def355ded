package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/controlplane/alerts"
	"github.com/dbpilot/dbpilot/controlplane/server"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/internal/testutil"
	"github.com/dbpilot/dbpilot/proto"
)

// startAlertServer is startServer with the alert engine on and the repair
// reconciler at repairEvery (0: off).
func startAlertServer(t *testing.T, dir string, repairEvery time.Duration) (*server.Server, client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	on := true
	s, err := server.Start(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", AgentBin: agentBin, ReadyTimeout: 3 * time.Minute,
		RepairInterval: &repairEvery, Alerts: server.AlertsConfig{Enabled: &on, AllowPrivateWebhooks: true}}, zaptest.NewLogger(t).Named("server"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.CreateNamespace(ctx, "acme"); err != nil && !bytes.Contains([]byte(err.Error()), []byte("conflict")) {
		t.Fatal(err)
	}
	tok, err := s.CreateToken(ctx, "test-admin", store.Grant{Namespace: "*", Role: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	return s, client{t: t, base: s.URL, token: tok}
}

// hookReceiver is a webhook endpoint that checks every request's
// signature and keeps the notifications.
type hookReceiver struct {
	secret string
	mu     sync.Mutex
	notes  []proto.AlertNotification
	bad    []string
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := alerts.Verify(h.secret, r.Header, body, time.Now(), 5*time.Minute); err != nil {
		h.bad = append(h.bad, err.Error())
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var n proto.AlertNotification
	if err := json.Unmarshal(body, &n); err != nil {
		h.bad = append(h.bad, "body "+string(body))
	}
	h.notes = append(h.notes, n)
}

func (h *hookReceiver) got() ([]proto.AlertNotification, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]proto.AlertNotification(nil), h.notes...), append([]string(nil), h.bad...)
}

// TestAlertsEndToEnd: a real cluster of three agents and PostgreSQL under
// dbpilot-server with the alert engine. Steady state: no page (the agents'
// summaries arrive). The primary's host is killed (repairs off): its
// agent goes silent and agent_silent pages; the replicas fail over. The
// server restarts with repairs on: the node is repaired, reports again,
// and the page resolves. A signed webhook receives exactly one
// notification per transition, and the events API shows alert_firing and
// alert_resolved.
//
// It needs the agents' member summaries (io.dbpilot.member.summary.v1,
// report.summary_interval), which the agent piece of issue 15 adds.
func TestAlertsEndToEnd(t *testing.T) {
	if b, err := os.ReadFile(agentBin); err != nil || !bytes.Contains(b, []byte("summary_interval")) {
		t.Skip("dbpilot-agent does not send member summaries yet (no report.summary_interval): needs the agent piece of issue 15")
	}
	dir := testDir(t)
	recv := &hookReceiver{secret: "e2e-webhook-secret-0123456789"}
	hook := httptest.NewServer(recv)
	defer hook.Close()

	s, c := startAlertServer(t, dir, 0)
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	if code := c.do("POST", "/v1/namespaces/acme/notification-channels", map[string]string{"name": "ops", "kind": "webhook", "url": hook.URL,
		"secret": recv.secret}, nil); code != 201 {
		t.Fatalf("create channel: %d", code)
	}
	var o op
	if code := c.do("POST", "/v1/namespaces/acme/clusters", map[string]any{"name": "billing", "replicas": 3, "plan": "small"}, &o); code != 202 {
		t.Fatalf("create: %d", code)
	}
	if done := c.waitOp("acme", o.ID, 4*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("create failed: %+v", done)
	}
	var cl clusterOut
	testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, "a Ready cluster with a primary and 3 healthy members", func() error {
		c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, &cl)
		healthy := 0
		for _, m := range cl.Members {
			if m.Healthy && m.State == "running" {
				healthy++
			}
		}
		if cl.Phase != store.PhaseReady || cl.Primary == "" || healthy != 3 {
			return fmt.Errorf("cluster %+v", cl)
		}
		return nil
	})
	type alertList struct {
		Items []proto.Alert `json:"items"`
	}
	firingPages := func() []proto.Alert {
		var l alertList
		c.do("GET", "/v1/namespaces/acme/alerts?state=firing&severity=page", nil, &l)
		return l.Items
	}
	// Steady state: 12 s (past 3 × the 3 s summary interval) without a
	// page: every member's summaries arrive.
	time.Sleep(12 * time.Second)
	if p := firingPages(); len(p) != 0 {
		t.Fatalf("pages in a healthy cluster: %+v", p)
	}

	victim := cl.Primary
	h := handlesOf(t, s, cl.ID)[victim]
	if err := syscall.Kill(-h.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 -%d (%s): %v", h.PID, victim, err)
	}
	killed := time.Now()
	silentID := alerts.Fingerprint(alerts.RuleAgentSilent, "acme", "default", "billing", victim, "")
	testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, "agent_silent pages for the killed primary "+victim, func() error {
		for _, a := range firingPages() {
			if a.ID == silentID {
				return nil
			}
		}
		return fmt.Errorf("firing pages %+v", firingPages())
	})
	t.Logf("agent_silent fired %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	testutil.Eventually(t, 90*time.Second, 250*time.Millisecond, "a replica took over", func() error {
		c.do("GET", "/v1/namespaces/acme/clusters/billing", nil, &cl)
		if cl.Primary == victim || cl.Primary == "" {
			return fmt.Errorf("primary %q", cl.Primary)
		}
		return nil
	})

	// Restart the server with repairs on: the node comes back.
	s.Close()
	closed = true
	s, c = startAlertServer(t, dir, time.Second)
	closed = false
	testutil.Eventually(t, 3*time.Minute, 500*time.Millisecond, "the page resolves once "+victim+" is repaired and reports", func() error {
		var a proto.Alert
		c.do("GET", "/v1/namespaces/acme/alerts/"+silentID, nil, &a)
		if a.State != proto.AlertResolved {
			return fmt.Errorf("agent_silent %+v", a)
		}
		if p := firingPages(); len(p) != 0 {
			return fmt.Errorf("pages still firing: %+v", p)
		}
		return nil
	})

	// The events API shows the transitions.
	var evs struct {
		Items []struct {
			Type string            `json:"type"`
			Data alerts.AlertEvent `json:"data"`
		} `json:"items"`
	}
	c.do("GET", "/v1/namespaces/acme/events?cluster=billing&limit=1000", nil, &evs)
	seen := map[string]int{}
	for _, e := range evs.Items {
		if e.Data.AlertID == silentID {
			seen[e.Type]++
		}
	}
	if seen[alerts.TypeAlertFiring] != 1 || seen[alerts.TypeAlertResolved] != 1 {
		t.Errorf("agent_silent events %v, want one alert_firing and one alert_resolved", seen)
	}

	// The webhook: signed, one notification per transition.
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "the webhook got agent_silent firing and resolved", func() error {
		notes, _ := recv.got()
		n := 0
		for _, x := range notes {
			if x.Alert.ID == silentID {
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("%d notifications for agent_silent", n)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // a duplicate would arrive now
	notes, bad := recv.got()
	if len(bad) > 0 {
		t.Errorf("webhook requests that failed verification: %v", bad)
	}
	per := map[string]int{}
	for _, x := range notes {
		per[x.Alert.Rule+"/"+x.Alert.Node+" "+x.Transition]++
		if x.Alert.Namespace != "acme" || x.Alert.Cluster != "billing" {
			t.Errorf("notification of another cluster: %+v", x)
		}
	}
	for k, n := range per {
		if n != 1 {
			t.Errorf("%s: %d notifications, want exactly 1 (all: %v)", k, n, per)
		}
	}
	if per["agent_silent/"+victim+" firing"] != 1 || per["agent_silent/"+victim+" resolved"] != 1 {
		t.Errorf("notifications %v, want agent_silent/%s firing and resolved", per, victim)
	}
	var ds struct {
		Items []proto.NotificationDelivery `json:"items"`
	}
	c.do("GET", "/v1/namespaces/acme/notification-channels/ops/deliveries", nil, &ds)
	for _, d := range ds.Items {
		if d.Status != proto.DeliveryDelivered {
			t.Errorf("delivery %+v", d)
		}
	}
	t.Logf("notifications: %v", per)
}
