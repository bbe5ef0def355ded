package infra

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/proto"
)

func TestNodeRel(t *testing.T) {
	for _, tc := range []struct {
		cluster, node, want string
	}{
		{"c-1", "node1", "c-1/node1"},
		{"c-1", "..", ""}, {"c-1", ".", ""}, {"c-1", "", ""}, {"c-1", "/etc", ""}, {"c-1", "a/b", ""}, {"c-1", "%2e%2e", ""},
		{"..", "node1", ""}, {"", "node1", ""}, {"/", "node1", ""}, {"c/../..", "node1", ""}, {"C1", "node1", ""},
	} {
		got, err := nodeRel(tc.cluster, tc.node)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("nodeRel(%q, %q) = %q, %v; want %q", tc.cluster, tc.node, got, err, tc.want)
		}
	}
}

// confinedRoot is a process provider root inside a folder that also holds
// files that must survive (outside the root, and a sibling cluster's).
func confinedRoot(t *testing.T) (p *Process, root string, keep []string) {
	t.Helper()
	top := t.TempDir()
	root = filepath.Join(top, "nodes")
	p, err := NewProcess(root, "/bin/false", zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	keep = []string{filepath.Join(top, "outside"), filepath.Join(root, "c-2", "node1", "data", "PG_VERSION"), filepath.Join(root, "sentinel")}
	for _, f := range keep {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p, root, keep
}

func checkKept(t *testing.T, keep []string) {
	t.Helper()
	for _, f := range keep {
		if b, err := os.ReadFile(f); err != nil || string(b) != "keep" {
			t.Errorf("%s did not survive: %v", f, err)
		}
	}
}

// TestProcessConfined: the process provider refuses hostile names in
// every method, ignores a handle's folder when deleting, and removes
// through its os.Root: a node folder that is a symlink to outside the
// root is unlinked, its target untouched.
func TestProcessConfined(t *testing.T) {
	ctx := context.Background()
	p, root, keep := confinedRoot(t)
	top := filepath.Dir(root)
	for _, n := range []string{"..", ".", "../c-2", "/", "%2e%2e", ""} {
		if err := p.Delete(ctx, NodeSpec{ClusterID: "c-1", Node: n}, nil); err == nil {
			t.Errorf("Delete node %q: no error", n)
		}
		if _, err := p.Create(ctx, NodeSpec{ClusterID: "c-1", Node: n}, nil); err == nil {
			t.Errorf("Create node %q: no error", n)
		}
		if err := p.DeleteCluster(ctx, n); err == nil {
			t.Errorf("DeleteCluster %q: no error", n)
		}
		if _, err := p.Credentials(n); err == nil {
			t.Errorf("Credentials %q: no error", n)
		}
	}
	// A handle naming another folder does not redirect the delete.
	h, _ := json.Marshal(ProcessHandle{Dir: top, Config: filepath.Join(top, "agent.yaml")})
	if err := p.Delete(ctx, NodeSpec{ClusterID: "c-1", Node: "node1"}, h); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Restart(ctx, NodeSpec{ClusterID: "c-1", Node: "node1"}, h); err == nil {
		t.Error("Restart with a handle outside the node's folder: no error")
	}
	// Symlinks planted in the tree (by a compromised agent running as the
	// node's user) cannot lead a delete out of the root.
	if err := os.MkdirAll(filepath.Join(root, "c-3"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(top, filepath.Join(root, "c-3", "node1")); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, NodeSpec{ClusterID: "c-3", Node: "node1"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(top, filepath.Join(root, "c-4")); err != nil {
		t.Fatal(err)
	}
	if err := p.DeleteCluster(ctx, "c-4"); err != nil {
		t.Fatal(err)
	}
	checkKept(t, keep)
	if _, err := os.Lstat(filepath.Join(root, "c-3", "node1")); !os.IsNotExist(err) {
		t.Errorf("the symlink node folder is still there: %v", err)
	}
}

// TestHostRunnerRefusesHostileAssignments: a host runner whose server
// (or an attacker in between) assigns hostile cluster ids or node names
// refuses them before any file operation, and its clean-up of unassigned
// folders stays inside its root.
func TestHostRunnerRefusesHostileAssignments(t *testing.T) {
	top := t.TempDir()
	var acked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			items := []proto.Assignment{}
			for _, a := range [][2]string{{"c-1", ".."}, {"..", "node1"}, {"c-1", "../../.."}, {"/", "x"}, {"c-1", "%2e%2e"}} {
				items = append(items, proto.Assignment{ClusterID: a[0], Node: a[1], State: proto.AssignmentReleasing})
			}
			_ = json.NewEncoder(w).Encode(proto.List[proto.Assignment]{Items: items})
			return
		}
		acked = append(acked, r.Method+" "+r.URL.Path)
		w.WriteHeader(204)
	}))
	defer srv.Close()
	if err := os.MkdirAll(filepath.Join(top, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(top, "root", "host.json"), []byte(`{"id":"h-1","credential":"dbph_x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := NewHostRunner(HostRunnerConfig{Server: srv.URL, Name: "h1", Address: "127.0.0.1", Root: filepath.Join(top, "root"), AgentBin: "/bin/false"}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	keep := []string{filepath.Join(top, "outside"), filepath.Join(top, "root", "host.json"), filepath.Join(top, "root", "nodes", "stray")}
	for _, f := range keep[:1] {
		if err := os.WriteFile(f, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(keep[2], []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An unassigned folder that is a symlink out of the root.
	if err := os.MkdirAll(filepath.Join(top, "root", "nodes", "c-9"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(top, filepath.Join(top, "root", "nodes", "c-9", "node1")); err != nil {
		t.Fatal(err)
	}
	if err := r.enrol(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.reconcile(context.Background()); err == nil {
		t.Error("reconcile accepted hostile assignments")
	}
	if len(acked) != 0 {
		t.Errorf("the runner acknowledged hostile assignments: %v", acked)
	}
	b, _ := os.ReadFile(keep[1])
	if string(b) != `{"id":"h-1","credential":"dbph_x"}` {
		t.Errorf("host.json changed: %q", b)
	}
	for _, f := range []string{keep[0], keep[2]} {
		if b, err := os.ReadFile(f); err != nil || string(b) != "keep" {
			t.Errorf("%s did not survive: %v", f, err)
		}
	}
}
