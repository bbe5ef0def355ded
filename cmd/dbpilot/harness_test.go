package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bin holds the real binaries TestMain builds: the CLI (with the race
// detector), the server and the agent the server's process provider runs.
var bin struct{ dir, cli, server string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dbpilot-cli-bin-")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	// PostgreSQL's OS user runs the agent binary as archive_command and
	// restore_command (wal-push, wal-fetch): it must reach it.
	_ = os.Chmod(dir, 0o755)
	bin.dir, bin.cli, bin.server = dir, filepath.Join(dir, "dbpilot"), filepath.Join(dir, "dbpilot-server")
	builds := [][]string{
		{"build", "-race", "-o", bin.cli, "github.com/dbpilot/dbpilot/cmd/dbpilot"},
		{"build", "-o", dir + "/", "github.com/dbpilot/dbpilot/cmd/dbpilot-server", "github.com/dbpilot/dbpilot/cmd/dbpilot-agent"},
	}
	for _, b := range builds {
		if out, err := exec.Command("go", b...).CombinedOutput(); err != nil {
			fmt.Printf("go %s: %v\n%s", strings.Join(b, " "), err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// devServer is a running `dbpilot-server dev`.
type devServer struct {
	url, token, dir string
}

// startServer runs `dbpilot-server dev` on a free port in a temp folder;
// cleanup stops it and every node process it started (the process
// provider leaves nodes running when the server exits).
func startServer(t *testing.T) devServer {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(bin.server, "dev", "--dir", filepath.Join(dir, "server"), "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		killNodes(t, dir)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Logf("server log (tail):\n%s", tail(string(b), 3000))
		}
	})
	vars := make(chan map[string]string, 1)
	go func() {
		defer close(done)
		got := map[string]string{}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok {
				got[k] = v
				if len(got) == 2 {
					vars <- got
				}
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case v := <-vars:
		return devServer{url: v["DBPILOT_SERVER"], token: v["DBPILOT_TOKEN"], dir: dir}
	case <-done:
		b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		t.Fatalf("dbpilot-server dev exited before printing its address:\n%s", b)
	case <-time.After(90 * time.Second):
		t.Fatal("dbpilot-server dev did not print its address within 90s")
	}
	return devServer{}
}

// killNodes kills the process group of every process whose command line
// names a path under dir: the agents (and their PostgreSQL) this test's
// server started, and nothing else.
func killNodes(t *testing.T, dir string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(dir)) {
			continue
		}
		pgid, err := syscall.Getpgid(pid)
		if err == nil && pgid == pid {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		} else {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Logf("killed leftover node process %d: %s", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// cli runs the real dbpilot binary with a private config folder.
type cli struct {
	t   *testing.T
	xdg string
	env []string
}

func newCLI(t *testing.T, env ...string) *cli {
	return &cli{t: t, xdg: t.TempDir(), env: env}
}

// result of one run.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("dbpilot %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

func (c *cli) environ(extra []string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.xdg, "XDG_CONFIG_HOME=" + c.xdg, "TERM=xterm"}
	env = append(env, c.env...)
	return append(env, extra...)
}

// run runs dbpilot with args (stdin empty, stdout and stderr pipes: not a
// terminal) and checks that the output has no control characters.
func (c *cli) run(args ...string) result {
	return c.runEnv(nil, args...)
}

func (c *cli) runEnv(extra []string, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.cli, args...)
	cmd.Env = c.environ(extra)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("dbpilot %v: %v", args, err)
	}
	for name, s := range map[string]string{"stdout": r.stdout, "stderr": r.stderr} {
		for i, ch := range []byte(s) {
			if (ch < 0x20 && ch != '\n' && ch != '\t') || ch == 0x7f {
				c.t.Errorf("non-terminal %s has control character %#x at byte %d:\n%s", name, ch, i, r)
				break
			}
		}
	}
	return r
}

// ok runs and requires exit 0.
func (c *cli) ok(args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("want exit 0, got %s", r)
	}
	return r
}

// exit runs and requires exit code want and stderr containing every
// fragment.
func (c *cli) exit(want int, args []string, fragments ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != want {
		c.t.Fatalf("want exit %d, got %s", want, r)
	}
	for _, f := range fragments {
		if !strings.Contains(r.stderr, f) {
			c.t.Errorf("stderr lacks %q: %s", f, r)
		}
	}
	return r
}

// json runs with -o json, requires exit 0, and decodes stdout.
func (c *cli) json(args ...string) map[string]any {
	c.t.Helper()
	r := c.ok(append(args, "-o", "json")...)
	var v map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		c.t.Fatalf("stdout is not a JSON object: %v\n%s", err, r)
	}
	return v
}

// items returns v["items"] as objects.
func items(t *testing.T, v map[string]any) []map[string]any {
	t.Helper()
	raw, ok := v["items"].([]any)
	if !ok {
		t.Fatalf("no items array in %v", v)
	}
	out := make([]map[string]any, 0, len(raw))
	for _, it := range raw {
		out = append(out, it.(map[string]any))
	}
	return out
}

// background is a dbpilot process left running (events --follow).
type background struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (b *background) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.Write(p)
}

func (b *background) output() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.String()
}

// start runs dbpilot in the background; cleanup interrupts it.
func (c *cli) start(args ...string) *background {
	c.t.Helper()
	b := &background{cmd: exec.Command(bin.cli, args...), done: make(chan struct{})}
	b.cmd.Env = c.environ(nil)
	b.cmd.Stdout, b.cmd.Stderr = b, b
	if err := b.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	c.t.Cleanup(func() { b.stop() })
	return b
}

// stop interrupts the process and waits for it; it returns the exit code.
func (b *background) stop() int {
	_ = b.cmd.Process.Signal(os.Interrupt)
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
	return b.cmd.ProcessState.ExitCode()
}

// runTTY runs dbpilot with stdin and stderr on a pseudo-terminal (stdout
// stays a pipe), typing input; it returns what the terminal showed.
func (c *cli) runTTY(input string, args ...string) (r result, terminal string) {
	c.t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		c.t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		c.t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		c.t.Fatal(err)
	}
	pts, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.cli, args...)
	cmd.Env = c.environ(nil)
	var stdout bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, &stdout, pts
	var term bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			k, err := ptmx.Read(buf)
			term.Write(buf[:k])
			if err != nil {
				return
			}
		}
	}()
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	pts.Close()
	if input != "" {
		if _, err := ptmx.Write([]byte(input)); err != nil {
			c.t.Fatal(err)
		}
	}
	err = cmd.Wait()
	// All writers of the pts are gone: the reader gets EIO after draining.
	<-read
	r = result{args: args, stdout: stdout.String(), stderr: term.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return r, term.String()
}
