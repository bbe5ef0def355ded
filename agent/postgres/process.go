package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Start renders the configuration for role, writes (replica) or removes
// (primary) standby.signal, and runs `postgres -D DataDir` as a direct child
// of the agent, as the OS user, with stdout and stderr appended to
// Config.LogFile. It then waits, bounded by ctx, until the server accepts
// connections (for a replica: until it reached a consistent state; hot
// standby is always on).
//
// Fencing: the postmaster is started with the parent-death signal SIGKILL
// and stays in the agent's process group, so it dies with the agent (see the
// package documentation).
//
// For RoleReplica, up is the primary to stream from; nil starts a standby
// without primary_conninfo that replays local WAL only (to be pointed at a
// primary with Follow, or promoted). up is ignored for RolePrimary. A
// replica streams through its replication slot (primary_slot_name =
// [SlotName] of NodeName), which Start first creates on up if it is missing
// (best effort, at most 3 s).
//
// A data directory whose pg_control says it was last a standby ("in archive
// recovery", "shut down in recovery", also the state pg_rewind leaves) is
// refused as a primary with ErrWrongRole: without standby.signal it would
// end recovery and accept writes without switching to a new timeline,
// forking history; start it as a replica and call Promote instead.
//
// Errors: ErrAlreadyRunning if a postmaster is running for the data directory
// (a stale postmaster.pid is removed with a warning); ErrNotInitialized;
// ErrPostmasterExited (with the log tail) if PostgreSQL exits while starting;
// ctx's error if it expires first, in which case the postmaster is left
// running (a replica may still be replaying WAL) and Stop abandons it.
func (p *Instance) Start(ctx context.Context, role Role, up *Upstream) error {
	switch role {
	case RolePrimary:
		up = nil
	case RoleReplica:
		if up != nil {
			if err := validUpstream(up); err != nil {
				return fmt.Errorf("start postgres as replica: %w", err)
			}
		}
	default:
		return fmt.Errorf("start postgres: unknown role %q", role)
	}
	if !p.IsInitialized() {
		return fmt.Errorf("start postgres as %s: %w", role, ErrNotInitialized)
	}
	if up != nil && !p.Running() {
		p.ensureUpstreamSlot(ctx, *up)
	}
	if role == RolePrimary && !p.Running() {
		cd, err := p.ControlData(ctx)
		if err != nil {
			return fmt.Errorf("start postgres as primary: %w", err)
		}
		if cd.ClusterState == "in archive recovery" || cd.ClusterState == "shut down in recovery" {
			return fmt.Errorf("start postgres as primary: cluster state %q: data directory was last a standby; start as replica and promote: %w",
				cd.ClusterState, ErrWrongRole)
		}
	}
	proc, err := p.spawn(role, up)
	if err != nil {
		return fmt.Errorf("start postgres as %s: %w", role, err)
	}
	start := time.Now()
	if err := p.waitAccepting(ctx, proc); err != nil {
		return fmt.Errorf("start postgres as %s: %w", role, err)
	}
	p.log.Info("postgres accepting connections", zap.String("role", string(role)),
		zap.Int("pid", proc.pid), zap.Duration("took", time.Since(start)))
	return nil
}

func validUpstream(up *Upstream) error {
	switch {
	case up == nil:
		return errors.New("upstream: required for a replica")
	case up.Host == "" || hasControl(up.Host):
		return fmt.Errorf("upstream: invalid host %q", up.Host)
	case up.Port < 1 || up.Port > 65535:
		return fmt.Errorf("upstream: port must be in 1-65535 (got %d)", up.Port)
	}
	return nil
}

// spawn renders the configuration and starts the postmaster, atomically with
// respect to other spawns and the running check.
func (p *Instance) spawn(role Role, up *Upstream) (*process, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil && !p.proc.exited() {
		return nil, fmt.Errorf("%w (pid %d, started by this agent)", ErrAlreadyRunning, p.proc.pid)
	}
	if pid, alive, exists := p.postmasterFromPIDFile(); alive {
		return nil, fmt.Errorf("%w (pid %d from postmaster.pid)", ErrAlreadyRunning, pid)
	} else if exists {
		p.log.Warn("removing stale postmaster.pid", zap.Int("pid", pid))
		if err := removeIfExists(filepath.Join(p.cfg.DataDir, "postmaster.pid")); err != nil {
			return nil, err
		}
	}
	conninfo := ""
	if up != nil {
		conninfo = p.cfg.primaryConninfo(*up)
	}
	if err := p.renderLocked(role, conninfo, p.syncNames); err != nil {
		return nil, err
	}
	if err := p.writeSignalFiles(role); err != nil {
		return nil, err
	}
	logf, err := p.openLogFile()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(p.cfg.BinDir, "postgres"), "-D", p.cfg.DataDir)
	cmd.Dir = "/"
	cmd.Env = p.env()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = p.sysProcAttr()
	exited, err := startPinned(cmd)
	logf.Close() // the child has its own descriptor
	if err != nil {
		return nil, fmt.Errorf("run postgres: %w", err)
	}
	proc := &process{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	p.resetLocalPool() // whatever it held reached an earlier server
	go p.reap(proc, exited)
	p.proc, p.role, p.conninfo = proc, role, conninfo
	fields := []zap.Field{zap.String("role", string(role)), zap.Int("pid", proc.pid), zap.String("log_file", p.cfg.LogFile)}
	if up != nil {
		fields = append(fields, zap.String("upstream", up.Name), zap.String("upstream_host", up.Host), zap.Int("upstream_port", up.Port))
	}
	p.log.Info("postgres started", fields...)
	return proc, nil
}

