package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/internal/testutil"
)

// TestCLI drives every command of the real dbpilot binary, in table and
// JSON output, against a real `dbpilot-server dev` running real PostgreSQL
// nodes under the process provider.
func TestCLI(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	c := newCLI(t)

	// Before login: the environment alone is enough; a wrong token is exit 4.
	env := []string{"DBPILOT_SERVER=" + srv.url, "DBPILOT_TOKEN=" + srv.token}
	if r := c.runEnv(env, "version"); r.code != 0 || !strings.Contains(r.stdout, "Client: dbpilot") || !strings.Contains(r.stdout, "Server: dbpilot-server") {
		t.Fatalf("version: %s", r)
	}
	r := c.runEnv([]string{"DBPILOT_SERVER=" + srv.url, "DBPILOT_TOKEN=dbp_wrong"}, "cluster", "list")
	if r.code != 4 || !strings.Contains(r.stderr, "error: invalid or revoked token (HTTP 401)") || !strings.Contains(r.stderr, "hint:") {
		t.Fatalf("wrong token: want exit 4 with a readable message, got %s", r)
	}
	c.exit(2, []string{"cluster", "list"}, "no server configured")

	// login saves a 0600 context; flags beat the context.
	r = c.ok("login", "--server", srv.url, "--token", srv.token)
	if !strings.Contains(r.stdout, "Logged in to "+srv.url+" as dev-admin") {
		t.Errorf("login: %s", r)
	}
	st, err := os.Stat(filepath.Join(c.xdg, "dbpilot", "config.yaml"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v, mode %v (want 0600)", err, st.Mode().Perm())
	}
	c.exit(4, []string{"login", "--server", srv.url, "--token", "dbp_nope", "--name", "bad"}, "invalid or revoked token")
	c.ok("login", "--server", srv.url, "--token", srv.token, "--name", "second", "-n", "other")
	ctxs := c.json("context", "list")
	if ctxs["current_context"] != "second" || len(ctxs["contexts"].([]any)) != 2 || strings.Contains(mustJSON(ctxs), srv.token) {
		t.Errorf("context list (tokens must not be printed): %v", ctxs)
	}
	c.ok("context", "use", "default")
	c.exit(3, []string{"context", "use", "nope"}, `context "nope" not found`)
	if r := c.ok("context", "list"); !strings.Contains(r.stdout, "*        default") {
		t.Errorf("context list table: %s", r)
	}
	c.exit(4, []string{"--token", "dbp_flag_beats_context", "cluster", "list"}, "HTTP 401")

	// Usage errors: exit 2.
	c.exit(2, []string{"cluster", "get"}, "accepts 1 arg(s)")
	c.exit(2, []string{"cluster", "list", "--bogus"}, "unknown flag: --bogus")
	c.exit(2, []string{"cluster", "list", "-o", "xml"}, "--output: must be")
	c.exit(2, []string{"clusterz"}, `unknown command "clusterz"`)
	c.exit(2, []string{"cluster", "bogus"}, `unknown command "bogus"`)
	c.exit(2, []string{"cluster", "create", "bad", "--replicas", "12"}, "replicas: must be in [1, 9] (got 12)", "field: replicas")
	c.exit(2, []string{"cluster", "create", "Bad_Name"}, "field: name")
	c.exit(2, []string{"cluster", "scale", "x"}, `required flag(s) "replicas" not set`)

	// Catalog.
	if r := c.ok("catalog", "list"); !strings.Contains(r.stdout, "postgres-15") || !strings.Contains(r.stdout, "shipped") {
		t.Errorf("catalog list: %s", r)
	}
	if ts := items(t, c.json("catalog", "list")); len(ts) == 0 || ts[0]["engine"] != "postgres" {
		t.Errorf("catalog list json: %v", ts)
	}
	if r := c.ok("catalog", "show", "postgres-15"); !strings.Contains(r.stdout, "PLAN") || !strings.Contains(r.stdout, "small") {
		t.Errorf("catalog show: %s", r)
	}
	if v := c.json("catalog", "show", "postgres-15"); v["engine_version"] == nil || v["plans"] == nil {
		t.Errorf("catalog show json: %v", v)
	}
	c.exit(3, []string{"catalog", "show", "nope"}, "template nope not found")

	// create --wait returns when the cluster is Ready (plain progress lines).
	start := time.Now()
	r = c.ok("cluster", "create", "demo", "--replicas", "3", "--wait", "--timeout", "3m")
	if !strings.Contains(r.stdout, "Phase:    Ready") || !strings.Contains(r.stderr, "create demo: done: phase Ready") || !strings.Contains(r.stderr, "nodes ready 3/3") {
		t.Fatalf("create --wait: %s", r)
	}
	t.Logf("create --wait took %s", time.Since(start).Round(time.Millisecond))
	cl := c.json("cluster", "get", "demo")
	if cl["phase"] != "Ready" || cl["name"] != "demo" || len(cl["members"].([]any)) != 3 {
		t.Fatalf("after create --wait, cluster is not Ready with 3 members: %v", cl)
	}
	roles := map[string]int{}
	for _, m := range cl["members"].([]any) {
		roles[m.(map[string]any)["role"].(string)]++
	}
	if roles["primary"] != 1 || roles["replica"] != 2 {
		t.Fatalf("roles: %v", roles)
	}
	c.exit(1, []string{"cluster", "create", "demo"}, "already exists")

	// list, get, nodes in table, JSON and YAML.
	if r := c.ok("cluster", "list"); !strings.Contains(r.stdout, "demo") || !strings.Contains(r.stdout, "Ready") {
		t.Errorf("cluster list: %s", r)
	}
	if cs := items(t, c.json("cluster", "list")); len(cs) != 1 || cs[0]["name"] != "demo" {
		t.Errorf("cluster list json: %v", cs)
	}
	if r := c.ok("cluster", "list", "-o", "yaml"); !strings.Contains(r.stdout, "items:\n  - id: c-") || !strings.Contains(r.stdout, "phase: Ready") {
		t.Errorf("cluster list yaml: %s", r)
	}
	r = c.ok("cluster", "get", "demo")
	for _, want := range []string{"MEMBER", "ROLE", "TIMELINE", "TERM", "LSN", "LAG", "primary", "replica", "Last failover: none"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("cluster get lacks %q: %s", want, r)
		}
	}
	if r := c.ok("cluster", "get", "demo", "-o", "go-template={{.phase}}"); r.stdout != "Ready\n" {
		t.Errorf("go-template: %q", r.stdout)
	}
	c.exit(3, []string{"cluster", "get", "nope"}, "cluster nope not found")
	if r := c.ok("node", "list", "demo"); strings.Count(r.stdout, "node") < 3 || !strings.Contains(r.stdout, "STREAMING") {
		t.Errorf("node list: %s", r)
	}
	nodes := items(t, c.json("node", "list", "demo"))
	if len(nodes) != 3 {
		t.Fatalf("node list json: %v", nodes)
	}
	c.exit(3, []string{"node", "list", "nope"})

	// Query insight: the primary's statements and sessions, relayed by the
	// server from its agent (pg_stat_statements is created by the agent
	// once the primary is writable).
	testutil.Eventually(t, 60*time.Second, 500*time.Millisecond, "cluster top lists statements", func() error {
		r := c.run("cluster", "top", "demo", "--limit", "5")
		if r.code != 0 || !strings.Contains(r.stdout, "QUERYID") || !strings.Contains(r.stdout, "Primary "+cl["primary"].(string)) {
			return fmt.Errorf("cluster top: %s", r)
		}
		return nil
	})
	if top := c.json("cluster", "top", "demo", "--limit", "2"); top["node"] != cl["primary"] || len(items(t, top)) != 2 {
		t.Errorf("cluster top --limit 2 -o json: %v", top)
	}
	c.exit(2, []string{"cluster", "top", "demo", "--limit", "0"}, "--limit: must be from 1 to 100 (got 0)")
	c.exit(3, []string{"cluster", "top", "nope"}, "cluster nope not found")
	if r := c.ok("cluster", "sessions", "demo"); !strings.Contains(r.stdout, "PID") || !strings.Contains(r.stdout, "DURATION") {
		t.Errorf("cluster sessions: %s", r)
	}
	if ss := c.json("cluster", "sessions", "demo"); ss["node"] != cl["primary"] || len(items(t, ss)) == 0 {
		t.Errorf("cluster sessions -o json: %v", ss)
	}

	// Follow events while the primary changes twice.
	follow := c.start("events", "--follow", "--cluster", "demo", "-o", "json")
	followTable := c.start("events", "-f", "--cluster", "demo")

	primary := cl["primary"].(string)
	r = c.ok("cluster", "switchover", "demo", "--wait", "-o", "json")
	var after map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &after); err != nil || after["primary"] == primary || after["primary"] == "" {
		t.Fatalf("switchover --wait: primary still %s: %s", primary, r)
	}
	primary = after["primary"].(string)
	var target string
	for _, n := range nodes {
		if name := n["name"].(string); name != primary {
			target = name
		}
	}
	c.exit(2, []string{"cluster", "failover", "demo", "--to", target}, "refusing without --yes")
	c.exit(2, []string{"cluster", "failover", "demo", "--to", "node9", "--yes"}, "field: to")
	r = c.ok("cluster", "failover", "demo", "--to", target, "--yes", "--wait", "--reason", "cli test")
	if !strings.Contains(r.stdout, "Primary:  "+target) {
		t.Fatalf("failover --wait: %s", r)
	}
	testutil.Eventually(t, 30*time.Second, 200*time.Millisecond, "events --follow -o json reports both primary changes", func() bool {
		n := 0
		for _, line := range strings.Split(follow.output(), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(line), &e) == nil && e["type"] == evPrimaryChanged {
				if d, _ := e["data"].(map[string]any); d["primary"] == target || d["primary"] == primary {
					n++
				}
			}
		}
		return n >= 2
	})
	testutil.Eventually(t, 30*time.Second, 200*time.Millisecond, "events --follow table shows the change to "+target, func() bool {
		return strings.Contains(followTable.output(), "primary_changed") && strings.Contains(followTable.output(), target+" is primary (switchover")
	})
	if code := follow.stop(); code != 0 {
		t.Errorf("events --follow exit %d after interrupt: %s", code, follow.output())
	}
	if r := c.ok("cluster", "get", "demo"); !strings.Contains(r.stdout, "Last failover: "+primary+" -> "+target) || !strings.Contains(r.stdout, "took ") {
		t.Errorf("cluster get after failover: %s", r)
	}

	// Events list.
	if r := c.ok("events", "--cluster", "demo"); !strings.Contains(r.stdout, "primary_changed") || !strings.Contains(r.stdout, "bootstrap") {
		t.Errorf("events: %s", r)
	}
	evs := items(t, c.json("events", "--cluster", "demo", "--type", evPrimaryChanged))
	if len(evs) < 3 {
		t.Errorf("events json: want bootstrap, switchover and failover, got %v", evs)
	}

	// Scale and restart.
	if v := c.json("cluster", "scale", "demo", "--replicas", "2", "--wait"); v["replicas"] != 2.0 || len(v["members"].([]any)) != 2 {
		t.Errorf("scale to 2: %v", v)
	}
	r = c.ok("cluster", "restart", "demo", "--wait")
	if !strings.Contains(r.stderr, "restart demo: done") || !strings.Contains(r.stdout, "Phase:    Ready") {
		t.Errorf("restart --wait: %s", r)
	}

	// Backups: run one now through the agents, list it (table and JSON).
	// The restore itself (PITR into a new cluster) runs in TestWalkthrough.
	bop := c.json("backup", "run", "demo", "--wait")
	if bop["kind"] != "backup" || bop["state"] != "succeeded" || bop["backup_id"] == "" || bop["backup_id"] == nil {
		t.Errorf("backup run --wait -o json: %v", bop)
	}
	bid, _ := bop["backup_id"].(string)
	if r := c.ok("backup", "list", "demo"); !strings.Contains(r.stdout, bid) || !strings.Contains(r.stdout, "succeeded") || !strings.Contains(r.stdout, "STOP LSN") {
		t.Errorf("backup list: %s", r)
	}
	bl := items(t, c.json("backup", "list", "demo", "-o", "json"))
	if len(bl) < 1 {
		t.Fatalf("backup list json: %v", bl)
	}
	if b := bl[0]; b["id"] != bid || b["state"] != "succeeded" || b["size_bytes"].(float64) <= 0 || b["stop_lsn"] == "" ||
		b["timeline"].(float64) < 1 || !strings.Contains(fmt.Sprint(b["repository_path"]), "/demo/base/"+bid) {
		t.Errorf("backup list json item: %v", b)
	}
	c.exit(1, []string{"backup", "restore", "demo", "--into", "demo-copy", "--time", "2020-01-02T15:04:05Z"}, "no completed physical backup finished before")
	c.exit(2, []string{"backup", "restore", "demo", "--into", "demo"}, "--into: cluster demo already exists; restore into a new cluster name")

	// Synchronous replication switched on and off on the running cluster.
	c.exit(2, []string{"cluster", "set", "demo"}, "nothing to change: pass --synchronous-mode on|off")
	c.exit(2, []string{"cluster", "set", "demo", "--synchronous-mode", "maybe"}, `synchronous_mode: must be "on" or "off" (got "maybe")`, "field: synchronous_mode")
	c.exit(3, []string{"cluster", "set", "nope", "--synchronous-mode", "on"}, "cluster nope not found")
	r = c.ok("cluster", "set", "demo", "--synchronous-mode", "on", "--wait")
	if !strings.Contains(r.stdout, "synchronous mode on") || !strings.Contains(r.stderr, "set demo synchronous mode on: done") {
		t.Errorf("cluster set --synchronous-mode on --wait: %s", r)
	}
	if v := c.json("cluster", "set", "demo", "--synchronous-mode", "off", "--wait"); v["synchronous_mode"] != "off" || v["phase"] != "Ready" {
		t.Errorf("cluster set --synchronous-mode off --wait -o json: %v", v)
	}

	// An operation without --wait returns the operation; a second one
	// conflicts (exit 1).
	op := c.json("cluster", "restart", "demo")
	if op["kind"] != "restart" || op["id"] == "" {
		t.Errorf("restart json: %v", op)
	}
	c.exit(1, []string{"cluster", "scale", "demo", "--replicas", "3"}, "another operation on cluster demo is in progress")

	c.exit(2, []string{"backup", "restore", "demo", "--into", "x", "--time", "yesterday"}, "--time: must be RFC 3339")

	// Fleet.
	r = c.ok("host", "enroll", "h1", "--address", "10.0.0.7", "--cpu", "4", "--memory-mb", "8192", "--disk-gb", "100", "--label", "zone=a")
	if !strings.Contains(r.stdout, "Credential:") || !strings.Contains(r.stdout, "dbph_") {
		t.Errorf("host enroll: %s", r)
	}
	if h := c.json("host", "enroll", "h2", "--address", "10.0.0.8", "--cpu", "2", "--memory-mb", "4096", "--disk-gb", "50"); h["name"] != "h2" || h["credential"] == "" {
		t.Errorf("host enroll json: %v", h)
	}
	c.exit(2, []string{"host", "enroll", "h3", "--address", "10.0.0.9", "--cpu", "0", "--memory-mb", "4096", "--disk-gb", "50"}, "field: capacity.cpu")
	if r := c.ok("host", "list"); !strings.Contains(r.stdout, "h1") || !strings.Contains(r.stdout, "zone=a") {
		t.Errorf("host list: %s", r)
	}
	if hs := items(t, c.json("host", "list")); len(hs) != 2 {
		t.Errorf("host list json: %v", hs)
	}
	if jt := c.json("host", "join-token", "--label", "rack=r1"); !strings.HasPrefix(jt["join_token"].(string), "dbpj_") {
		t.Errorf("join-token: %v", jt)
	}
	// Cordon, drain (no nodes: nothing to move) and uncordon; a drain
	// without --wait answers the operation.
	if r := c.ok("host", "cordon", "h1"); !strings.Contains(r.stdout, "cordoned") {
		t.Errorf("host cordon: %s", r)
	}
	if r := c.ok("host", "list"); !strings.Contains(r.stdout, "NODES") || !strings.Contains(r.stdout, "cordoned") {
		t.Errorf("host list after cordon: %s", r)
	}
	if r := c.ok("host", "drain", "h1", "--wait"); !strings.Contains(r.stdout, "drained: host h1 drained: 0 nodes moved") || !strings.Contains(r.stderr, "done") {
		t.Errorf("host drain --wait: %s", r)
	}
	if h := c.json("host", "uncordon", "h1"); h["state"] != "ready" || h["nodes"] != float64(0) {
		t.Errorf("host uncordon json: %v", h)
	}
	if op := c.json("host", "drain", "h2"); op["kind"] != "drain" || op["id"] == "" {
		t.Errorf("host drain json: %v", op)
	}
	c.exit(3, []string{"host", "cordon", "nope"}, "host: no host with id or name nope")

	// Tokens: a viewer can read but not delete (exit 4); a revoked token is
	// refused (exit 4).
	tok := c.json("token", "create", "ci-viewer", "--grant", "default=viewer")
	secret, id := tok["token"].(string), tok["id"].(string)
	if !strings.HasPrefix(secret, "dbp_") {
		t.Fatalf("token create: %v", tok)
	}
	if r := c.ok("token", "create", "ci-op", "--grant", "default=operator"); !strings.Contains(r.stdout, "(shown once)") {
		t.Errorf("token create table: %s", r)
	}
	c.exit(2, []string{"token", "create", "x"}, "--grant")
	c.exit(2, []string{"token", "create", "x", "--grant", "default=root"}, "field: grants[0].role")
	if r := c.ok("token", "list"); !strings.Contains(r.stdout, "ci-viewer") {
		t.Errorf("token list: %s", r)
	}
	if ts := items(t, c.json("token", "list")); len(ts) < 3 {
		t.Errorf("token list json: %v", ts)
	}
	c.ok("--token", secret, "cluster", "list")
	c.exit(4, []string{"--token", secret, "cluster", "delete", "demo", "--yes"}, "needs the operator role", "HTTP 403")
	if v := c.json("token", "revoke", id); v["revoked"] != true {
		t.Errorf("token revoke json: %v", v)
	}
	c.exit(4, []string{"--token", secret, "cluster", "list"}, "invalid or revoked token")
	c.exit(3, []string{"token", "revoke", "tok-nope"}, "not found")
	// A Prometheus token (metrics role) reads the targets only.
	prom := c.json("token", "create", "prometheus", "--grant", "default=metrics")["token"].(string)
	c.exit(4, []string{"--token", prom, "cluster", "list"}, "only the metrics role", "HTTP 403")

	// Completion scripts, and cluster names completed through the API.
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if r := c.ok("completion", sh); !strings.Contains(r.stdout, "dbpilot") || len(r.stdout) < 500 {
			t.Errorf("completion %s: %s", sh, r)
		}
	}
	if r := c.ok("__complete", "cluster", "get", ""); !strings.Contains(r.stdout, "demo\t") {
		t.Errorf("cluster name completion: %s", r)
	}
	if r := c.ok("__complete", "cluster", "switchover", "demo", "--to", ""); !strings.Contains(r.stdout, "node") {
		t.Errorf("node name completion: %s", r)
	}

	// version in JSON carries both sides.
	if v := c.json("version"); v["client"] == nil || v["server"].(map[string]any)["api"] != "v1" {
		t.Errorf("version json: %v", v)
	}

	// On a terminal: --wait redraws one progress line in place, and delete
	// asks (no: exit 1, nothing deleted; yes: deleted).
	r, term := c.runTTY("", "cluster", "create", "tty", "--replicas", "1", "--wait")
	if r.code != 0 || !strings.Contains(term, "\r\x1b[K") || !strings.Contains(term, "create tty: done: phase Ready") || !strings.Contains(r.stdout, "Phase:    Ready") {
		t.Fatalf("create --wait on a terminal: terminal %q\n%s", term, r)
	}
	r, term = c.runTTY("n\n", "cluster", "delete", "tty", "--wait")
	if r.code != 1 || !strings.Contains(term, "Delete cluster tty with all its nodes and data? [y/N]") || !strings.Contains(term, "aborted") {
		t.Fatalf("delete answered no: terminal %q\n%s", term, r)
	}
	c.ok("cluster", "get", "tty")
	r, term = c.runTTY("y\n", "cluster", "delete", "tty", "--wait")
	if r.code != 0 || !strings.Contains(r.stdout, "Cluster tty deleted.") {
		t.Fatalf("delete answered yes: terminal %q\n%s", term, r)
	}
	c.exit(3, []string{"cluster", "get", "tty"}, "not found")

	// delete: refused without --yes off a terminal; then gone (exit 3).
	c.exit(2, []string{"cluster", "delete", "demo"}, "refusing without --yes")
	testutil.Eventually(t, 2*time.Minute, 200*time.Millisecond, "the background restart finishes", func() bool {
		ops := c.json("cluster", "get", "demo")
		return ops["phase"] == "Ready" && c.run("cluster", "delete", "demo", "--yes", "--wait").code == 0
	})
	c.exit(3, []string{"cluster", "get", "demo"}, "not found")
	if cs := items(t, c.json("cluster", "list")); len(cs) != 0 {
		t.Errorf("clusters left after delete: %v", cs)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestWalkthrough runs deploy/dev/walkthrough.sh, the five-minute
// walkthrough of the README, against the real binaries, and checks that
// every command of the README's walkthrough is in the script as written.
func TestWalkthrough(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "deploy/dev/walkthrough.sh"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, walk, _ := strings.Cut(string(doc), "## The five-minute walkthrough")
	walk, _, _ = strings.Cut(walk, "\n## ")
	n := 0
	inSh := false
	for _, line := range strings.Split(walk, "\n") {
		switch {
		case line == "```sh":
			inSh = true
		case strings.HasPrefix(line, "```"):
			inSh = false
		case inSh && strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "export PATH="):
			n++
			if !strings.Contains(string(script), line) {
				t.Errorf("README walkthrough line is not in deploy/dev/walkthrough.sh as written:\n%s", line)
			}
		}
	}
	if n < 20 {
		t.Fatalf("found only %d walkthrough command lines in the README", n)
	}

	work := t.TempDir()
	t.Cleanup(func() { killNodes(t, work) })
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "deploy/dev/walkthrough.sh"))
	cmd.Dir = root
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + work, "BIN=" + bin.dir, "WORK=" + filepath.Join(work, "w")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough.sh: %v\n%s", err, out)
	}
	for _, want := range []string{
		"create demo: done: phase Ready",
		"(2 rows)",
		"is primary (failover, was node",
		"repair succeeded (op-",
		"Last failover: ",
		"backup demo: done",
		"restore demo into demo-restored: done",
		"switchover demo: done",
		"Cluster demo deleted.",
		"Walkthrough complete.",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("walkthrough output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("walkthrough output:\n%s", tail(string(out), 2500))
}
