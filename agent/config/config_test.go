package config

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
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
	if c.TTL != DefaultTTL || c.Health.Interval != DefaultHealthInterval || c.Report.SummaryInterval != DefaultSummaryInterval || c.Postgres.Port != 5432 || c.SynchronousMode != SyncOff {
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
		{"summary interval too short", "report: {summary_interval: 500ms}", `report.summary_interval: must be at least 1s: the control plane counts a member silent after three missed summaries (got "500ms")`},
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

// TestExampleConfigValidates: every key of deploy/agent.example.yaml
// decodes and the whole file validates once its host paths (TLS files,
// binaries, credentials) point at stand-ins in a temporary directory.
func TestExampleConfigValidates(t *testing.T) {
	b, err := os.ReadFile("../../deploy/agent.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	y := string(b)
	for _, f := range []string{"/etc/dbpilot/etcd-ca.pem", "/etc/dbpilot/etcd-client.pem", "/etc/dbpilot/etcd-client-key.pem"} {
		stand := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(stand, []byte("PEM"), 0o600); err != nil {
			t.Fatal(err)
		}
		y = replaceOnce(t, y, f, stand)
	}
	y = replaceOnce(t, y, "/usr/lib/postgresql/15/bin", fakeBinDir(t))
	y = replaceOnce(t, y, "/etc/dbpilot/credentials.yaml", writeCreds(t, dir, 0o600))
	if _, err := user.Lookup("postgres"); err != nil {
		t.Logf("no OS user postgres here (%v): os_user nobody instead", err)
		y = replaceOnce(t, y, "os_user: postgres", "os_user: nobody")
	}
	c, err := Parse([]byte(y), dir)
	if err != nil {
		t.Fatalf("deploy/agent.example.yaml does not validate:\n%v", err)
	}
	// Spot checks that the values mean what the comments say.
	if c.SynchronousMode != SyncOn || c.TTL != 5*time.Second || c.Handlers.Health == nil || c.Handlers.Health.Threshold != 3 ||
		c.Postgres.Parameters["max_connections"] != "200" || c.Events.Dapr == nil || !c.Etcd.TLS.Enabled() {
		t.Fatalf("example decoded unexpectedly: %+v", c)
	}
}

func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if strings.Count(s, old) != 1 {
		t.Fatalf("%q occurs %d times in the example, want once", old, strings.Count(s, old))
	}
	return strings.Replace(s, old, new, 1)
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

// configPathRE is how every validation problem starts: a config path of
// lowercase YAML keys (or a key of the credentials file), never a Go field
// name such as Parameters.cluster_name or OSUser.
var configPathRE = regexp.MustCompile(`^(config|[a-z_]+([.\[][^:]*)?): `)

// TestStartupChecksInValidation: what agent/postgres would refuse at
// start-up is reported by validation, with the config path and the fix.
func TestStartupChecksInValidation(t *testing.T) {
	tests := []struct {
		name, key, value string // postgres.<key>: <value>
		want             []string
	}{
		{"agent-managed cluster_name", "parameters", "{cluster_name: x}",
			[]string{"postgres.parameters.cluster_name: is managed by the agent; remove it (the agent sets it to node.name)"}},
		{"managed name in another case", "parameters", "{Port: '5433'}",
			[]string{"postgres.parameters.Port: is managed by the agent; remove it (use postgres.port instead)"}},
		{"every managed parameter at once", "parameters", "{primary_slot_name: s, include_dir: d, recovery_target_timeline: '1', wal_level: logical}",
			[]string{"postgres.parameters.include_dir: is managed", "postgres.parameters.primary_slot_name: is managed",
				"postgres.parameters.recovery_target_timeline: is managed", "postgres.parameters.wal_level: is managed"}},
		{"invalid parameter name", "parameters", "{'work mem': 4MB}",
			[]string{"postgres.parameters.work mem: not a valid parameter name"}},
		{"no replication slots", "parameters", "{max_replication_slots: 0}",
			[]string{"postgres.parameters.max_replication_slots: must be at least 1"}},
		{"value on two lines", "parameters", `{work_mem: "4MB\nfsync = off"}`,
			[]string{"postgres.parameters.work_mem: value contains control characters"}},
		{"names differing in case", "parameters", "{Work_Mem: 4MB, work_mem: 8MB}",
			[]string{`postgres.parameters.work_mem: duplicates "Work_Mem"`}},
		{"relative bin_dir", "bin_dir", "usr/lib/postgresql/15/bin",
			[]string{`postgres.bin_dir: must be an absolute path (got "usr/lib/postgresql/15/bin")`}},
		{"data_dir /", "data_dir", "/", []string{"postgres.data_dir: must not be /"}},
		{"quoted listen_address", "listen_address", `"'*'"`, []string{"postgres.listen_address: must be an address"}},
		{"pg_hba line with a newline", "pg_hba", `["host all all 10.0.0.0/8 scram-sha-256\nlocal all all trust"]`,
			[]string{"postgres.pg_hba[0]: contains control characters"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			y, dir := validYAML(t)
			_, err := Parse([]byte(setPostgresKey(y, tc.key, tc.value)), dir)
			if err == nil {
				t.Fatalf("accepted; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			checkConfigPaths(t, err)
		})
	}
}

// setPostgresKey sets postgres.<key> in a validYAML document.
func setPostgresKey(y, key, value string) string {
	line := "  " + key + ": " + value + "\n"
	var out []string
	done := false
	for _, l := range strings.SplitAfter(y, "\n") {
		if strings.HasPrefix(l, "  "+key+":") {
			l, done = line, true
		}
		out = append(out, l)
		if l == "postgres:\n" && !strings.Contains(y, "\n  "+key+":") {
			out, done = append(out, line), true
		}
	}
	if !done {
		panic("no postgres section")
	}
	return strings.Join(out, "")
}

// checkConfigPaths fails unless every problem in err starts with a config
// path.
func checkConfigPaths(t *testing.T, err error) {
	t.Helper()
	for _, line := range strings.Split(err.Error(), "\n") {
		if !configPathRE.MatchString(line) {
			t.Errorf("problem does not start with a config path: %q", line)
		}
	}
}

// TestCheckOSUser: as root, postgres.os_user must name an existing user
// other than root; otherwise it is ignored (PostgreSQL runs as the agent's
// user), as agent/postgres does.
func TestCheckOSUser(t *testing.T) {
	tests := []struct {
		name string
		root bool
		want string // substring; "" means accepted
	}{
		{"nobody", true, ""},
		{"root", true, `"root" is root (uid 0)`},
		{"dbpilot-no-such-user", true, `no OS user "dbpilot-no-such-user"`},
		{"root", false, ""},
		{"dbpilot-no-such-user", false, ""},
	}
	for _, tc := range tests {
		got := checkOSUser(tc.name, tc.root)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("checkOSUser(%q, root=%v) = %q, want %q", tc.name, tc.root, got, tc.want)
		}
	}
}

// TestOSUserRootFailsValidation runs the os_user check through Parse as
// the test runs (root or not).
func TestOSUserRootFailsValidation(t *testing.T) {
	y, dir := validYAML(t)
	_, err := Parse([]byte(strings.Replace(y, "  data_dir: data\n", "  data_dir: data\n  os_user: root\n", 1)), dir)
	if os.Geteuid() != 0 {
		if err != nil {
			t.Fatalf("not root: os_user is ignored, but: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "postgres.os_user: \"root\" is root") {
		t.Fatalf("os_user: root as root: err = %v", err)
	}
	checkConfigPaths(t, err)
	c, err := Parse([]byte(y), dir)
	if err != nil || c.Postgres.OSUser != DefaultOSUser {
		t.Fatalf("os_user unset as root: want %q, got %+v, %v", DefaultOSUser, c, err)
	}
}

// TestCredentialsChecked: validation loads the credentials and reports
// what agent/postgres would refuse, never quoting a password.
func TestCredentialsChecked(t *testing.T) {
	tests := []struct {
		name, creds string
		want        string
	}{
		{"password on two lines", "superuser: {password: \"s3cret\\nx\"}\nreplication: {password: r}\n", "superuser.password: contains control characters"},
		{"no replication password", "superuser: {password: s}\n", "replication.password: required"},
		{"one user, two passwords", "superuser: {username: pg, password: s3cret}\nreplication: {username: pg, password: 0ther-pw}\n", `replication.username: "pg" is also superuser.username but the passwords differ`},
		{"long user name", "superuser: {username: " + strings.Repeat("u", 64) + ", password: s}\nreplication: {password: r}\n", "superuser.username: must be 1-63 characters"},
		{"unknown key", "superuser: {pasword: s}\n", "postgres.credentials_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvSuperuserPassword, "")
			t.Setenv(EnvReplicationPassword, "")
			y, dir := validYAML(t)
			f := filepath.Join(t.TempDir(), "creds.yaml")
			if err := os.WriteFile(f, []byte(tc.creds), 0o600); err != nil {
				t.Fatal(err)
			}
			y = strings.Replace(y, "credentials_file: ", "credentials_file: "+f+" #", 1)
			_, err := Parse([]byte(y), dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "0ther-pw") {
				t.Fatalf("a password leaked into: %v", err)
			}
		})
	}
}

// TestEmptyFile: a file without settings gets one problem listing what is
// required, not one per key (nor a spurious postgres.listen_address).
func TestEmptyFile(t *testing.T) {
	for _, doc := range []string{"", "\n", "# nothing yet\n", "---\n", "~\n", "{}\n"} {
		_, err := Parse([]byte(doc), t.TempDir())
		if !errors.Is(err, errEmpty) {
			t.Errorf("Parse(%q) = %v, want the empty-file error", doc, err)
			continue
		}
		for _, k := range RequiredKeys {
			if !strings.Contains(err.Error(), k) {
				t.Errorf("empty-file error does not name %s: %v", k, err)
			}
		}
	}
}

// TestRequiredKeys: RequiredKeys, which the empty-file error lists, are
// exactly the keys a nearly empty file is told to set.
func TestRequiredKeys(t *testing.T) {
	t.Setenv(EnvSuperuserPassword, "")
	t.Setenv(EnvReplicationPassword, "")
	_, err := Parse([]byte("log: {level: info}\n"), t.TempDir())
	if err == nil {
		t.Fatal("accepted")
	}
	var got []string
	for _, line := range strings.Split(err.Error(), "\n") {
		path, _, _ := strings.Cut(line, ":")
		switch path {
		case "postgres.bin_dir": // needed only where PostgreSQL is not installed
		case "postgres.os_user", "handlers.user": // only where no user postgres exists
		default:
			got = append(got, path)
		}
	}
	if strings.Join(got, " ") != strings.Join(RequiredKeys, " ") {
		t.Fatalf("problems of a file without settings:\n%v\nwant one per RequiredKeys %v", err, RequiredKeys)
	}
}

// TestOnOffNeedNoQuotes: yaml.v3 (YAML 1.2) reads an unquoted on/off into
// a string field as the string; the docs need not ask for quotes.
func TestOnOffNeedNoQuotes(t *testing.T) {
	tests := []struct {
		edit           string
		sync, failsafe string
		want           string // problem substring; "" means accepted
	}{
		{"synchronous_mode: on\nfailsafe_mode: off", "on", "off", ""},
		{"synchronous_mode: off\nfailsafe_mode: on", "off", "on", ""},
		{"synchronous_mode: \"on\"\nfailsafe_mode: 'off'", "on", "off", ""},
		{"synchronous_mode: true", "", "", `synchronous_mode: must be "off" or "on" (got "true")`},
		{"synchronous_mode: yes", "", "", `synchronous_mode: must be "off" or "on" (got "yes")`},
		{"failsafe_mode: ON", "", "", `failsafe_mode: must be "on" or "off" (got "ON")`},
	}
	for _, tc := range tests {
		y, dir := validYAML(t)
		c, err := Parse([]byte(y+tc.edit+"\n"), dir)
		if tc.want != "" {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%q: error = %v, want %q", tc.edit, err, tc.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.edit, err)
			continue
		}
		if string(c.SynchronousMode) != tc.sync || c.FailsafeMode != tc.failsafe {
			t.Errorf("%q: synchronous_mode %q failsafe_mode %q, want %q %q", tc.edit, c.SynchronousMode, c.FailsafeMode, tc.sync, tc.failsafe)
		}
	}
}

// TestLoadRelativeConfigPath: a config file named relative to the working
// directory still yields absolute paths.
func TestLoadRelativeConfigPath(t *testing.T) {
	y, dir := validYAML(t)
	if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	c, err := Load("agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(c.Postgres.DataDir) || !filepath.IsAbs(c.StateDir) {
		t.Fatalf("relative paths: data_dir %q, state_dir %q", c.Postgres.DataDir, c.StateDir)
	}
}

// TestOSUserProblemReportedOnce: as root, a bad postgres.os_user is not
// reported a second time on the handlers.user it defaults.
func TestOSUserProblemReportedOnce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("postgres.os_user is checked only when the agent runs as root")
	}
	y, dir := validYAML(t)
	bad := strings.Replace(y, "  data_dir: data\n", "  data_dir: data\n  os_user: root\n", 1)
	_, err := Parse([]byte(bad), dir)
	if err == nil || !strings.Contains(err.Error(), "postgres.os_user:") || strings.Contains(err.Error(), "handlers.user:") {
		t.Fatalf("os_user root with handlers.user unset: %v", err)
	}
	_, err = Parse([]byte(bad+"  user: root\n"), dir)
	if err == nil || !strings.Contains(err.Error(), "handlers.user:") {
		t.Fatalf("handlers.user set to root explicitly: %v", err)
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
