package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validateConfig writes an agent config holding extra under postgres: and
// returns its path. The PostgreSQL binaries are empty stand-ins.
func validateConfig(t *testing.T, postgresExtra string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"initdb", "postgres", "pg_basebackup", "pg_rewind", "pg_controldata"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	creds := filepath.Join(dir, "credentials.yaml")
	if err := os.WriteFile(creds, []byte("superuser: {password: s}\nreplication: {password: r}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `node: {name: n1, address: 127.0.0.1}
cluster: {namespace: prod, name: billing}
etcd: {endpoints: ["http://127.0.0.1:2379"]}
state_dir: state
postgres:
  bin_dir: ` + bin + `
  data_dir: data
  credentials_file: ` + creds + `
` + postgresExtra
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runValidate(t *testing.T, path string) (stdout string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs([]string{"validate", "--config", path})
	err = cmd.Execute()
	return out.String(), err
}

// TestValidateReportsStartupProblems: what run would refuse at start-up is
// reported by validate, all at once, with config paths, exit status 2.
func TestValidateReportsStartupProblems(t *testing.T) {
	root := os.Geteuid() == 0
	extra := "  parameters: {cluster_name: x, Port: '5433'}\n  bin_dir: relative/bin\n"
	if root {
		extra += "  os_user: root\n"
	}
	path := validateConfig(t, "")
	// The extra keys replace the generated bin_dir.
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "  bin_dir:") {
			lines = append(lines[:i], lines[i+1:]...)
			break
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+extra), 0o600); err != nil {
		t.Fatal(err)
	}

	_, err := runValidate(t, path)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("validate: err = %v, want exit status 2", err)
	}
	msg := ee.err.Error()
	want := []string{
		path + ": invalid configuration:",
		"  - postgres.bin_dir: must be an absolute path",
		"  - postgres.parameters.Port: is managed by the agent; remove it (use postgres.port instead)",
		"  - postgres.parameters.cluster_name: is managed by the agent; remove it (the agent sets it to node.name)",
	}
	if root {
		want = append(want, `  - postgres.os_user: "root" is root (uid 0)`)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("validate output lacks %q:\n%s", w, msg)
		}
	}
	for _, goName := range []string{"Parameters.", "OSUser", "BinDir"} {
		if strings.Contains(msg, goName) {
			t.Errorf("validate output names the Go field %s:\n%s", goName, msg)
		}
	}
}

func TestValidateEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte("# to be written\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := runValidate(t, path)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(ee.err.Error(), "the file has no settings; set at least node.name") ||
		strings.Contains(ee.err.Error(), "listen_address") {
		t.Fatalf("validate of an empty file: %v", err)
	}
}

func TestValidateOK(t *testing.T) {
	out, err := runValidate(t, validateConfig(t, ""))
	if err != nil || !strings.Contains(out, ": ok (node n1, cluster prod/default/billing)") {
		t.Fatalf("validate of a good file: out %q, err %v", out, err)
	}
}
