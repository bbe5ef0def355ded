package store

import (
	"context"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/pressly/goose/v3"
)

// TestMigrateTenancy: a SQLite store at version 6 with data is upgraded
// by 00007: namespaces get ids, token grants are bound to them (a grant of
// a namespace deleted before the upgrade binds to none), events and audit
// entries are numbered per namespace, orphaned events and templates go.
func TestMigrateTenancy(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dbpilot.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := fs.Sub(migrations, "migrations/sqlite")
	p, err := goose.NewProvider(goose.DialectSQLite3, s.db, sub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 6); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO namespaces (name, created_at) VALUES ('a', 1), ('b', 1)`,
		`INSERT INTO tokens (id, name, hash, grants, created_by, created_at) VALUES
		 ('t1', 't1', 'h1', '[{"namespace":"a","role":"admin"},{"namespace":"gone","role":"admin"},{"namespace":"*","role":"viewer"}]', '', 1)`,
		`INSERT INTO events (id, namespace, project, cluster, node, type, term, revision, time, stale, data) VALUES
		 ('e1', 'a', 'p', 'c', 'n', 't', 0, 0, 1, FALSE, '{}'), ('e2', 'b', 'p', 'c', 'n', 't', 0, 0, 1, FALSE, '{}'),
		 ('e3', 'gone', 'p', 'c', 'n', 't', 0, 0, 1, FALSE, '{}'), ('e4', 'a', 'p', 'c', 'n', 't', 0, 0, 1, FALSE, '{}')`,
		`INSERT INTO audit (at, actor, namespace, action, resource, status, result) VALUES
		 (1, 'x', 'b', 'POST', '/', 200, 'ok'), (1, 'x', 'a', 'POST', '/', 200, 'ok'), (1, 'x', 'a', 'POST', '/', 200, 'ok')`,
		`INSERT INTO templates (namespace, name, body, created_at) VALUES ('a', 'pg', '{}', 1), ('gone', 'pg', '{}', 1)`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := s.GetNamespace(ctx, "a")
	if err != nil || a.ID == "" {
		t.Fatalf("namespace a: %+v %v", a, err)
	}
	tok, err := s.TokenByHash(ctx, "h1")
	if err != nil || len(tok.Grants) != 2 || tok.Grants[0].NamespaceID != a.ID || tok.Grants[1].Namespace != "*" {
		t.Fatalf("token after upgrade: %+v %v", tok, err)
	}
	es, err := s.ListEvents(ctx, EventFilter{Namespace: "a"})
	if err != nil || len(es) != 2 || es[0].Seq != 1 || es[1].Seq != 2 || es[1].ID != "e4" {
		t.Fatalf("events of a: %+v %v", es, err)
	}
	if es, _ := s.ListEvents(ctx, EventFilter{}); len(es) != 3 {
		t.Fatalf("orphaned events kept: %+v", es)
	}
	as, err := s.ListAudit(ctx, "a", 0, 10)
	if err != nil || len(as) != 2 || as[1].Seq != 2 {
		t.Fatalf("audit of a: %+v %v", as, err)
	}
	if ts, _ := s.ListTemplates(ctx, "a"); len(ts) != 1 {
		t.Fatalf("templates of a: %+v", ts)
	}
	// Numbering continues after the upgrade.
	if err := s.Audit(ctx, AuditEntry{Actor: "x", Namespace: "a", Action: "POST", Resource: "/", Status: 200, Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	if as, _ := s.ListAudit(ctx, "a", 2, 10); len(as) != 1 || as[0].Seq != 3 {
		t.Fatalf("audit numbering after the upgrade: %+v", as)
	}
	s.Close()
}
