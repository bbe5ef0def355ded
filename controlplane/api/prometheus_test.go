package api

import (
	"slices"
	"testing"

	"github.com/dbpilot/dbpilot/controlplane/store"
)

// TestHostPort: the target is the api_url's host:port, nothing without a
// port or a URL.
func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8008":      "127.0.0.1:8008",
		"http://10.0.0.5:40001/":     "10.0.0.5:40001",
		"http://[::1]:8008":          "[::1]:8008",
		"http://db1.example:8008":    "db1.example:8008",
		"http://127.0.0.1":           "",
		"":                           "",
		"127.0.0.1:8008":             "",
		"http://%zz":                 "",
		"https://node.internal:8443": "node.internal:8443",
	} {
		if got := hostPort(in); got != want {
			t.Errorf("hostPort(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestScrapable: which namespaces' targets a token reads, and that metrics
// grants never count as ranked ones.
func TestScrapable(t *testing.T) {
	g := func(ns, role string) store.Grant { return store.Grant{Namespace: ns, Role: role} }
	for _, tc := range []struct {
		name      string
		grants    []store.Grant
		scrapable []string // nil: every namespace
		ranked    int      // ranked grants left
	}{
		{"metrics on one", []store.Grant{g("a", RoleMetrics)}, []string{"a"}, 0},
		{"metrics on all", []store.Grant{g("a", RoleMetrics), g("*", RoleMetrics)}, nil, 0},
		{"viewer", []store.Grant{g("b", RoleViewer)}, []string{"b"}, 1},
		{"operator and metrics", []store.Grant{g("a", RoleOperator), g("b", RoleMetrics)}, []string{"b", "a"}, 1},
		{"platform admin", []store.Grant{g("*", RoleAdmin)}, nil, 1},
		{"unknown role", []store.Grant{g("c", "root")}, []string{}, 1},
	} {
		p := newPrincipal(store.Token{ID: "tok-1", Grants: tc.grants}, "h")
		got := p.scrapable()
		if (got == nil) != (tc.scrapable == nil) || !slices.Equal(got, tc.scrapable) {
			t.Errorf("%s: scrapable %v, want %v", tc.name, got, tc.scrapable)
		}
		if len(p.Grants) != tc.ranked || len(p.all) != len(tc.grants) {
			t.Errorf("%s: %d ranked of %d grants, want %d of %d", tc.name, len(p.Grants), len(p.all), tc.ranked, len(tc.grants))
		}
		for _, ns := range []string{"a", "b", "*"} {
			if p.rank(ns) > 0 && tc.ranked == 0 {
				t.Errorf("%s: rank in %s is %d from metrics grants alone", tc.name, ns, p.rank(ns))
			}
		}
		if p.platformAdmin() != (tc.name == "platform admin") {
			t.Errorf("%s: platformAdmin %v", tc.name, p.platformAdmin())
		}
	}
}
