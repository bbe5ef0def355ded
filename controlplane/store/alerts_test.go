package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/controlplane/store"
)

// testAlerts: alert rows (save keeps the acknowledgement until the alert
// resolves), silences, threshold overrides, channels and deliveries, and
// that deleting the namespace removes them.
func testAlerts(t *testing.T, s *store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := s.CreateNamespace(ctx, "ns"); err != nil {
		t.Fatal(err)
	}
	a := store.Alert{ID: "f1", Namespace: "ns", Project: "default", Cluster: "db", ClusterID: "c-1", Node: "node1", Rule: "agent_silent",
		Severity: "page", State: "firing", Summary: "silent", FirstSeen: now.Add(-time.Minute), LastSeen: now, FiredAt: now, UpdatedAt: now}
	if err := s.SaveAlert(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := a
	b.ID, b.Cluster, b.Severity, b.State, b.UpdatedAt = "f2", "other", "ticket", "pending", now.Add(-time.Hour)
	if err := s.SaveAlert(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AckAlert(ctx, "ns", "nope", "me", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ack missing: %v", err)
	}
	got, err := s.AckAlert(ctx, "ns", "f1", "tok-1 (me)", now)
	if err != nil || got.AckedBy != "tok-1 (me)" || !got.AckedAt.Equal(now) {
		t.Fatalf("ack: %+v %v", got, err)
	}
	// The engine saves again while firing: the ack stays.
	a.LastSeen = now.Add(time.Second)
	a.LastNotified = now
	if err := s.SaveAlert(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetAlert(ctx, "ns", "f1"); got.AckedBy == "" || !got.LastSeen.Equal(now.Add(time.Second)) || !got.LastNotified.Equal(now) {
		t.Fatalf("after save: %+v", got)
	}
	list, err := s.ListAlerts(ctx, store.AlertFilter{Namespace: "ns"})
	if err != nil || len(list) != 2 || list[0].ID != "f1" {
		t.Fatalf("list: %+v %v", list, err)
	}
	for _, f := range []store.AlertFilter{{Namespace: "ns", State: "pending"}, {Namespace: "ns", Severity: "ticket"}, {Namespace: "ns", Cluster: "other"}} {
		if l, err := s.ListAlerts(ctx, f); err != nil || len(l) != 1 || l[0].ID != "f2" {
			t.Fatalf("filter %+v: %+v %v", f, l, err)
		}
	}
	if l, _ := s.ListAlerts(ctx, store.AlertFilter{Namespace: "other"}); len(l) != 0 {
		t.Fatalf("other namespace sees %+v", l)
	}
	a.State, a.ResolvedAt = "resolved", now.Add(2*time.Second)
	if err := s.SaveAlert(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetAlert(ctx, "ns", "f1"); got.AckedBy != "" || !got.AckedAt.IsZero() || got.State != "resolved" {
		t.Fatalf("resolved keeps the ack: %+v", got)
	}
	if _, err := s.AckAlert(ctx, "ns", "f1", "me", now); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("ack resolved: %v", err)
	}

	// Silences: the one ending last wins; expired ones are ignored.
	for i, until := range []time.Time{now.Add(time.Hour), now.Add(2 * time.Hour), now.Add(-time.Minute)} {
		if err := s.CreateSilence(ctx, store.Silence{ID: "s" + string(rune('a'+i)), Namespace: "ns", AlertID: "f1", Until: until, Reason: "maintenance", CreatedBy: "me", CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	sil, err := s.ActiveSilences(ctx, "ns", now)
	if err != nil || len(sil) != 1 || sil["f1"].ID != "sb" || sil["f1"].Reason != "maintenance" {
		t.Fatalf("silences: %+v %v", sil, err)
	}
	if sil, _ := s.ActiveSilences(ctx, "", now.Add(3*time.Hour)); len(sil) != 0 {
		t.Fatalf("silences later: %+v", sil)
	}

	// Nodes of every cluster in one read.
	now2 := time.Now()
	for _, id := range []string{"c-1", "c-2"} {
		if err := s.CreateCluster(ctx, store.Cluster{ID: id, Namespace: "ns", Project: "default", Name: "db" + id, Phase: "ready", CreatedAt: now2, UpdatedAt: now2},
			store.Operation{ID: "op-" + id, Namespace: "ns", ClusterID: id, Kind: "create", State: "succeeded", CreatedAt: now2, UpdatedAt: now2}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []store.Node{{ClusterID: "c-1", Name: "b", State: "created"}, {ClusterID: "c-1", Name: "a", State: "created"}, {ClusterID: "c-2", Name: "x", State: "created"}} {
		if err := s.UpsertNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	byCluster, err := s.NodesByCluster(ctx)
	if err != nil || len(byCluster) != 2 || len(byCluster["c-1"]) != 2 || byCluster["c-1"][0].Name != "a" || byCluster["c-2"][0].Name != "x" {
		t.Fatalf("nodes by cluster: %+v %v", byCluster, err)
	}
	for _, id := range []string{"c-1", "c-2"} {
		if err := s.DeleteCluster(ctx, id); err != nil {
			t.Fatal(err)
		}
	}

	// Threshold overrides.
	if _, err := s.GetAlertThresholds(ctx, "c-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("thresholds: %v", err)
	}
	for _, body := range []string{`{"disk_ticket_pct":70}`, `{"disk_ticket_pct":75}`} {
		if err := s.PutAlertThresholds(ctx, "c-1", json.RawMessage(body)); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := s.GetAlertThresholds(ctx, "c-1"); err != nil || string(b) != `{"disk_ticket_pct":75}` {
		t.Fatalf("thresholds: %s %v", b, err)
	}
	if all, err := s.AllAlertThresholds(ctx); err != nil || len(all) != 1 || string(all["c-1"]) != `{"disk_ticket_pct":75}` {
		t.Fatalf("all thresholds: %v %v", all, err)
	}

	// Channels and deliveries.
	ch := store.Channel{Namespace: "ns", Name: "ops", Kind: "webhook", URL: "https://example.com/hook", Secret: "0123456789abcdef", CreatedAt: now}
	if err := s.CreateChannel(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateChannel(ctx, ch); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate channel: %v", err)
	}
	if cs, err := s.ListChannels(ctx, "ns"); err != nil || len(cs) != 1 || cs[0] != ch {
		t.Fatalf("channels: %+v %v", cs, err)
	}
	for i := range 3 {
		d := store.Delivery{ID: "d" + string(rune('0'+i)), Namespace: "ns", Channel: "ops", AlertID: "f1", Transition: "firing", Status: "pending",
			CreatedAt: now.Add(time.Duration(i) * time.Second), UpdatedAt: now}
		if err := s.CreateDelivery(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpdateDelivery(ctx, "d2", "delivered", 2, "", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	ds, err := s.ListDeliveries(ctx, "ns", "ops", 2)
	if err != nil || len(ds) != 2 || ds[0].ID != "d2" || ds[0].Status != "delivered" || ds[0].Attempts != 2 || ds[1].ID != "d1" {
		t.Fatalf("deliveries: %+v %v", ds, err)
	}
	// Pruning: the resolved alert f1 (resolved at now+2s), silence sc
	// (ended a minute ago) and deliveries before the cut-off go; the
	// pending f2, the active silences and newer deliveries stay.
	n, err := s.PruneAlertHistory(ctx, now.Add(1500*time.Millisecond))
	if err != nil || n != 3 {
		t.Fatalf("prune: %d %v, want 3 (silence sc, deliveries d0 and d1)", n, err)
	}
	if n, err := s.PruneAlertHistory(ctx, now.Add(3*time.Second)); err != nil || n != 2 {
		t.Fatalf("prune later: %d %v, want 2 (alert f1, delivery d2)", n, err)
	}
	if _, err := s.GetAlert(ctx, "ns", "f2"); err != nil {
		t.Fatalf("pending alert pruned: %v", err)
	}
	if sil, _ := s.ActiveSilences(ctx, "ns", now); len(sil) != 1 {
		t.Fatalf("active silences pruned: %+v", sil)
	}
	if err := s.DeleteChannel(ctx, "ns", "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete missing channel: %v", err)
	}
	if err := s.DeleteNamespace(ctx, "ns"); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.ListAlerts(ctx, store.AlertFilter{}); len(l) != 0 {
		t.Fatalf("alerts after namespace delete: %+v", l)
	}
	if cs, _ := s.ListChannels(ctx, "ns"); len(cs) != 0 {
		t.Fatalf("channels after namespace delete: %+v", cs)
	}
	if ds, _ := s.ListDeliveries(ctx, "ns", "ops", 0); len(ds) != 0 {
		t.Fatalf("deliveries after namespace delete: %+v", ds)
	}
}
