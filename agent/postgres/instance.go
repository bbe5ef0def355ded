package postgres

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// Instance manages one local PostgreSQL data directory. Create it with
// [New]. Its methods are safe for concurrent use, but lifecycle operations
// (Initdb, Start, Stop, BaseBackup, Rewind, RemoveDataDir, Promote) are meant
// to be issued one at a time by the HA loop; Status and Running may be called
// at any time.
type Instance struct {
	cfg  Config
	log  *zap.Logger
	cred *syscall.Credential // nil: run PostgreSQL programs as the agent's user
	home string              // HOME for PostgreSQL programs
	path string              // PATH for PostgreSQL programs

	mu        sync.Mutex
	proc      *process          // postmaster started by this Instance, nil if none
	role      Role              // role last started or configured, "" if unknown (e.g. found running)
	conninfo  string            // replica's primary_conninfo, "" for none
	syncNames []string          // synchronous standbys last set
	recovery  map[string]string // recovery settings while StartRecovery runs, nil otherwise

	poolMu sync.Mutex
	pool   *pgxpool.Pool // local superuser connections (localConn), nil until first use
	// metricsPool is the metrics collector's own connection (MetricsConn),
	// nil until first use.
	metricsPool *pgxpool.Pool
}

// process is a postmaster started by this Instance.
type process struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{} // closed after the postmaster has been reaped
	err  error         // exit error, valid after done is closed

	mu       sync.Mutex
	stopping StopMode // non-empty once Stop signalled it
}

func (pr *process) exited() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

// New validates cfg and resolves the OS user PostgreSQL runs as. It performs
// no I/O on the data directory besides checks. A nil log discards logs.
//
// When the agent runs as root, cfg.OSUser is required and must not be root;
// when it is not root, PostgreSQL programs run as the agent's user. Errors
// name the offending Config field.
func New(cfg Config, log *zap.Logger) (*Instance, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("postgres config: %w", err)
	}
	cfg = cfg.withDefaults()
	p := &Instance{
		cfg:  cfg,
		log:  log.Named("postgres").With(zap.String("data_dir", cfg.DataDir)),
		path: os.Getenv("PATH"),
	}
	if p.path == "" {
		p.path = "/usr/local/bin:/usr/bin:/bin"
	}
	if err := p.resolveUser(); err != nil {
		return nil, fmt.Errorf("postgres config: %w", err)
	}
	return p, nil
}

func (p *Instance) resolveUser() error {
	if os.Geteuid() != 0 {
		p.home = "/"
		if h, err := os.UserHomeDir(); err == nil {
			p.home = h
		}
		if cur, err := user.Current(); err == nil && p.cfg.OSUser != "" && p.cfg.OSUser != cur.Username {
			p.log.Warn("agent is not root: running PostgreSQL as the current user, not OSUser",
				zap.String("os_user", p.cfg.OSUser), zap.String("current_user", cur.Username))
		}
		return nil
	}
	if p.cfg.OSUser == "" {
		return errors.New("OSUser: required when the agent runs as root (PostgreSQL refuses to run as root)")
	}
	u, err := user.Lookup(p.cfg.OSUser)
	if err != nil {
		return fmt.Errorf("OSUser: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return fmt.Errorf("OSUser: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return fmt.Errorf("OSUser: gid %q: %w", u.Gid, err)
	}
	if uid == 0 {
		return fmt.Errorf("OSUser: %q is root; PostgreSQL refuses to run as root", p.cfg.OSUser)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return fmt.Errorf("OSUser: groups of %q: %w", p.cfg.OSUser, err)
	}
	groups := make([]uint32, 0, len(gids))
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return fmt.Errorf("OSUser: group id %q: %w", g, err)
		}
		groups = append(groups, uint32(n))
	}
	p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}
	p.home = u.HomeDir
	if p.home == "" {
		p.home = "/"
	}
	return nil
}

// DataDir returns the configured data directory.
func (p *Instance) DataDir() string { return p.cfg.DataDir }

// IsInitialized reports whether the data directory holds a cluster, that is
// whether DataDir/PG_VERSION exists.
func (p *Instance) IsInitialized() bool {
	_, err := os.Stat(filepath.Join(p.cfg.DataDir, "PG_VERSION"))
	return err == nil
}

// Running reports whether a postmaster is alive for the data directory:
// either one this Instance started, or one recorded in postmaster.pid.
func (p *Instance) Running() bool {
	p.mu.Lock()
	proc := p.proc
	p.mu.Unlock()
	if proc != nil && !proc.exited() {
		return true
	}
	_, alive, _ := p.postmasterFromPIDFile()
	return alive
}

// PostmasterPID returns the pid of the running postmaster, from this
// Instance's child or postmaster.pid; ok is false if none is running.
func (p *Instance) PostmasterPID() (pid int, ok bool) {
	p.mu.Lock()
	proc := p.proc
	p.mu.Unlock()
	if proc != nil && !proc.exited() {
		return proc.pid, true
	}
	pid, alive, _ := p.postmasterFromPIDFile()
	return pid, alive
}

// postmasterFromPIDFile reads DataDir/postmaster.pid. exists is true if the
// file names a pid; alive if that pid is a live postmaster of this data
// directory (see processAlive).
func (p *Instance) postmasterFromPIDFile() (pid int, alive, exists bool) {
	b, err := os.ReadFile(filepath.Join(p.cfg.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, false, false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err = strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, false, false
	}
	return pid, processAlive(pid, p.cfg.DataDir), true
}

// processAlive reports whether pid is a live (not zombie) process that looks
// like a postmaster of dataDir: its working directory is the data directory
// (the postmaster chdirs there), or, if that cannot be read, its command line
// mentions postgres. This guards against stale postmaster.pid files whose
// pid was reused, and against zombies left when no init reaps orphans.
func processAlive(pid int, dataDir string) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	proc := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(proc + "/stat")
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		if s := stat[i+2]; s == 'Z' || s == 'X' {
			return false
		}
	}
	if cwd, err := os.Readlink(proc + "/cwd"); err == nil {
		want := dataDir
		if real, err := filepath.EvalSymlinks(dataDir); err == nil {
			want = real
		}
		return strings.TrimSuffix(cwd, " (deleted)") == want
	}
	if cmdline, err := os.ReadFile(proc + "/cmdline"); err == nil {
		return bytes.Contains(cmdline, []byte("postgres")) || bytes.Contains(cmdline, []byte("postmaster"))
	}
	return true
}
