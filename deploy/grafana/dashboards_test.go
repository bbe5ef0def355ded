// Package grafana_test checks the shape of the Grafana dashboards in
// deploy/grafana: what Grafana needs to import them and what makes them
// usable across clusters. Their queries are run against a real Prometheus
// scraping real agents by controlplane/server TestPrometheusScrapesAgents.
package grafana_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// TestDashboards: the four dashboards parse; each has a unique uid and
// title, the datasource, namespace and cluster variables; every panel has
// a unique id, fits the 24-column grid, reads the ${datasource} Prometheus
// and has at least one query, each with a refId unique in the panel and
// selecting the chosen namespace and cluster.
func TestDashboards(t *testing.T) {
	files, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"cluster-overview.json": true, "replication.json": true, "query-performance.json": true, "backups.json": true}
	if len(files) != len(want) {
		t.Fatalf("dashboards %v, want %d", files, len(want))
	}
	uids, titles := map[string]bool{}, map[string]bool{}
	for _, f := range files {
		if !want[f] {
			t.Errorf("unexpected dashboard %s", f)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID        string  `json:"uid"`
			Title      string  `json:"title"`
			Schema     int     `json:"schemaVersion"`
			Panels     []panel `json:"panels"`
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || uids[d.UID] || d.Title == "" || titles[d.Title] || d.Schema < 30 {
			t.Errorf("%s: uid %q title %q schemaVersion %d: want unique, non-empty, a current schema", f, d.UID, d.Title, d.Schema)
		}
		uids[d.UID], titles[d.Title] = true, true
		vars := map[string]string{}
		for _, v := range d.Templating.List {
			vars[v.Name] = v.Type
		}
		if vars["datasource"] != "datasource" || vars["namespace"] != "query" || vars["cluster"] != "query" {
			t.Errorf("%s: variables %v, want datasource, namespace and cluster", f, vars)
		}
		ids := map[int]bool{}
		queries := 0
		for _, p := range d.Panels {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: panel %q: id %d is not unique", f, p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.X < 0 || p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
				t.Errorf("%s: panel %q: gridPos %+v outside the 24-column grid", f, p.Title, p.GridPos)
			}
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel %q: datasource %+v, want the ${datasource} Prometheus", f, p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				queries++
				if tg.RefID == "" || refs[tg.RefID] {
					t.Errorf("%s: panel %q: refId %q missing or repeated", f, p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				if !strings.Contains(tg.Expr, `namespace=~"$namespace"`) || !strings.Contains(tg.Expr, `cluster=~"$cluster"`) {
					t.Errorf("%s: panel %q: query %q does not select $namespace and $cluster", f, p.Title, tg.Expr)
				}
			}
		}
		if queries < 10 {
			t.Errorf("%s: %d queries", f, queries)
		}
	}
}
