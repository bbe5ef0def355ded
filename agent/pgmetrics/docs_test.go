package pgmetrics_test

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dbpilot/dbpilot/agent/pgmetrics"
)

// TestDocumented: docs/metrics.md lists every metric the collector can
// report, with its labels, and nothing it does not report.
func TestDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `((?:pg_|dbpilot_filesystem_)[a-z_]+)` \\| [a-z]+ \\| ([^|]*)\\|")
	documented := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if m := row.FindStringSubmatch(l); m != nil {
			documented[m[1]] = normLabels(strings.NewReplacer("`", "", " ", "").Replace(m[2]))
		}
	}
	ch := make(chan *prometheus.Desc, 200)
	pgmetrics.New(nil, nil).Describe(ch)
	close(ch)
	descRE := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	described := map[string]bool{}
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot parse %s", d)
		}
		described[m[1]] = true
		labels, ok := documented[m[1]]
		switch {
		case !ok:
			t.Errorf("%s is not in docs/metrics.md", m[1])
		case labels != normLabels(m[2]):
			t.Errorf("%s: docs/metrics.md lists labels %q, the collector has %q", m[1], labels, normLabels(m[2]))
		}
	}
	for name := range documented {
		if !described[name] {
			t.Errorf("docs/metrics.md lists %s, which the collector does not report", name)
		}
	}
	if len(described) < 60 {
		t.Errorf("only %d metrics described", len(described))
	}
}

func normLabels(s string) string {
	var ls []string
	for _, l := range strings.Split(s, ",") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	sort.Strings(ls)
	return strings.Join(ls, ",")
}