// reap records the postmaster's exit. It logs before closing done so that
// nothing is logged after Stop has returned.
func (p *Instance) reap(proc *process, exited <-chan error) {
	err := <-exited
	proc.err = err
	proc.mu.Lock()
	mode := proc.stopping
	proc.mu.Unlock()
	if mode != "" {
		p.log.Info("postgres exited", zap.Int("pid", proc.pid), zap.String("stop_mode", string(mode)), zap.Error(err))
	} else {
		p.log.Warn("postgres exited unexpectedly", zap.Int("pid", proc.pid), zap.Error(err))
	}
	p.resetLocalPool()
	close(proc.done)
}

// openLogFile opens Config.LogFile for appending, creating it owned by the
// OS user.
func (p *Instance) openLogFile() (*os.File, error) {
	path := p.cfg.LogFile
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create log dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	if err := p.chown(path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// waitAccepting polls until the server accepts a connection, the postmaster
// exits, or ctx expires.
func (p *Instance) waitAccepting(ctx context.Context, proc *process) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = p.ping(ctx); last == nil {
			return nil
		}
		select {
		case <-proc.done:
			tail, err := readTail(p.cfg.LogFile, 4<<10)
			if err != nil {
				tail = fmt.Sprintf("(cannot read %s: %v)", p.cfg.LogFile, err)
			}
			return fmt.Errorf("%w (%v); last lines of %s:\n%s", ErrPostmasterExited, proc.err, p.cfg.LogFile, lastLines(tail, 20))
		case <-ctx.Done():
			return fmt.Errorf("wait for connections (last attempt: %v): %w", last, ctx.Err())
		case <-tick.C:
		}
	}
}

// ping connects and runs SELECT 1, each attempt bounded to 2 s.
func (p *Instance) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := p.Connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(ctx, conn)
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("select 1: %w", err)
	}
	return nil
}

// Stop shuts the postmaster down in the given mode (smart: SIGTERM, fast:
// SIGINT, immediate: SIGQUIT; see
// https://www.postgresql.org/docs/15/server-shutdown.html) and waits, bounded
// by ctx, until it has exited. A postmaster not started by this Instance is
// found through postmaster.pid, signalled and polled every 50 ms. Stop is
// idempotent: if nothing is running it returns nil.
//
// If ctx expires first the error wraps ctx's error and the postmaster may
// still be running; the caller can retry with a harsher mode.
func (p *Instance) Stop(ctx context.Context, mode StopMode) error {
	sig, err := mode.signal()
	if err != nil {
		return fmt.Errorf("stop postgres: %w", err)
	}
	start := time.Now()
	p.mu.Lock()
	proc := p.proc
	p.mu.Unlock()
	if proc != nil && !proc.exited() {
		proc.mu.Lock()
		proc.stopping = mode
		proc.mu.Unlock()
		if err := proc.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("stop postgres (%s): signal pid %d: %w", mode, proc.pid, err)
		}
		select {
		case <-proc.done:
			p.log.Info("postgres stopped", zap.String("mode", string(mode)), zap.Duration("took", time.Since(start)))
			return nil
		case <-ctx.Done():
			return fmt.Errorf("stop postgres (%s): pid %d still running: %w", mode, proc.pid, ctx.Err())
		}
	}

	pid, alive, _ := p.postmasterFromPIDFile()
	if !alive {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop postgres (%s): signal pid %d: %w", mode, pid, err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for processAlive(pid, p.cfg.DataDir) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("stop postgres (%s): pid %d still running: %w", mode, pid, ctx.Err())
		case <-tick.C:
		}
	}
	p.resetLocalPool()
	p.log.Info("postgres stopped (found via postmaster.pid)", zap.Int("pid", pid),
		zap.String("mode", string(mode)), zap.Duration("took", time.Since(start)))
	return nil
}
