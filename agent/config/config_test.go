package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeCreds(t *testing.T, dir string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, "creds.yaml")
	if err := os.WriteFile(p, []byte("superuser: {username: postgres, password: s3cret-su}\nreplication: {username: replicator, password: s3cret-rep}\n"), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func fakeBinDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, b := range []string{"initdb", "postgres", "pg_basebackup", "pg_rewind", "pg_controldata"} {
		if err := os.WriteFile(filepath.Join(d, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func validYAML(t *testing.T) (string, string) {
	dir := t.TempDir()
	creds := writeCreds(t, dir, 0o600)
	return `
node: {name: n1, address: 127.0.0.1}
cluster: {namespace: prod, project: blue, name: billing}
etcd: {endpoints: ["http://127.0.0.1:2379"]}
state_dir: state
postgres:
  bin_dir: ` + fakeBinDir(t) + `
  data_dir: data
  credentials_file: ` + creds + `
handlers:
  health: {shell: "true", threshold: 2}
`, dir
}

func TestValidConfigAndDefaults(t *testing.T) {
	y, dir := validYAML(t)
	c, err := Parse([]byte(y), dir)
	if err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	if c.TTL != DefaultTTL || c.Health.Interval != DefaultHealthInterval || c.Postgres.Port != 5432 || c.SynchronousMode != SyncOff {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if c.Postgres.DataDir != filepath.Join(dir, "data") {
		t.Fatalf("relative data_dir not resolved against the config dir: %s", c.Postgres.DataDir)
	}
	cr, err := c.LoadCredentials()
	if err != nil || cr.Superuser.Password.Reveal() != "s3cret-su" || cr.Replication.Username != "replicator" {
		t.Fatalf("credentials: %+v %v", cr, err)
	}
}

func TestBadConfigsNameTheField(t *testing.T) {
	tests := []struct {
		name, edit, want string
	}{
		{"typo'd key", "ttll: 5s", "ttll: unknown key (line "},
		{"missing data dir", "postgres: {data_dir: ''}", ""}, // handled below
		{"ttl too small for timings", "ttl: 4s\nhealth: {interval: 1s}\netcd: {endpoints: ['http://x:1'], request_timeout: 1s}", "ttl: must be larger than health.interval + 2 × etcd.request_timeout + the fencing margin (etcd.request_timeout + 500ms) = 4.5s"},
		{"ttl not whole seconds", "ttl: 5500ms", "ttl: must be whole seconds"},
		{"bad sync mode", "synchronous_mode: sometimes", `synchronous_mode: must be "off" or "on"`},
		{"bad node name", "node: {name: 'Node 1', address: x}", "node.name: must match"},
		{"bad etcd url", "etcd: {endpoints: ['127.0.0.1:2379']}", "etcd.endpoints[0]: must start with http://"},
		{"handler with both", "handlers: {preStart: {command: [x], shell: y}}", "handlers.preStart"},
		{"negative lag", "maximum_lag_on_failover: -1", "maximum_lag_on_failover: must be >= 0"},
		{"managed parameter", "postgres: {parameters: {port: '5433'}}", "postgres.parameters.port: is managed by the agent"},
		{"batch too large", "events: {http: {url: 'http://cp:8080/v1/ingest/events', max_batch: 5000}}", "events.http.max_batch: must be between 1 and 1000"},
		{"negative batch", "events: {http: {url: 'http://cp:8080/v1/ingest/events', max_batch: -1}}", "events.http.max_batch: must be between 1 and 1000"},
	}
	for _, tc := range tests {
		if tc.want == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			y, dir := validYAML(t)
			_, err := Parse([]byte(merge(t, y, tc.edit)), dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// merge overrides top-level keys of base with those of edit (a tiny YAML
// patch: later keys replace earlier ones at the top level).
func merge(t *testing.T, base, edit string) string {
	t.Helper()
	lines := strings.Split(base, "\n")
	var out []string
	skip := false
	keys := map[string]bool{}
	for _, l := range strings.Split(edit, "\n") {
		if k, _, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
			keys[k] = true
		}
	}
	for _, l := range lines {
		if l != "" && !strings.HasPrefix(l, " ") {
			k, _, _ := strings.Cut(l, ":")
			skip = keys[k]
		}
		if !skip {
			out = append(out, l)
		}
	}
	if keys["postgres"] && !strings.Contains(edit, "bin_dir") {
		// keep a valid bin_dir and credentials for postgres edits
		edit = strings.Replace(edit, "postgres: {", "postgres: {bin_dir: "+fakeBinDir(t)+", credentials_file: "+writeCreds(t, t.TempDir(), 0o600)+", data_dir: d, ", 1)
	}
	return strings.Join(out, "\n") + "\n" + edit + "\n"
}

func TestMissingDataDir(t *testing.T) {
	y, dir := validYAML(t)
	y = strings.Replace(y, "  data_dir: data\n", "", 1)
	_, err := Parse([]byte(y), dir)
	if err == nil || !strings.Contains(err.Error(), "postgres.data_dir: required") {
		t.Fatalf("error = %v", err)
	}
}

func TestAllProblemsReported(t *testing.T) {
	_, err := Parse([]byte("ttl: 1s\n"), t.TempDir())
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, want := range []string{"node.name", "node.address", "cluster.namespace", "etcd.endpoints", "ttl", "state_dir", "postgres.data_dir"} {
		if !strings.Contains(err.Error(), want+":") {
			t.Errorf("missing problem for %s in:\n%v", want, err)
		}
	}
}

func TestCredentialsFileMustBePrivate(t *testing.T) {
	y, dir := validYAML(t)
	loose := writeCreds(t, t.TempDir(), 0o644)
	y = strings.Replace(y, "credentials_file: ", "credentials_file: "+loose+" #", 1)
	_, err := Parse([]byte(y), dir)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("error = %v", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	for _, out := range []string{s.String(), s.GoString(), func() string { b, _ := s.MarshalJSON(); return string(b) }()} {
		if strings.Contains(out, "hunter2") {
			t.Fatalf("secret leaked: %s", out)
		}
	}
}

func TestExampleConfigParses(t *testing.T) {
	b, err := os.ReadFile("../../deploy/agent.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The example points at production paths; only strict decoding is checked here.
	_, err = Parse(b, t.TempDir())
	if err != nil && strings.Contains(err.Error(), "not found in type") {
		t.Fatalf("example has unknown keys: %v", err)
	}
}

// TestHandlersUser: handlers never run as root. As root the default is
// postgres.os_user; root, uid 0 and unknown users are refused naming
// handlers.user.
func TestHandlersUser(t *testing.T) {
	y, dir := validYAML(t)
	c, err := Parse([]byte(y), dir)
	if err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	if os.Geteuid() == 0 && (c.Handlers.User == "" || c.Handlers.User != c.Postgres.OSUser) {
		t.Errorf("running as root: handlers.user = %q, want postgres.os_user %q", c.Handlers.User, c.Postgres.OSUser)
	}
	for _, bad := range []string{"root", "0", "dbpilot-no-such-user"} {
		_, err := Parse([]byte(y+"  user: \""+bad+"\"\n"), dir)
		if err == nil || !strings.Contains(err.Error(), "handlers.user: ") {
			t.Errorf("handlers.user %q: err = %v, want an error naming handlers.user", bad, err)
		}
	}
}

// TestDaprEvents: events.dapr takes the sidecar's HTTP address; the removed
// grpc_address is refused with the key to use instead, not as an unknown key.
func TestDaprEvents(t *testing.T) {
	for _, tc := range []struct {
		name, edit, want string
	}{
		{"http address", "events: {dapr: {http_address: '127.0.0.1:3500', pubsub: dbpilot-pubsub, topic: dbpilot.agent.events}}", ""},
		{"old grpc address", "events: {dapr: {grpc_address: '127.0.0.1:50001', pubsub: dbpilot-pubsub, topic: dbpilot.agent.events}}",
			"events.dapr.grpc_address: no longer supported: the agent publishes through the sidecar's HTTP API; replace it with events.dapr.http_address"},
		{"no address", "events: {dapr: {pubsub: dbpilot-pubsub, topic: dbpilot.agent.events}}", "events.dapr.http_address: required"},
		{"url instead of host:port", "events: {dapr: {http_address: 'http://127.0.0.1:3500', pubsub: p, topic: t}}", "events.dapr.http_address: must be host:port"},
		{"no port", "events: {dapr: {http_address: '127.0.0.1', pubsub: p, topic: t}}", "events.dapr.http_address: must be host:port"},
		{"no pubsub or topic", "events: {dapr: {http_address: '127.0.0.1:3500'}}", "events.dapr.pubsub: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y, dir := validYAML(t)
			c, err := Parse([]byte(merge(t, y, tc.edit)), dir)
			if tc.want == "" {
				if err != nil || c.Events.Dapr.HTTPAddress != "127.0.0.1:3500" {
					t.Fatalf("Parse = %+v, %v; want http_address 127.0.0.1:3500", c, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
