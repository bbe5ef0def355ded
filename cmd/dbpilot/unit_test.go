package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/cmd/dbpilot/internal/client"
	"github.com/dbpilot/dbpilot/proto"
)

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"operation failed", failed("create failed"), 1},
		{"wrapped exit error", fmt.Errorf("x: %w", &exitError{code: 3, err: errors.New("gone")}), 3},
		{"usage", usagef("--to: required"), 2},
		{"cobra error", errors.New(`unknown flag: --bogus`), 2},
		{"401", &client.Error{APIError: proto.APIError{Status: 401, Message: "invalid or revoked token"}}, 4},
		{"403", &client.Error{APIError: proto.APIError{Status: 403, Message: "needs operator"}}, 4},
		{"404 resource", &client.Error{APIError: proto.APIError{Status: 404, Message: "cluster x not found"}}, 3},
		{"404 no endpoint", &client.Error{APIError: proto.APIError{Status: 404, Message: "no such endpoint: GET /v1/x"}}, 1},
		{"400", &client.Error{APIError: proto.APIError{Status: 400, Message: "replicas: must be in [1, 9]", Field: "replicas"}}, 2},
		{"409", &client.Error{APIError: proto.APIError{Status: 409, Message: "another operation"}}, 1},
		{"500", &client.Error{APIError: proto.APIError{Status: 500, Message: "internal error"}}, 1},
		{"unsupported", unsupported("backup list", &client.Error{APIError: proto.APIError{Status: 404, Message: "no such endpoint: GET /v1/x"}}), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err); got != tc.want {
				t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func TestPrintErrorNamesTheField(t *testing.T) {
	var b bytes.Buffer
	printError(&b, &client.Error{APIError: proto.APIError{Status: 400, Code: "invalid_argument", Message: "replicas: must be in [1, 9] (got 12)", Field: "replicas"}})
	want := "error: replicas: must be in [1, 9] (got 12) (HTTP 400)\n  field: replicas\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestToYAMLKeepsOrderAndTypes(t *testing.T) {
	b, err := toYAML([]byte(`{"name":"demo","replicas":3,"created_at":"2026-01-02T03:04:05Z","on":"on","members":[{"lsn":"0/1","streaming":true}],"empty":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `name: demo
replicas: 3
created_at: "2026-01-02T03:04:05Z"
"on": "on"
members:
  - lsn: 0/1
    streaming: true
empty: {}
`
	if string(b) != want {
		t.Errorf("got:\n%s\nwant:\n%s", b, want)
	}
}

func TestEventDetails(t *testing.T) {
	for _, tc := range []struct{ typ, data, want string }{
		{evPrimaryChanged, `{"primary":"node1","previous_primary":"node2","reason":"failover","timeline":2,"duration_ms":140}`,
			"node1 is primary (failover, was node2, timeline 2, took 140ms)"},
		{evMemberState, `{"role":"replica","state":"running","healthy":false,"lsn":"0/5","lag_bytes":2048}`, "replica running unhealthy lsn 0/5 lag 2.0 KiB"},
		{evFailoverStarted, `{"candidate":"node3","failed_primary":"node1","reason":"leader key expired"}`, "node3 tries to take over from node1: leader key expired"},
		{evNodeRepair, `{"node":"node2","operation_id":"op-1","state":"succeeded","reason":"node node2 not running (provider status: agent pid 42 not running)","attempt":1,"duration_ms":7300}`,
			"repair succeeded (op-1, attempt 1): node node2 not running (provider status: agent pid 42 not running), took 7.3s"},
		{evAlertFiring, `{"alert_id":"0123456789abcdef","rule":"agent_silent","severity":"page","summary":"node node1: silent","flapping":true}`,
			"page agent_silent firing (0123456789abcdef): node node1: silent [flapping]"},
		{evAlertResolved, `{"alert_id":"0123456789abcdef","rule":"backup_failed","severity":"ticket","summary":"x","silenced":true}`,
			"ticket backup_failed resolved (0123456789abcdef): x [silenced]"},
		{"io.example.other.v1", `{"a": 1}`, `{"a":1}`},
	} {
		if got := eventDetails(client.Event{Event: proto.Event{Type: tc.typ, Data: []byte(tc.data)}}); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.typ, got, tc.want)
		}
	}
	if got := shortType(evPrimaryChanged); got != "primary_changed" {
		t.Errorf("shortType: %q", got)
	}
	if got := shortType(evNodeRepair); got != "node_repair" {
		t.Errorf("shortType: %q", got)
	}
	if got := shortType(evAlertFiring); got != "alert_firing" {
		t.Errorf("shortType: %q", got)
	}
}

func TestConfigRoundTripAndPrecedence(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"XDG_CONFIG_HOME": dir}
	a := &app{deps: deps{getenv: func(k string) string { return env[k] }, now: time.Now}}
	cfg := Config{CurrentContext: "a"}
	cfg.put(Context{Name: "a", Server: "http://a:1", Token: "ta", Namespace: "nsa"})
	cfg.put(Context{Name: "b", Server: "http://b:1", Token: "tb"})
	p, err := a.saveConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 || p != filepath.Join(dir, "dbpilot", "config.yaml") {
		t.Fatalf("config %s: %v %v", p, st.Mode(), err)
	}
	c, err := a.current()
	if err != nil || c.Server != "http://a:1" || c.Token != "ta" || c.Namespace != "nsa" {
		t.Fatalf("context a: %+v %v", c, err)
	}
	env["DBPILOT_CONTEXT"] = "b"
	env["DBPILOT_TOKEN"] = "tenv"
	if c, _ := a.current(); c.Server != "http://b:1" || c.Token != "tenv" || c.Namespace != "default" {
		t.Errorf("env: %+v", c)
	}
	a.g.token, a.g.server, a.g.namespace = "tflag", "http://flag:1", "nsflag"
	if c, _ := a.current(); c.Server != "http://flag:1" || c.Token != "tflag" || c.Namespace != "nsflag" {
		t.Errorf("flags: %+v", c)
	}
	a.g.context = "missing"
	if _, err := a.current(); exitCode(err) != exitUsage {
		t.Errorf("missing context: %v", err)
	}
	if err := os.WriteFile(p, []byte("current-context: a\ncontexts: []\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.loadConfig(); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("strict config: %v", err)
	}
}
