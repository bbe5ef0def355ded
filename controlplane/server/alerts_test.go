package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/controlplane/alerts"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// TestAlertsAPI: the alerts, silences, notification channels and
// threshold endpoints over the real server and store: filters, ack,
// silence, the webhook secret never returned, validation naming the
// field, dapr_binding refused without a sidecar, tenants isolated.
func TestAlertsAPI(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Store.CreateNamespace(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	seedCluster(t, s.Store, "c-al", "acme", "db")
	now := time.Now().UTC()
	id := alerts.Fingerprint(alerts.RuleAgentSilent, "acme", "default", "db", "node1", "")
	for _, a := range []store.Alert{
		{ID: id, Namespace: "acme", Project: "default", Cluster: "db", ClusterID: "c-al", Node: "node1", Rule: alerts.RuleAgentSilent, Severity: proto.SeverityPage,
			State: proto.AlertFiring, Summary: "node node1: silent", FirstSeen: now, LastSeen: now, FiredAt: now, UpdatedAt: now},
		{ID: "00000000000000aa", Namespace: "acme", Project: "default", Cluster: "db", ClusterID: "c-al", Rule: alerts.RuleBackupStale, Severity: proto.SeverityTicket,
			State: proto.AlertResolved, FiredAt: now.Add(-time.Hour), ResolvedAt: now, UpdatedAt: now.Add(-time.Minute)},
		{ID: "00000000000000bb", Namespace: "other", Project: "default", Cluster: "x", ClusterID: "c-x", Rule: alerts.RuleFailover, Severity: proto.SeverityInfo,
			State: proto.AlertFiring, UpdatedAt: now},
	} {
		if err := s.Store.SaveAlert(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	type list struct {
		Items []proto.Alert `json:"items"`
	}
	var l list
	if code := admin.do("GET", "/v1/namespaces/acme/alerts", nil, &l); code != 200 || len(l.Items) != 2 || l.Items[0].ID != id {
		t.Fatalf("list: %d %+v", code, l)
	}
	for q, want := range map[string]int{"state=firing": 1, "state=resolved": 1, "severity=ticket": 1, "severity=info": 0, "cluster=db": 2, "cluster=nope": 0} {
		l = list{}
		if code := admin.do("GET", "/v1/namespaces/acme/alerts?"+q, nil, &l); code != 200 || len(l.Items) != want {
			t.Errorf("?%s: %d, %d items, want %d", q, code, len(l.Items), want)
		}
	}
	var e apiErr
	for q, field := range map[string]string{"state=open": "state", "severity=urgent": "severity", "cluster=BAD_": "cluster", "limit=0": "limit"} {
		if code := admin.do("GET", "/v1/namespaces/acme/alerts?"+q, nil, &e); code != 400 || e.Field != field {
			t.Errorf("?%s: %d %+v, want 400 naming %s", q, code, e, field)
		}
	}
	if code := admin.do("GET", "/v1/namespaces/acme/alerts/xyz", nil, &e); code != 400 || e.Field != "id" {
		t.Errorf("bad id: %d %+v", code, e)
	}
	if code := admin.do("GET", "/v1/namespaces/acme/alerts/00000000000000bb", nil, &e); code != 404 {
		t.Errorf("another namespace's alert: %d", code)
	}

	// Ack and silence need the operator role.
	_, viewer := createToken(t, admin, "alerts-viewer", "acme", "viewer")
	_, operator := createToken(t, admin, "alerts-operator", "acme", "operator")
	vc, oc := client{t: t, base: s.URL, token: viewer}, client{t: t, base: s.URL, token: operator}
	if code := vc.do("POST", "/v1/namespaces/acme/alerts/"+id+"/ack", nil, &e); code != 403 {
		t.Errorf("viewer ack: %d", code)
	}
	var al proto.Alert
	if code := oc.do("POST", "/v1/namespaces/acme/alerts/"+id+"/ack", nil, &al); code != 200 || al.AckedAt == nil || !strings.Contains(al.AckedBy, "alerts-operator") {
		t.Errorf("ack: %d %+v", code, al)
	}
	if code := oc.do("POST", "/v1/namespaces/acme/alerts/00000000000000aa/ack", nil, &e); code != 409 {
		t.Errorf("ack a resolved alert: %d %+v", code, e)
	}
	for body, field := range map[string]string{`{"duration":"2h"}`: "reason", `{"duration":"1s","reason":"x"}`: "duration",
		`{"duration":"2h","reason":"x","until":"y"}`: "until"} {
		if code := oc.do("POST", "/v1/namespaces/acme/alerts/"+id+"/silence", body, &e); code != 400 || e.Field != field {
			t.Errorf("silence %s: %d %+v, want 400 naming %s", body, code, e, field)
		}
	}
	al = proto.Alert{}
	if code := oc.do("POST", "/v1/namespaces/acme/alerts/"+id+"/silence", map[string]string{"duration": "2h", "reason": "disk swap"}, &al); code != 200 ||
		al.SilencedUntil == nil || al.SilenceReason != "disk swap" || al.SilencedUntil.Sub(now) < 119*time.Minute {
		t.Errorf("silence: %d %+v", code, al)
	}
	al = proto.Alert{}
	if vc.do("GET", "/v1/namespaces/acme/alerts/"+id, nil, &al); al.SilenceReason != "disk swap" || al.State != proto.AlertFiring {
		t.Errorf("silenced alert as a viewer sees it: %+v", al)
	}

	// Channels: admin only; the secret is write-only.
	hook := map[string]string{"name": "ops", "kind": "webhook", "url": "https://hooks.example.com/dbpilot", "secret": "0123456789abcdef0123"}
	if code := oc.do("POST", "/v1/namespaces/acme/notification-channels", hook, &e); code != 403 {
		t.Errorf("operator creates a channel: %d", code)
	}
	var ch proto.NotificationChannel
	if code := admin.do("POST", "/v1/namespaces/acme/notification-channels", hook, &ch); code != 201 || ch.Secret != "" || !ch.HasSecret || ch.URL != hook["url"] {
		t.Fatalf("create channel: %d %+v", code, ch)
	}
	if code := admin.do("POST", "/v1/namespaces/acme/notification-channels", hook, &e); code != 409 || e.Field != "name" {
		t.Errorf("duplicate channel: %d %+v", code, e)
	}
	for _, bad := range []struct {
		body  map[string]string
		field string
	}{
		{map[string]string{"name": "a", "kind": "webhook", "url": "ftp://x", "secret": "0123456789abcdef"}, "url"},
		{map[string]string{"name": "a", "kind": "webhook", "url": "https://u:p@x", "secret": "0123456789abcdef"}, "url"},
		{map[string]string{"name": "a", "kind": "webhook", "url": "https://x"}, "secret"},
		{map[string]string{"name": "a", "kind": "webhook", "url": "https://x", "secret": "short"}, "secret"},
		{map[string]string{"name": "A!", "kind": "webhook", "url": "https://x", "secret": "0123456789abcdef"}, "name"},
		{map[string]string{"name": "a", "kind": "email"}, "kind"},
		{map[string]string{"name": "a", "kind": "dapr_binding"}, "binding"},
	} {
		if code := admin.do("POST", "/v1/namespaces/acme/notification-channels", bad.body, &e); code != 400 || e.Field != bad.field {
			t.Errorf("channel %v: %d %+v, want 400 naming %s", bad.body, code, e, bad.field)
		}
	}
	if code := admin.do("POST", "/v1/namespaces/acme/notification-channels", map[string]string{"name": "b", "kind": "dapr_binding", "binding": "pager"}, &e); code != 409 ||
		e.Field != "kind" || !strings.Contains(e.Message, "Dapr sidecar") {
		t.Errorf("dapr_binding without a sidecar: %d %+v", code, e)
	}
	var chs struct {
		Items []map[string]any `json:"items"`
	}
	if code := vc.do("GET", "/v1/namespaces/acme/notification-channels", nil, &chs); code != 200 || len(chs.Items) != 1 || chs.Items[0]["secret"] != nil || chs.Items[0]["has_secret"] != true {
		t.Errorf("list channels: %d %+v", code, chs)
	}
	if err := s.Store.CreateDelivery(ctx, store.Delivery{ID: "dl-1", Namespace: "acme", Channel: "ops", AlertID: id, Transition: proto.TransitionFiring,
		Status: proto.DeliveryFailed, Attempts: 7, LastError: "webhook answered 500", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	var ds struct {
		Items []proto.NotificationDelivery `json:"items"`
	}
	if code := vc.do("GET", "/v1/namespaces/acme/notification-channels/ops/deliveries", nil, &ds); code != 200 || len(ds.Items) != 1 || ds.Items[0].Attempts != 7 {
		t.Errorf("deliveries: %d %+v", code, ds)
	}
	if code := admin.do("DELETE", "/v1/namespaces/acme/notification-channels/ops", nil, nil); code != 204 {
		t.Errorf("delete channel: %d", code)
	}
	if code := admin.do("GET", "/v1/namespaces/acme/notification-channels/ops/deliveries", nil, &e); code != 404 {
		t.Errorf("deliveries of a deleted channel: %d", code)
	}

	// Thresholds: operator writes, the field is named, the body comes back.
	var th proto.AlertThresholds
	if code := vc.do("GET", "/v1/namespaces/acme/clusters/db/alert-thresholds", nil, &th); code != 200 || th.DiskPagePct != nil {
		t.Errorf("no overrides: %d %+v", code, th)
	}
	if code := oc.do("PUT", "/v1/namespaces/acme/clusters/db/alert-thresholds", `{"disk_ticket_pct":90,"disk_page_pct":80}`, &e); code != 400 || e.Field != "disk_ticket_pct" {
		t.Errorf("inverted disk thresholds: %d %+v", code, e)
	}
	if code := oc.do("PUT", "/v1/namespaces/acme/clusters/db/alert-thresholds", `{"repeat_interval":"soon"}`, &e); code != 400 || e.Field != "repeat_interval" {
		t.Errorf("bad repeat_interval: %d %+v", code, e)
	}
	if code := oc.do("PUT", "/v1/namespaces/acme/clusters/db/alert-thresholds", `{"disk_page_pct":90,"repeat_interval":"1h"}`, &th); code != 200 || th.DiskPagePct == nil || *th.DiskPagePct != 90 {
		t.Errorf("put: %d %+v", code, th)
	}
	th = proto.AlertThresholds{}
	if vc.do("GET", "/v1/namespaces/acme/clusters/db/alert-thresholds", nil, &th); th.RepeatInterval != "1h" {
		t.Errorf("get after put: %+v", th)
	}
}
