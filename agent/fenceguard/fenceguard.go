// Package fenceguard is the fencing guard: a small process beside the agent
// that holds the deadline until which the agent last proved it may accept
// writes, and kills the local PostgreSQL when that deadline passes without a
// newer one. It makes "no provable leadership ⇒ not writable" hold when the
// agent itself is not scheduled: frozen (SIGSTOP), deadlocked, stuck in a
// system call or starved of CPU. Agent death is covered separately by the
// postmaster's parent-death signal.
//
// The agent runs the guard as `dbpilot-agent fence-guard` (see Start) and
// talks to it over the guard's standard input, one command per line:
//
//	arm <postmaster pid> <deadline>   deadline in ns of CLOCK_MONOTONIC
//	disarm
//
// CLOCK_MONOTONIC is system-wide and unaffected by wall-clock steps, so both
// processes read the same clock. The guard reports on standard output, one
// line per event ("fenced pid=… late_ms=… children=…"). On end of input (the
// agent exited or closed it) an armed guard still enforces its deadline,
// then exits.
//
// Fencing follows the PostgreSQL documentation on server shutdown: a
// backend whose postmaster died keeps serving its session until it notices,
// so killing the postmaster alone is not enough. The guard stops the
// postmaster (SIGSTOP: it can fork no new backend), kills every child it has
// (SIGKILL), then kills the postmaster. No commit can be acknowledged after
// that; the next start runs crash recovery.
package fenceguard

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Subcommand is the agent's hidden subcommand that runs Serve.
const Subcommand = "fence-guard"

// MonoNow is the current CLOCK_MONOTONIC reading as a duration since an
// arbitrary, system-wide origin.
func MonoNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		// CLOCK_MONOTONIC exists on every Linux this runs on; failing
		// here would make every deadline wrong, so do not guess.
		panic(fmt.Sprintf("clock_gettime(CLOCK_MONOTONIC): %v", err))
	}
	return time.Duration(ts.Nano())
}

// Guard is the agent's handle on a running guard process. Safe for
// concurrent use.
type Guard struct {
	log *zap.Logger
	exe string

	mu    sync.Mutex
	cmd   *exec.Cmd
	in    io.WriteCloser
	done  chan struct{}
	armed bool
	pid   int
	dl    time.Duration // last deadline sent (monotonic)
}

// Start runs `exe fence-guard` as a child process and returns its handle.
// exe is the agent's own binary (os.Executable). Guard reports are logged
// to log. Errors: the process could not be started.
func Start(exe string, log *zap.Logger) (*Guard, error) {
	g := &Guard{log: log, exe: exe}
	if err := g.spawn(); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *Guard) spawn() error {
	cmd := exec.Command(g.exe, Subcommand)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("fence guard: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("fence guard: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("fence guard: start %s %s: %w", g.exe, Subcommand, err)
	}
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			g.log.Warn("fence guard", zap.String("report", sc.Text()))
		}
		_ = cmd.Wait()
		close(done)
	}()
	g.cmd, g.in, g.done, g.armed, g.pid, g.dl = cmd, in, done, false, 0, 0
	g.log.Info("fence guard started", zap.Int("pid", cmd.Process.Pid))
	return nil
}

// Arm tells the guard to kill the postmaster pid unless a newer deadline
// arrives within left (from now; ≤ 0 fences at once). A guard that died is
// restarted. Errors: the guard could not be reached or restarted.
func (g *Guard) Arm(pid int, left time.Duration) error {
	dl := MonoNow() + left
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.armed && g.pid == pid && absDur(dl-g.dl) < 5*time.Millisecond {
		return nil
	}
	if err := g.sendLocked(fmt.Sprintf("arm %d %d\n", pid, int64(dl))); err != nil {
		return err
	}
	g.armed, g.pid, g.dl = true, pid, dl
	return nil
}

// Disarm tells the guard there is nothing to enforce (this node is not a
// writable primary). Errors: the guard could not be reached or restarted.
func (g *Guard) Disarm() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.armed && g.cmd != nil {
		return nil
	}
	if err := g.sendLocked("disarm\n"); err != nil {
		return err
	}
	g.armed = false
	return nil
}

func (g *Guard) sendLocked(line string) error {
	alive := g.cmd != nil
	if alive {
		select {
		case <-g.done:
			alive = false
		default:
		}
	}
	if !alive {
		g.log.Warn("fence guard not running; restarting it")
		if err := g.spawn(); err != nil {
			return err
		}
	}
	if _, err := io.WriteString(g.in, line); err != nil {
		return fmt.Errorf("fence guard: write: %w", err)
	}
	return nil
}

// Pid returns the guard process's pid (0 if none).
func (g *Guard) Pid() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil || g.cmd.Process == nil {
		return 0
	}
	return g.cmd.Process.Pid
}

// Close disarms the guard, closes its input and waits (bounded) for it to
// exit. Call it once the database is stopped or handed over.
func (g *Guard) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil {
		return nil
	}
	_, _ = io.WriteString(g.in, "disarm\n")
	err := g.in.Close()
	select {
	case <-g.done:
	case <-time.After(2 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
	g.cmd = nil
	return err
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// command is one parsed input line.
type command struct {
	arm      bool
	pid      int
	deadline time.Duration
	eof      bool
}

// ParseCommand parses one input line of the guard protocol.
// Errors: an unknown command or malformed numbers (the line is ignored).
func ParseCommand(line string) (arm bool, pid int, deadline time.Duration, err error) {
	f := strings.Fields(line)
	switch {
	case len(f) == 1 && f[0] == "disarm":
		return false, 0, 0, nil
	case len(f) == 3 && f[0] == "arm":
		p, err := strconv.Atoi(f[1])
		if err != nil || p <= 1 {
			return false, 0, 0, fmt.Errorf("arm: bad pid %q", f[1])
		}
		d, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || d <= 0 {
			return false, 0, 0, fmt.Errorf("arm: bad deadline %q", f[2])
		}
		return true, p, time.Duration(d), nil
	}
	return false, 0, 0, fmt.Errorf("unknown command %q", line)
}

// Serve is the guard process: it reads commands from in and enforces the
// armed deadline, writing one report line per event to out. It returns nil
// at end of input once no deadline is armed (an armed one is enforced
// first).
func Serve(in io.Reader, out io.Writer) error {
	cmds := make(chan command)
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			arm, pid, dl, err := ParseCommand(sc.Text())
			if err != nil {
				fmt.Fprintf(out, "ignored: %v\n", err)
				continue
			}
			cmds <- command{arm: arm, pid: pid, deadline: dl}
		}
		cmds <- command{eof: true}
	}()
	var (
		armed    bool
		pid      int
		start    uint64 // the armed pid's start time, to survive pid reuse
		deadline time.Duration
		eof      bool
		timer    = time.NewTimer(time.Hour)
	)
	for {
		if eof && !armed {
			return nil
		}
		if armed {
			timer.Reset(max(deadline-MonoNow(), 0))
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case c := <-cmds:
			switch {
			case c.eof:
				eof = true
				cmds = nil
			case c.arm:
				if c.pid != pid || !armed {
					st, err := startTime(c.pid)
					if err != nil {
						fmt.Fprintf(out, "ignored: arm %d: %v\n", c.pid, err)
						continue
					}
					start = st
				}
				armed, pid, deadline = true, c.pid, c.deadline
			default:
				armed = false
			}
		case <-timer.C:
			if !armed || MonoNow() < deadline {
				continue
			}
			late := MonoNow() - deadline
			n, err := Fence(pid, start)
			armed = false
			fmt.Fprintf(out, "fenced pid=%d late_ms=%d children=%d err=%v\n", pid, late.Milliseconds(), n, err)
		}
	}
}

// ErrGone is returned by Fence when the process is no longer the one armed.
var ErrGone = errors.New("process gone")

// Fence stops the postmaster pid (if it is still the process that started
// at start, in clock ticks since boot), kills all its children, then kills
// it. It returns how many children were killed.
func Fence(pid int, start uint64) (int, error) {
	if st, err := startTime(pid); err != nil || st != start {
		return 0, ErrGone
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return 0, fmt.Errorf("stop postmaster: %w", err)
	}
	kids := children(pid)
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return len(kids), fmt.Errorf("kill postmaster: %w", err)
	}
	return len(kids), nil
}

// stat reads the fields of /proc/pid/stat after the command name.
func stat(pid int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strings.Fields(s[i+1:]), nil
}

// startTime is field 22 of /proc/pid/stat (start time in clock ticks).
func startTime(pid int) (uint64, error) {
	f, err := stat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// children lists the pids whose parent is pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := stat(p)
		if err != nil || len(f) < 2 {
			continue
		}
		if pp, _ := strconv.Atoi(f[1]); pp == pid {
			out = append(out, p)
		}
	}
	return out
}
