// Package archtest checks the import rules between dbpilot's packages: the
// layering that docs/architecture.md draws. It runs `go list` on the
// module, so it needs the go tool (as every test run has).
package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/dbpilot/dbpilot"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func list(t *testing.T, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = "../.."
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	return pkgs
}

func rel(p string) string { return strings.TrimPrefix(strings.TrimPrefix(p, module), "/") }

// TestEtcdClientOnlyInTheContract: only the etcd contract packages speak
// clientv3 (everything else goes through them), plus the embedded-etcd
// helper that starts a server.
func TestEtcdClientOnlyInTheContract(t *testing.T) {
	allowed := func(p string) bool {
		return p == "agent/dcs" || p == "agent/dcs/admin" || p == "internal/embedetcd"
	}
	for _, p := range list(t, "./...") {
		if slices.Contains(p.Imports, "go.etcd.io/etcd/client/v3") && !allowed(rel(p.ImportPath)) {
			t.Errorf("%s imports go.etcd.io/etcd/client/v3: use agent/dcs (the agent's session or the admin side)", rel(p.ImportPath))
		}
	}
}

// TestBinaryDependencies: what each binary must not link.
func TestBinaryDependencies(t *testing.T) {
	forbidden := map[string][]string{
		"cmd/dbpilot-agent": {"github.com/dapr/", "go.etcd.io/etcd/server"}, // SQLite and goose: the local backup store
		"cmd/dbpilot-host":  {"modernc.org/sqlite", "github.com/jackc/pgx", "github.com/pressly/goose", "go.etcd.io/etcd/"},
		"cmd/dbpilot":       {"modernc.org/sqlite", "github.com/jackc/pgx", "go.etcd.io/etcd/server"},
	}
	for bin, bad := range forbidden {
		ps := list(t, "./"+bin)
		if len(ps) != 1 {
			t.Fatalf("go list ./%s: %d packages", bin, len(ps))
		}
		for _, d := range ps[0].Deps {
			for _, b := range bad {
				if strings.HasPrefix(d, b) {
					t.Errorf("%s links %s (forbidden prefix %s)", bin, d, b)
				}
			}
		}
	}
}

// layers is the import rule of docs/layers.md: for each package of ours,
// the packages of ours it may import (a trailing "/" allows a subtree).
// A package not listed may import anything of ours except what
// forbiddenFrom says.
var layers = map[string][]string{
	"proto":              nil,
	"proto/keyspace":     nil,
	"handlers":           nil,
	"agent/ha":           nil, // the pure policy: no I/O, nothing of ours
	"agent/postgres":     nil,
	"agent/pgmetrics":    nil, // reads the local server through an interface *postgres.Instance satisfies
	"agent/fenceguard":   nil,
	"agent/httpapi":      {"proto"}, // serves proto's query insight types
	"agent/dcs":          {"proto/keyspace"},
	"agent/dcs/admin":    {"agent/dcs", "proto/keyspace"},
	"agent/report":       {"proto"},
	"agent/config":       {"proto", "handlers", "agent/postgres"},
	"agent/backup":       {"proto", "proto/keyspace", "agent/postgres", "internal/localhost"},
	"catalog":            {"proto", "handlers"},
	"controlplane/store": {"proto"},
	// The alert engine: evaluation and state machine pure, the loop over
	// the store; the server wires it to the projection.
	"controlplane/alerts": {"proto", "catalog", "controlplane/store"},
	"infra":               {"proto", "catalog", "internal/localhost"},
	"infra/fleet":         {"infra", "controlplane/store", "proto", "catalog", "internal/localhost"},
	"internal/testutil":   nil,
	"internal/localhost":  nil,
	"internal/embedetcd":  {"internal/localhost"},
}

// forbiddenFrom: subtrees that a whole side of the system must not reach.
var forbiddenFrom = []struct{ from, to, why string }{
	{"agent", "controlplane/", "the agent runs without the control plane"},
	{"agent", "infra", "the agent knows nothing of providers"},
	{"agent", "catalog", "templates reach the agent as rendered config"},
	{"controlplane", "agent/", "the control plane speaks to agents through proto and the etcd contract (agent/dcs/admin) only"},
}

func allowedImport(allow []string, to string) bool {
	for _, a := range allow {
		if to == a || (strings.HasSuffix(a, "/") && strings.HasPrefix(to, a)) {
			return true
		}
	}
	return false
}

// TestLayers enforces the table above on every package's imports.
func TestLayers(t *testing.T) {
	for _, p := range list(t, "./...") {
		from := rel(p.ImportPath)
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			to := rel(imp)
			if allow, ok := layers[from]; ok && !allowedImport(allow, to) {
				t.Errorf("%s imports %s: not allowed by docs/layers.md", from, to)
			}
			for _, f := range forbiddenFrom {
				if (from == f.from || strings.HasPrefix(from, f.from+"/")) && (to == f.to || strings.HasPrefix(to, f.to)) &&
					!(f.from == "controlplane" && (to == "agent/dcs" || to == "agent/dcs/admin")) &&
					!(f.from == "agent" && strings.HasPrefix(from, "agent/localcluster")) {
					t.Errorf("%s imports %s: %s", from, to, f.why)
				}
			}
		}
	}
}

// TestLayersTableIsCurrent: every package named in the table exists, so
// the table cannot silently drift from the tree.
func TestLayersTableIsCurrent(t *testing.T) {
	have := map[string]bool{}
	for _, p := range list(t, "./...") {
		have[rel(p.ImportPath)] = true
	}
	for from := range layers {
		if !have[from] {
			t.Errorf("layers names %s, which is not a package any more", from)
		}
	}
}
