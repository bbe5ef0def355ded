package agent_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/agent/localcluster"
)

func postmasterPID(t *testing.T, n *localcluster.Node) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.Dir, "data", "postmaster.pid"))
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func waitLog(t *testing.T, n *localcluster.Node, d time.Duration, subs ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		b, _ := os.ReadFile(n.LogPath)
		ok := true
		for _, s := range subs {
			ok = ok && bytes.Contains(b, []byte(s))
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: log never showed %q", n.Name, subs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHandlersNeverStopAHealthyDatabase: a hanging onChange handler, a
// failing health handler and a bad configuration on SIGHUP are each logged,
// and the running PostgreSQL is never restarted or stopped by them.
func TestHandlersNeverStopAHealthyDatabase(t *testing.T) {
	flags := handlerDir(t) // read by handlers running as the PostgreSQL OS user
	c := startCluster(t, localcluster.Options{Nodes: 2, Handlers: map[string]any{
		"onChange": map[string]any{"shell": "sleep 600", "timeout": "1s"},
		"health":   map[string]any{"shell": "test ! -f " + flags + "/$DBPILOT_NODE.unhealthy", "timeout": "2s", "interval": "200ms", "threshold": 2},
		"preStop":  map[string]any{"shell": "exit 1", "timeout": "2s"},
	}})
	s := waitFor(t, c, 90*time.Second, "a primary and a streaming replica", healthy(c, false))
	pi, ri := c.Index(s.Leader), 1-c.Index(s.Leader)
	primaryPID, replicaPID := postmasterPID(t, c.Nodes[pi]), postmasterPID(t, c.Nodes[ri])

	// onChange hangs: killed at its timeout, logged, nothing else happens.
	waitLog(t, c.Nodes[pi], 30*time.Second, `"handler finished"`, `"status":"timed_out"`)

	// The replica's health handler fails: it turns unhealthy, PostgreSQL keeps running.
	if err := os.WriteFile(filepath.Join(flags, c.Nodes[ri].Name+".unhealthy"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, 20*time.Second, "the replica reported unhealthy", func(s localcluster.Status) bool {
		m, ok := s.Member(c.Nodes[ri].Name)
		return ok && !m.Healthy && m.Running
	})
	_ = os.Remove(filepath.Join(flags, c.Nodes[ri].Name+".unhealthy"))
	waitFor(t, c, 20*time.Second, "the replica healthy again", healthy(c, false))

	// SIGHUP with a typo'd key: rejected, the running configuration stays.
	cfg := c.Nodes[pi].ConfigPath
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append(orig, []byte("ttll: 5s\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(c.Nodes[pi].Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, c.Nodes[pi], 10*time.Second, "new configuration rejected", "ttll: unknown key")
	if err := os.WriteFile(cfg, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, c, 10*time.Second, "the cluster unchanged", healthy(c, false))
	if s.Leader != c.Nodes[pi].Name {
		t.Fatalf("leader moved to %s", s.Leader)
	}
	if p, r := postmasterPID(t, c.Nodes[pi]), postmasterPID(t, c.Nodes[ri]); p != primaryPID || r != replicaPID {
		t.Fatalf("PostgreSQL was restarted: primary pid %d→%d, replica pid %d→%d", primaryPID, p, replicaPID, r)
	}
}

// TestPreStartFailureStartsNothing and an unreachable etcd: the agent starts
// no database, says why, and exits cleanly on SIGTERM.
func TestStartupFailures(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds.yaml")
	if err := os.WriteFile(creds, []byte("superuser: {password: a}\nreplication: {password: b}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := func(name, extra string) string {
		p := filepath.Join(dir, name+".yaml")
		y := "node: {name: n1, address: 127.0.0.1}\ncluster: {namespace: t, name: c}\n" +
			"etcd: {endpoints: ['http://127.0.0.1:1'], dial_timeout: 200ms}\nstate_dir: " + dir + "/" + name + "-state\n" +
			"postgres: {data_dir: " + dir + "/" + name + "-data, port: 1, credentials_file: " + creds + "}\nhttp: {listen: '127.0.0.1:0'}\n" + extra
		if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("preStart exit 3 aborts start-up", func(t *testing.T) {
		out, err := exec.Command(agentBin, "run", "--config", conf("prestart", "handlers: {preStart: {shell: 'echo preparing; exit 3'}}\n")).CombinedOutput()
		if err == nil || !bytes.Contains(out, []byte("preStart handler failed: nothing started")) || !bytes.Contains(out, []byte("preparing")) {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "prestart-data")); !os.IsNotExist(err) {
			t.Fatalf("data dir created despite preStart failure: %v", err)
		}
	})

	t.Run("unreachable etcd is retried and reported", func(t *testing.T) {
		var buf syncBuffer
		cmd := exec.Command(agentBin, "run", "--config", conf("noetcd", ""))
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		deadline := time.Now().Add(20 * time.Second)
		for !bytes.Contains(buf.Bytes(), []byte("etcd unreachable; retrying")) {
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				t.Fatalf("no etcd error logged:\n%s", buf.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatal("agent did not exit on SIGTERM while etcd was unreachable")
		}
		if _, err := os.Stat(filepath.Join(dir, "noetcd-data")); !os.IsNotExist(err) {
			t.Fatalf("data dir created without etcd: %v", err)
		}
	})

	t.Run("validate prints every problem and exits 2", func(t *testing.T) {
		p := filepath.Join(dir, "bad.yaml")
		_ = os.WriteFile(p, []byte("node: {name: 'Bad Name'}\nttl: 2500ms\nsynchronous_mode: maybe\n"), 0o644)
		out, err := exec.Command(agentBin, "validate", "--config", p).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("exit %v, want 2; output:\n%s", err, out)
		}
		for _, want := range []string{"node.name: must match", "node.address: required", "ttl: must be whole seconds", `synchronous_mode: must be "off" or "on"`, "postgres.data_dir: required"} {
			if !bytes.Contains(out, []byte(want)) {
				t.Errorf("missing %q in:\n%s", want, out)
			}
		}
	})
}

// syncBuffer is a bytes.Buffer safe for the writer goroutine of exec.Cmd and
// a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }
