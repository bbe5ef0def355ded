package catalog

import (
	"errors"
	"strings"
	"testing"
)

func TestShippedTemplatesValid(t *testing.T) {
	ts, err := Shipped()
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) == 0 {
		t.Fatal("no shipped templates")
	}
	if _, ok := Lookup("postgres-15"); !ok {
		t.Fatal("postgres-15 not shipped")
	}
}

func TestParseRejects(t *testing.T) {
	cases := []struct {
		name, doc, field string
	}{
		{"unknown key", "name: x\nengine: postgres\nengine_version: '15'\nagent_version: v\nplans: {s: {cpu: 1, memory_mb: 128, disk_gb: 1}}\nbogus: 1\n", "bogus"},
		{"engine", "name: x\nengine: oracle\nengine_version: '15'\nagent_version: v\nplans: {s: {cpu: 1, memory_mb: 128, disk_gb: 1}}\n", "engine"},
		{"plan cpu", "name: x\nengine: postgres\nengine_version: '15'\nagent_version: v\nplans: {s: {cpu: 0, memory_mb: 128, disk_gb: 1}}\n", "plans.s.cpu"},
		{"no plans", "name: x\nengine: postgres\nengine_version: '15'\nagent_version: v\n", "plans"},
		{"alerts duration", "name: x\nengine: postgres\nengine_version: '15'\nagent_version: v\nplans: {s: {cpu: 1, memory_mb: 128, disk_gb: 1}}\nalerts: {backup_max_age: soon}\n", "alerts.backup_max_age"},
		{"alerts disk order", "name: x\nengine: postgres\nengine_version: '15'\nagent_version: v\nplans: {s: {cpu: 1, memory_mb: 128, disk_gb: 1}}\nalerts: {disk_ticket_pct: 96, disk_page_pct: 95}\n", "alerts.disk_ticket_pct"},
		{"alerts unknown", "name: x\nengine: postgres\nengine_version: '15'\nagent_version: v\nplans: {s: {cpu: 1, memory_mb: 128, disk_gb: 1}}\nalerts: {disk_pct: 9}\n", "disk_pct"},
		{"name", "name: X_1\nengine: postgres\nengine_version: '15'\nagent_version: v\nplans: {s: {cpu: 1, memory_mb: 128, disk_gb: 1}}\n", "name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("got %v, want an error naming %s", err, c.field)
			}
			var fe FieldError
			if c.field != "bogus" && c.field != "disk_pct" && (!errors.As(err, &fe)) {
				t.Fatalf("not a FieldError: %v", err)
			}
		})
	}
}

// TestParseAlerts: a valid alerts block is kept as written.
func TestParseAlerts(t *testing.T) {
	tpl, err := Parse([]byte("name: x\nengine: postgres\nengine_version: '15'\nagent_version: v\nplans: {s: {cpu: 1, memory_mb: 128, disk_gb: 1}}\nalerts: {disk_ticket_pct: 80, repeat_interval: 1h}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tpl.Alerts == nil || tpl.Alerts.DiskTicketPct == nil || *tpl.Alerts.DiskTicketPct != 80 || tpl.Alerts.RepeatInterval != "1h" {
		t.Fatalf("alerts: %+v", tpl.Alerts)
	}
}
