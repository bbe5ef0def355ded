package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// sysProcAttr returns the attributes every PostgreSQL program is started
// with: the OS user's credentials when the agent is root, and SIGKILL as the
// parent-death signal so nothing we start outlives the agent. No Setpgid: the
// children stay in the agent's process group, so a SIGKILL to that group
// reaches them too.
func (p *Instance) sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGKILL}
}

// env is the complete environment of PostgreSQL programs: nothing of the
// agent's environment leaks in except PATH (no PGHOST, PGPASSWORD, ...), and
// the C locale keeps messages and pg_controldata labels in English.
func (p *Instance) env(extra ...string) []string {
	env := []string{"PATH=" + p.path, "HOME=" + p.home, "LC_ALL=C", "LANG=C"}
	return append(env, extra...)
}

// startPinned starts cmd from a goroutine locked to its OS thread and keeps
// that goroutine (and thread) alive until the child has been reaped; the
// returned channel then receives cmd.Wait's result. Linux delivers the
// parent-death signal when the *thread* that forked the child exits, not the
// process (https://go.dev/issue/27505); pinning guarantees the thread lives
// exactly as long as the agent needs the child.
func startPinned(cmd *exec.Cmd) (<-chan error, error) {
	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: when this goroutine returns, after the child is
		// reaped, the runtime terminates the thread, which no longer matters.
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return exited, nil
}

// runTool runs a PostgreSQL program from BinDir as the OS user and returns
// its combined output (the last 16 KiB). ctx cancellation kills it. On
// failure the error carries the last lines of output.
func (p *Instance) runTool(ctx context.Context, name string, args []string, extraEnv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(p.cfg.BinDir, name), args...)
	cmd.Dir = "/" // initdb and friends fail if they cannot resolve the cwd
	cmd.Env = p.env(extraEnv...)
	cmd.SysProcAttr = p.sysProcAttr()
	cmd.WaitDelay = 5 * time.Second
	out := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out // same writer: exec serialises writes
	exited, err := startPinned(cmd)
	if err != nil {
		return "", fmt.Errorf("run %s: %w", name, err)
	}
	err = <-exited
	output := out.String()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return output, fmt.Errorf("run %s: %w; output: %s", name, err, lastLines(output, 15))
	}
	return output, nil
}

// tailBuffer is an io.Writer keeping only the last max bytes written.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }

// lastLines returns the last n lines of s (trimmed), for error messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// readTail returns up to the last max bytes of a file, starting at a line
// boundary when possible.
func readTail(path string, max int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return "", err
	}
	s := string(b)
	if off > 0 {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return s, nil
}

// chown gives path to the OS user when the agent runs as root.
func (p *Instance) chown(path string) error {
	if p.cred == nil {
		return nil
	}
	if err := os.Lchown(path, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory and a rename, with the given mode and owned by the OS user.
func (p *Instance) writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := p.chown(tmp); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: persist the rename
		d.Close()
	}
	return nil
}

// writeSecretFile writes content to a new 0600 file owned by the OS user in
// the data directory's parent (which the OS user can traverse) and returns
// its path and a function removing it.
func (p *Instance) writeSecretFile(prefix, content string) (string, func(), error) {
	f, err := os.CreateTemp(filepath.Dir(p.cfg.DataDir), "."+prefix+"-*")
	if err != nil {
		return "", nil, fmt.Errorf("create %s file: %w", prefix, err)
	}
	path := f.Name()
	remove := func() { os.Remove(path) }
	_, werr := f.WriteString(content)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, p.chown(path)); err != nil {
		remove()
		return "", nil, fmt.Errorf("write %s file: %w", prefix, err)
	}
	return path, remove, nil
}

// passfileLine renders a .pgpass line matching any host, port and database
// for user; ':' and '\' are escaped as libpq requires
// (https://www.postgresql.org/docs/15/libpq-pgpass.html).
func passfileLine(user, password string) string {
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	return "*:*:*:" + esc.Replace(user) + ":" + esc.Replace(password) + "\n"
}

// ensureDataDir creates the data dir (and missing parents, 0755) with mode 0700 owned by
// the OS user, or fixes mode and owner of an existing dir.
func (p *Instance) ensureDataDir() error {
	dir := p.cfg.DataDir
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create parent of %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return p.chown(dir)
}

// dataDirEmpty reports whether the data directory is absent or empty.
func (p *Instance) dataDirEmpty() (bool, error) {
	f, err := os.Open(p.cfg.DataDir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("inspect %s: %w", p.cfg.DataDir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("inspect %s: %w", p.cfg.DataDir, err)
	}
	return len(names) == 0, nil
}
