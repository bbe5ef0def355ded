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
func TestAlertsEndToEnd(t *testing.T) {
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

// TestAlertsTicketsNoPages: a real three-node cluster of the shipped
// template (WAL archiving, a daily physical backup job) under
// dbpilot-server with the alert engine on (repairs off), a signed webhook.
// Two planned switchovers notify nothing at all. A failing backup run (the
// repository replaced by a file) raises a backup_failed ticket, which
// resolves after a successful run. A replica stopped gracefully raises a
// replica_not_streaming ticket and no page (its last summary says it was
// stopped), which resolves once one repair pass brought it back. No page is
// sent in the whole test, and every transition is notified exactly once.
func TestAlertsTicketsNoPages(t *testing.T) {
	dir := testDir(t)
	recv := &hookReceiver{secret: "e2e-webhook-secret-0123456789"}
	hook := httptest.NewServer(recv)
	defer hook.Close()
	s, c := startAlertServer(t, dir, 0) // repairs off: a stopped replica stays stopped until repaired below
	defer s.Close()
	if code := c.do("POST", "/v1/namespaces/acme/notification-channels", map[string]string{"name": "ops", "kind": "webhook", "url": hook.URL,
		"secret": recv.secret}, nil); code != 201 {
		t.Fatalf("create channel: %d", code)
	}
	var o op
	if code := c.do("POST", "/v1/namespaces/acme/clusters", map[string]any{"name": "ledger", "replicas": 3, "plan": "small"}, &o); code != 202 {
		t.Fatalf("create: %d", code)
	}
	if done := c.waitOp("acme", o.ID, 4*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("create failed: %+v", done)
	}
	// A stopped replica tickets after 20 s here (default: 5 minutes); a
	// replica re-pointed by a switchover streams again well within that.
	if code := c.do("PUT", "/v1/namespaces/acme/clusters/ledger/alert-thresholds", map[string]string{"replica_for": "20s"}, nil); code != 200 {
		t.Fatalf("put alert-thresholds: %d", code)
	}
	type alertList struct {
		Items []proto.Alert `json:"items"`
	}
	alertsNow := func(q string) []proto.Alert {
		var l alertList
		c.do("GET", "/v1/namespaces/acme/alerts?cluster=ledger&"+q, nil, &l)
		return l.Items
	}
	var cl clusterOut
	ready := func() error {
		c.do("GET", "/v1/namespaces/acme/clusters/ledger", nil, &cl)
		healthy := 0
		for _, m := range cl.Members {
			if m.Healthy && m.State == "running" && (m.Role == "primary" || (m.Streaming != nil && *m.Streaming)) {
				healthy++
			}
		}
		if cl.Phase != store.PhaseReady || cl.Primary == "" || healthy != 3 {
			return fmt.Errorf("cluster %+v", cl)
		}
		if a := alertsNow("state=firing"); len(a) != 0 {
			return fmt.Errorf("firing: %+v", a)
		}
		return nil
	}
	testutil.Eventually(t, 90*time.Second, 250*time.Millisecond, "a Ready, quiet cluster", ready)
	// Past 3 summary intervals: the agents are heard, nothing fires.
	time.Sleep(10 * time.Second)
	if a := alertsNow("state=firing"); len(a) != 0 {
		t.Fatalf("alerts firing in a healthy cluster: %+v", a)
	}

	// 1. Planned switchovers: not one notification.
	before := len(func() []proto.AlertNotification { n, _ := recv.got(); return n }())
	for i := 0; i < 2; i++ {
		old := cl.Primary
		var sw op
		if code := c.do("POST", "/v1/namespaces/acme/clusters/ledger/switchover", map[string]string{"reason": "alerts e2e"}, &sw); code != 202 {
			t.Fatalf("switchover: %d", code)
		}
		if done := c.waitOp("acme", sw.ID, 2*time.Minute); done.State != store.OpSucceeded {
			t.Fatalf("switchover failed: %+v", done)
		}
		testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, "a new primary, cluster quiet", func() error {
			if err := ready(); err != nil {
				return err
			}
			if cl.Primary == old {
				return fmt.Errorf("primary still %s", old)
			}
			return nil
		})
	}
	time.Sleep(12 * time.Second) // what a switchover could raise would be firing by now
	if notes, _ := recv.got(); len(notes) != before {
		t.Fatalf("notifications during planned switchovers: %+v", notes[before:])
	}
	for _, a := range alertsNow("") {
		if a.FiredAt != nil {
			t.Errorf("an alert fired around the switchovers: %+v", a)
		}
	}

	// 2. A failing backup run: a ticket naming the job; a good run resolves it.
	repo := s.Process.BackupRepository(cl.ID)
	if err := os.Rename(repo, repo+".aside"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(repo, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var bk op
	if code := c.do("POST", "/v1/namespaces/acme/clusters/ledger/backups", map[string]string{"job": "daily"}, &bk); code != 202 {
		t.Fatalf("backup: %d", code)
	}
	if done := c.waitOp("acme", bk.ID, 3*time.Minute); done.State != store.OpFailed {
		t.Fatalf("backup into a file succeeded? %+v", done)
	}
	backupID := alerts.Fingerprint(alerts.RuleBackupFailed, "acme", "default", "ledger", "", "daily")
	var failed proto.Alert
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "backup_failed fires for job daily", func() error {
		for _, a := range alertsNow("state=firing") {
			if a.Rule == alerts.RuleBackupFailed && a.Subject == "daily" {
				failed = a
				return nil
			}
		}
		return fmt.Errorf("firing: %+v", alertsNow("state=firing"))
	})
	if failed.Severity != proto.SeverityTicket {
		t.Errorf("backup_failed: %+v, want a ticket", failed)
	}
	if failed.ID != backupID {
		t.Logf("backup_failed id %s (node %q), fingerprint without node %s", failed.ID, failed.Node, backupID)
	}
	if err := os.Remove(repo); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(repo+".aside", repo); err != nil {
		t.Fatal(err)
	}
	if code := c.do("POST", "/v1/namespaces/acme/clusters/ledger/backups", map[string]string{"job": "daily"}, &bk); code != 202 {
		t.Fatalf("backup: %d", code)
	}
	if done := c.waitOp("acme", bk.ID, 3*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("backup after the repository came back: %+v", done)
	}
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "backup_failed resolves", func() error {
		var a proto.Alert
		c.do("GET", "/v1/namespaces/acme/alerts/"+failed.ID, nil, &a)
		if a.State != proto.AlertResolved {
			return fmt.Errorf("%+v", a)
		}
		return nil
	})

	// 3. A replica stopped gracefully: a ticket, not a page.
	victim := ""
	for _, m := range cl.Members {
		if m.Role == "replica" {
			victim = m.Name
		}
	}
	h := handlesOf(t, s, cl.ID)[victim]
	if victim == "" || h.PID == 0 {
		t.Fatalf("no replica in %+v", cl)
	}
	if err := syscall.Kill(h.PID, syscall.SIGTERM); err != nil { // the agent alone: its graceful stop
		t.Fatal(err)
	}
	stopID := alerts.Fingerprint(alerts.RuleReplicaNotStreaming, "acme", "default", "ledger", victim, "")
	testutil.Eventually(t, 60*time.Second, 100*time.Millisecond, "replica_not_streaming fires for the stopped "+victim, func() error {
		var a proto.Alert
		c.do("GET", "/v1/namespaces/acme/alerts/"+stopID, nil, &a)
		if a.FiredAt == nil {
			return fmt.Errorf("%+v", a)
		}
		return nil
	})
	// One repair pass brings the stopped node back.
	s.Repairer.Check(context.Background())
	testutil.Eventually(t, 3*time.Minute, 500*time.Millisecond, "the repaired replica streams again and the ticket resolves", func() error {
		var a proto.Alert
		c.do("GET", "/v1/namespaces/acme/alerts/"+stopID, nil, &a)
		if a.State != proto.AlertResolved {
			return fmt.Errorf("%+v", a)
		}
		return ready()
	})

	// The webhook: no page at all; each transition exactly once.
	time.Sleep(3 * time.Second) // a duplicate would arrive now
	notes, bad := recv.got()
	if len(bad) > 0 {
		t.Errorf("webhook requests that failed verification: %v", bad)
	}
	per := map[string]int{}
	for _, x := range notes {
		per[x.Alert.Rule+"/"+x.Alert.Node+"/"+x.Alert.Subject+" "+x.Transition]++
		if x.Alert.Severity == proto.SeverityPage {
			t.Errorf("a page was sent: %+v", x)
		}
	}
	for k, n := range per {
		if n != 1 {
			t.Errorf("%s: %d notifications, want exactly 1 (all: %v)", k, n, per)
		}
	}
	for _, want := range []string{
		"backup_failed/" + failed.Node + "/daily firing", "backup_failed/" + failed.Node + "/daily resolved",
		"replica_not_streaming/" + victim + "/ firing", "replica_not_streaming/" + victim + "/ resolved",
	} {
		if per[want] != 1 {
			t.Errorf("no %q notification (all: %v)", want, per)
		}
	}
	t.Logf("notifications: %v", per)
}
