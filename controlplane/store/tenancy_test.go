package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/controlplane/store"
)

// testTenantLifecycle: deleting a namespace revokes the tokens scoped to
// it only, strips its grant from tokens with others, removes its
// templates, events and operations; a namespace created again under the
// name has a new id and starts empty (no templates, events, audit), and
// an old grant does not apply to it.
func testTenantLifecycle(t *testing.T, s *store.Store) {
	ctx := context.Background()
	old, err := s.CreateNamespace(ctx, "acme")
	if err != nil || old.ID == "" {
		t.Fatalf("create: %+v %v", old, err)
	}
	if _, err := s.CreateNamespace(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateToken(ctx, store.Token{ID: "t-acme", Name: "acme-admin", Hash: "h-acme",
		Grants: []store.Grant{{Namespace: "acme", Role: "admin"}}, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateToken(ctx, store.Token{ID: "t-both", Name: "both", Hash: "h-both",
		Grants: []store.Grant{{Namespace: "acme", Role: "viewer"}, {Namespace: "other", Role: "viewer"}}, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateToken(ctx, store.Token{ID: "t-none", Name: "x", Hash: "h-none",
		Grants: []store.Grant{{Namespace: "missing", Role: "admin"}}, CreatedAt: time.Now()}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("grant of a missing namespace: %v, want ErrNotFound", err)
	}
	if err := s.PutTemplate(ctx, store.Template{Namespace: "acme", Name: "pg", Body: json.RawMessage(`{}`), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, store.AuditEntry{At: time.Now(), Actor: "t-acme", Namespace: "acme", Action: "POST", Resource: "/x", Status: 201, Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	c, op := newCluster("c1", "acme", "db")
	op.State = store.OpSucceeded
	if err := s.CreateCluster(ctx, c, op); err != nil {
		t.Fatal(err)
	}
	recordNodes(t, s, c.ID, "node1")
	if r, err := s.ApplyEvent(ctx, store.Event{ID: "e1", Namespace: "acme", Project: "default", Cluster: "db", Node: "node1", Type: "t", Time: time.Now(),
		Data: json.RawMessage(`{}`)}, store.Projection{Scope: store.ScopeUnordered}); err != nil || r != store.Applied {
		t.Fatalf("event: %v %v", r, err)
	}
	if err := s.DeleteNamespace(ctx, "acme"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delete with a cluster: %v, want ErrConflict", err)
	}
	if err := s.DeleteCluster(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteNamespace(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenByHash(ctx, "h-acme"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("token of the deleted namespace still valid: %v", err)
	}
	both, err := s.TokenByHash(ctx, "h-both")
	if err != nil || len(both.Grants) != 1 || both.Grants[0].Namespace != "other" {
		t.Fatalf("token with another grant: %+v %v", both, err)
	}
	again, err := s.CreateNamespace(ctx, "acme")
	if err != nil || again.ID == old.ID {
		t.Fatalf("re-create: %+v %v (old id %s)", again, err, old.ID)
	}
	if ts, err := s.ListTemplates(ctx, "acme"); err != nil || len(ts) != 0 {
		t.Fatalf("templates of the old namespace: %+v %v", ts, err)
	}
	if es, err := s.ListEvents(ctx, store.EventFilter{Namespace: "acme"}); err != nil || len(es) != 0 {
		t.Fatalf("events of the old namespace: %+v %v", es, err)
	}
	if as, err := s.ListAudit(ctx, "acme", 0, 100); err != nil || len(as) != 0 {
		t.Fatalf("audit of the old namespace: %+v %v", as, err)
	}
	if ops, err := s.ListOperations(ctx, "acme", "", store.Page{}); err != nil || len(ops) != 0 {
		t.Fatalf("operations of the old namespace: %+v %v", ops, err)
	}
	// The platform's audit log keeps the old entry.
	if as, err := s.ListAudit(ctx, "", 0, 100); err != nil || len(as) != 1 {
		t.Fatalf("global audit: %+v %v", as, err)
	}
	// A grant bound to the old id (as a token revoked too late, or created
	// in a race, would carry) gives nothing in the new namespace.
	if err := s.CreateToken(ctx, store.Token{ID: "t-stale", Name: "stale", Hash: "h-stale",
		Grants: []store.Grant{{Namespace: "acme", Role: "admin", NamespaceID: old.ID}}, CreatedAt: time.Now()}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("grant bound to an old id: %v, want ErrNotFound", err)
	}
	if _, err := s.DB().ExecContext(ctx, `INSERT INTO tokens (id, name, hash, grants, created_by, created_at) VALUES ('t-old', 'old', 'h-old', '`+
		`[{"namespace":"acme","role":"admin","namespace_id":"`+old.ID+`"}]', '', 0)`); err != nil {
		t.Fatal(err)
	}
	if tok, err := s.TokenByHash(ctx, "h-old"); err != nil || len(tok.Grants) != 0 {
		t.Fatalf("old-id grant is live: %+v %v", tok, err)
	}
	if err := s.DeleteNamespace(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
}

// testPerNamespaceSeq: events and audit entries are numbered 1, 2, … in
// their namespace whatever other namespaces record between them, and
// pagination by those numbers works; old audit entries are pruned.
func testPerNamespaceSeq(t *testing.T, s *store.Store) {
	ctx := context.Background()
	for i, ns := range []string{"a", "b"} {
		if _, err := s.CreateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		c, op := newCluster("c"+ns, ns, "db")
		op.ID = "op-" + ns + string(rune('0'+i))
		if err := s.CreateCluster(ctx, c, op); err != nil {
			t.Fatal(err)
		}
		recordNodes(t, s, c.ID, "node1")
	}
	batch := []store.EventApply{}
	for i := range 6 {
		ns := []string{"a", "b", "b"}[i%3]
		batch = append(batch, store.EventApply{Event: store.Event{ID: "e" + string(rune('0'+i)), Namespace: ns, Project: "default", Cluster: "db", Node: "node1",
			Type: "t", Time: time.Now(), Data: json.RawMessage(`{}`)}, Projection: store.Projection{Scope: store.ScopeUnordered}})
	}
	if _, err := s.ApplyEvents(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]int{"a": 2, "b": 4} {
		es, err := s.ListEvents(ctx, store.EventFilter{Namespace: ns})
		if err != nil || len(es) != want {
			t.Fatalf("%s: %d events %v, want %d", ns, len(es), err, want)
		}
		for i, e := range es {
			if e.Seq != int64(i+1) {
				t.Fatalf("%s: event %d has seq %d, want %d", ns, i, e.Seq, i+1)
			}
		}
		rest, _ := s.ListEvents(ctx, store.EventFilter{Namespace: ns, AfterSeq: 1})
		if len(rest) != want-1 || rest[0].Seq != 2 {
			t.Fatalf("%s after 1: %+v", ns, rest)
		}
	}
	old := time.Now().Add(-48 * time.Hour)
	for i := range 4 {
		ns := []string{"a", "b"}[i%2]
		at := time.Now()
		if i < 2 {
			at = old
		}
		if err := s.Audit(ctx, store.AuditEntry{At: at, Actor: "x", Namespace: ns, Action: "POST", Resource: "/", Status: 200, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	as, err := s.ListAudit(ctx, "b", 0, 10)
	if err != nil || len(as) != 2 || as[0].Seq != 1 || as[1].Seq != 2 {
		t.Fatalf("audit of b: %+v %v", as, err)
	}
	if as, _ := s.ListAudit(ctx, "b", 1, 10); len(as) != 1 || as[0].Seq != 2 {
		t.Fatalf("audit of b after 1: %+v", as)
	}
	n, err := s.PruneAudit(ctx, time.Now().Add(-time.Hour), 100)
	if err != nil || n != 2 {
		t.Fatalf("prune audit: %d %v, want 2", n, err)
	}
	if as, _ := s.ListAudit(ctx, "", 0, 10); len(as) != 2 {
		t.Fatalf("after pruning: %+v", as)
	}
}

// TestStoreFileMode: a SQLite store and the folder it is created in are
// private to the server's user (0600, 0700), and an existing world-
// readable store file is narrowed to 0600.
func TestStoreFileMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "folder")
	path := filepath.Join(dir, "dbpilot.db")
	s := open(t, path)
	if err := s.Audit(context.Background(), store.AuditEntry{At: time.Now(), Actor: "x", Action: "POST", Resource: "/", Status: 200, Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600, path + "-wal": 0o600} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
	s.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	open(t, path)
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("existing 0644 store reopened: mode %o, want 600", st.Mode().Perm())
	}
}
