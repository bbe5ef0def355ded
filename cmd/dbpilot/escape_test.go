package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// hostileString holds C0 (ESC, BEL, CR, newline, tab), DEL and a C1 CSI:
// printed raw they would clear the screen, forge lines or move the cursor.
const hostileString = "evil\x1b[2J\a\rforged\nline\ttab\x7f\u009b31m"

// rawControl reports the first raw control character (other than newline
// and tab, which the output formats themselves use) in s.
func rawControl(s string) (rune, bool) {
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f) {
			return r, true
		}
	}
	return 0, false
}

func TestEscapeControl(t *testing.T) {
	for in, want := range map[string]string{
		"plain":        "plain",
		"é ü 漢":        "é ü 漢",
		"a\x1b[2Jb":    `a\u001b[2Jb`,
		"a\nb\tc":      `a\u000ab\u0009c`,
		"a\u009bb\x7f": `a\u009bb\u007f`,
	} {
		if got := escapeControl(in); got != want {
			t.Errorf("escapeControl(%q) = %q, want %q", in, got, want)
		}
	}
	if got := escapeMessage("one\x1b\ntwo"); got != "one\\u001b\ntwo" {
		t.Errorf("escapeMessage keeps newlines only: %q", got)
	}
	var buf bytes.Buffer
	w := &safeWriter{w: &buf}
	raw, _ := json.Marshal(map[string]string{"name": hostileString})
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if r, bad := rawControl(buf.String()); bad {
		t.Errorf("safeWriter let %U through: %q", r, buf.String())
	}
	var back map[string]string
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || back["name"] != hostileString {
		t.Errorf("safeWriter output is not the same JSON: %v %q", err, back["name"])
	}
}

// TestCLIEscapesServerStrings runs the real CLI against a server that
// answers hostile strings (a token name, an error message and field):
// no output format prints a raw control character, and the names are
// still readable. (The real server refuses such token names: TestCLI and
// the server's security suite check that.)
func TestCLIEscapesServerStrings(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/tokens":
			_ = json.NewEncoder(w).Encode(map[string]any{"items": []map[string]any{{"id": "tok-1", "name": hostileString,
				"grants": []map[string]string{{"namespace": "acme\x1b]0;pwned\a", "role": "admin"}}, "created_by": "server", "created_at": "2026-01-01T00:00:00Z"}}})
		default:
			w.WriteHeader(400)
			_ = json.NewEncoder(w).Encode(map[string]string{"code": "invalid_argument", "field": "na\x1bme", "message": "bad " + hostileString})
		}
	}))
	defer srv.Close()
	c := newCLI(t, "DBPILOT_SERVER="+srv.URL, "DBPILOT_TOKEN=dbp_x")
	for _, out := range []string{"table", "json", "yaml", "go-template={{range .items}}{{.name}}{{end}}"} {
		r := c.run("token", "list", "-o", out)
		if r.code != 0 {
			t.Fatalf("-o %s: %s", out, r)
		}
		if ch, bad := rawControl(r.stdout); bad {
			t.Errorf("-o %s printed raw %U: %q", out, ch, r.stdout)
		}
		if !strings.Contains(r.stdout, "evil") || !strings.Contains(r.stdout, "forged") {
			t.Errorf("-o %s lost the name: %q", out, r.stdout)
		}
	}
	if r := c.run("token", "list", "-o", "table"); strings.Count(r.stdout, "\n") != 2 {
		t.Errorf("a newline in a name forged a table line: %q", r.stdout)
	}
	r := c.run("token", "revoke", "tok-1")
	if r.code == 0 {
		t.Fatalf("token revoke against a 400: %s", r)
	}
	if ch, bad := rawControl(r.stderr); bad {
		t.Errorf("error printed raw %U: %q", ch, r.stderr)
	}
	if !strings.Contains(r.stderr, `\u001b`) {
		t.Errorf("error message not shown escaped: %q", r.stderr)
	}
}
