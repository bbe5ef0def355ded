package infra

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/internal/localhost"
	"github.com/dbpilot/dbpilot/proto"
)

// ProcessHandle is the process provider's handle of one node.
type ProcessHandle struct {
	Dir      string `json:"dir"`
	Config   string `json:"config"`
	PID      int    `json:"pid"`
	PGPort   int    `json:"pg_port"`
	HTTPPort int    `json:"http_port"`
}

// Process runs each node as a local process group: one
// `dbpilot-agent run --config` whose PostgreSQL joins its group. Nodes live
// under Root/{cluster id}/{node}. Processes outlive the server: a restarted
// server adopts them through the pid in the handle.
type Process struct {
	root string
	// fs is root opened as an os.Root: every file operation on a node's
	// or cluster's folder goes through it, so a name that slipped past
	// validation still cannot reach outside root (no "..", absolute
	// path or symlink escapes).
	fs       *os.Root
	agentBin string
	osUser   string
	log      *zap.Logger

	backups string // root of the clusters' backup repositories ("": none)

	mu    sync.Mutex
	waits map[int]chan struct{} // pid → closed when the child we started exits
}

// SetBackupRoot makes nodes of templates with a backup policy back up into
// a filesystem repository dir/{cluster id}, shared by the cluster's nodes
// and kept when the cluster is deleted (so its backups can still be
// restored). Call it before the first Create.
func (p *Process) SetBackupRoot(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("backup root: %w", err)
	}
	if err := localhost.MkdirTraversable(abs); err != nil {
		return fmt.Errorf("backup root: %w", err)
	}
	p.backups = abs
	return nil
}

// BackupRepository returns cluster clusterID's repository folder ("" when
// backups are off, or clusterID is not a valid name).
func (p *Process) BackupRepository(clusterID string) string {
	if p.backups == "" || !proto.ValidName(clusterID) {
		return ""
	}
	return filepath.Join(p.backups, clusterID)
}

// NewProcess returns a process provider keeping nodes under root and
// running agentBin. When the server runs as root, PostgreSQL runs as the
// OS user "postgres".
func NewProcess(root, agentBin string, log *zap.Logger) (*Process, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("process provider root: %w", err)
	}
	if err := localhost.MkdirTraversable(abs); err != nil {
		return nil, fmt.Errorf("process provider root: %w", err)
	}
	fsroot, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("process provider root: %w", err)
	}
	p := &Process{root: abs, fs: fsroot, agentBin: agentBin, log: log.Named("process"), waits: map[int]chan struct{}{}}
	if os.Geteuid() == 0 {
		p.osUser = "postgres"
	}
	return p, nil
}

// Name returns "process".
func (p *Process) Name() string { return "process" }

// Root returns the folder holding every node.
func (p *Process) Root() string { return p.root }

func (p *Process) clusterDir(id string) string { return filepath.Join(p.root, id) }

// clusterRel returns cluster id's folder relative to the root, or an error
// when id is not a valid name (a single local path element).
func clusterRel(id string) (string, error) {
	if err := proto.CheckName("cluster id", id); err != nil {
		return "", err
	}
	return id, nil
}

// NodeRel returns a node's folder relative to a provider root
// ("{cluster id}/{node}", one local path element each), or an error naming
// the field ("cluster id" or "node") when either is not a valid name
// (proto.CheckName). The fleet checks names with it before placing a node,
// since a host runner makes that folder.
func NodeRel(clusterID, node string) (string, error) { return nodeRel(clusterID, node) }

// nodeRel returns node's folder relative to the root ({cluster id}/{node}),
// or an error when either is not a valid name.
func nodeRel(clusterID, node string) (string, error) {
	c, err := clusterRel(clusterID)
	if err != nil {
		return "", err
	}
	if err := proto.CheckName("node", node); err != nil {
		return "", err
	}
	rel := filepath.Join(c, node)
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("node folder %s is not below the provider root", proto.Quote(rel, 128))
	}
	return rel, nil
}

// abs returns the absolute path of rel below the root.
func (p *Process) abs(rel string) string { return filepath.Join(p.root, rel) }

// mkdirTraversable creates rel below the root (0755) and makes each of its
// elements searchable by others (o+x), so PostgreSQL running as its own OS
// user reaches a data directory below it (the root itself is made so by
// NewProcess).
func (p *Process) mkdirTraversable(rel string) error {
	if err := p.fs.MkdirAll(rel, 0o755); err != nil {
		return err
	}
	for d := rel; d != "." && d != ""; d = filepath.Dir(d) {
		st, err := p.fs.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := p.fs.Chmod(d, st.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("make %s traversable: %w", d, err)
			}
		}
	}
	return nil
}

// writeFileAtomic writes b to rel below the root through a temporary file
// and a rename.
func (p *Process) writeFileAtomic(rel string, b []byte, perm os.FileMode) error {
	tmp := rel + ".tmp"
	if err := p.fs.WriteFile(tmp, b, perm); err != nil {
		return err
	}
	return p.fs.Rename(tmp, rel)
}

// Create writes the node's agent config (once; ports are kept across
// attempts) and starts its agent unless the recorded process still runs.
func (p *Process) Create(ctx context.Context, spec NodeSpec, prev json.RawMessage) (json.RawMessage, error) {
	var h ProcessHandle
	if len(prev) > 0 {
		_ = json.Unmarshal(prev, &h)
	}
	if h.PID > 0 && p.alive(h) {
		return mustHandle(h), nil
	}
	rel, err := nodeRel(spec.ClusterID, spec.Node)
	if err != nil {
		return nil, fmt.Errorf("create node: %w", err)
	}
	cdir := p.clusterDir(spec.ClusterID)
	h.Dir = p.abs(rel)
	if err := p.mkdirTraversable(rel); err != nil {
		return nil, fmt.Errorf("create node %s: %w", spec.Node, err)
	}
	cred := filepath.Join(cdir, "credentials.yaml")
	if err := p.writeCredentials(filepath.Join(spec.ClusterID, "credentials.yaml")); err != nil {
		return nil, fmt.Errorf("create node %s: %w", spec.Node, err)
	}
	if h.PGPort == 0 {
		if h.PGPort, err = localhost.FreePort(""); err != nil {
			return nil, fmt.Errorf("create node %s: %w", spec.Node, err)
		}
	}
	if h.HTTPPort == 0 {
		if h.HTTPPort, err = localhost.FreePort(""); err != nil {
			return nil, fmt.Errorf("create node %s: %w", spec.Node, err)
		}
	}
	h.Config = filepath.Join(h.Dir, "agent.yaml")
	layout := NodeLayout{Address: "127.0.0.1", PGPort: h.PGPort, HTTPPort: h.HTTPPort,
		DataDir: filepath.Join(h.Dir, "data"), StateDir: filepath.Join(h.Dir, "state"), CredentialsFile: cred, OSUser: p.osUser,
		EtcdPasswordFile: filepath.Join(cdir, "etcd.password"), EtcdCAFile: filepath.Join(cdir, "etcd-ca.pem")}
	if err := WriteEtcdFiles(spec, layout); err != nil {
		return nil, fmt.Errorf("create node %s: %w", spec.Node, err)
	}
	if repo := p.BackupRepository(spec.ClusterID); repo != "" && (spec.Template.Backup != nil || spec.Restore != nil) {
		if err := localhost.MkdirTraversable(repo); err != nil {
			return nil, fmt.Errorf("create node %s: backup repository: %w", spec.Node, err)
		}
		layout.BackupRepository = repo
		if spec.Restore != nil {
			layout.SourceRepository = p.BackupRepository(spec.Restore.ClusterID)
		}
		if sock := filepath.Join(h.Dir, "dbpilot-archive.sock"); len(sock) > 100 {
			// Unix socket paths are limited: fall back to a short one.
			layout.ArchiveSocket = filepath.Join(os.TempDir(), "dbpilot-"+spec.ClusterID+"-"+spec.Node+".sock")
		}
	}
	b, err := AgentConfig(spec, layout)
	if err != nil {
		return nil, err
	}
	if err := p.fs.WriteFile(filepath.Join(rel, "agent.yaml"), b, 0o600); err != nil {
		return nil, fmt.Errorf("create node %s: %w", spec.Node, err)
	}
	if h.PID, err = p.start(h); err != nil {
		return nil, fmt.Errorf("create node %s: %w", spec.Node, err)
	}
	p.log.Info("node started", zap.String("cluster", spec.ClusterID), zap.String("node", spec.Node), zap.Int("pid", h.PID), zap.Int("pg_port", h.PGPort))
	return mustHandle(h), nil
}

func (p *Process) start(h ProcessHandle) (int, error) {
	rel, err := p.relOf(h.Dir)
	if err != nil {
		return 0, err
	}
	logf, err := p.fs.OpenFile(filepath.Join(rel, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(p.agentBin, "run", "--config", h.Config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return 0, fmt.Errorf("start agent %s: %w", p.agentBin, err)
	}
	done := make(chan struct{})
	pid := cmd.Process.Pid
	p.mu.Lock()
	p.waits[pid] = done
	p.mu.Unlock()
	go func() {
		_ = cmd.Wait() // reaps the child
		logf.Close()
		close(done)
	}()
	return pid, nil
}

// alive reports whether h's agent runs: the pid exists, is not a zombie
// and runs with h's config file.
func (p *Process) alive(h ProcessHandle) bool {
	p.mu.Lock()
	done, ours := p.waits[h.PID]
	p.mu.Unlock()
	if ours {
		select {
		case <-done:
			return false
		default:
		}
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", h.PID))
	if err != nil {
		return false
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.PID))
	if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return bytes.Contains(cmdline, []byte(h.Config))
}

// pidReused reports whether h.PID now belongs to another program: a
// process with that pid runs (not a zombie) and it is not h's agent. The
// kernel never hands out a pid still used as a process group id, so when
// the pid is free, or a zombie of ours, -h.PID can only name h's own
// group; when it was reused (a dead node's pid, seen by a repair long
// after the kill), signalling the group would hit a stranger.
func (p *Process) pidReused(h ProcessHandle) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.PID))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return !p.alive(h)
}

// relOf returns dir relative to the root when dir is a node folder
// ({cluster id}/{node}, both valid names) below it.
func (p *Process) relOf(dir string) (string, error) {
	rel, err := filepath.Rel(p.root, dir)
	if err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("node folder %s is not below the provider root %s", proto.Quote(dir, 128), p.root)
	}
	c, n := filepath.Split(rel)
	return nodeRel(filepath.Clean(c), n)
}

// Delete stops the node's agent (SIGTERM: it stops PostgreSQL), kills what
// is left of its process group and removes its folder. The folder is the
// one the spec's cluster id and node name (both valid names) place below
// the root, whatever the handle says; the removal goes through the root.
func (p *Process) Delete(ctx context.Context, spec NodeSpec, handle json.RawMessage) error {
	rel, err := nodeRel(spec.ClusterID, spec.Node)
	if err != nil {
		return fmt.Errorf("delete node: %w", err)
	}
	var h ProcessHandle
	if len(handle) > 0 {
		_ = json.Unmarshal(handle, &h)
	}
	h.Dir = p.abs(rel)
	if err := p.stop(ctx, h); err != nil {
		return fmt.Errorf("delete node %s: %w", spec.Node, err)
	}
	if err := p.fs.RemoveAll(rel); err != nil {
		return fmt.Errorf("delete node %s: %w", spec.Node, err)
	}
	p.log.Info("node deleted", zap.String("cluster", spec.ClusterID), zap.String("node", spec.Node))
	return nil
}

// stop terminates the agent gracefully, then its whole group, then any
// process still running out of the node's folder.
func (p *Process) stop(ctx context.Context, h ProcessHandle) error {
	if h.PID > 0 && p.alive(h) {
		_ = syscall.Kill(h.PID, syscall.SIGTERM)
		if !waitUntil(ctx, 30*time.Second, func() bool { return !p.alive(h) }) {
			_ = syscall.Kill(-h.PID, syscall.SIGKILL)
		}
	}
	if h.PID > 0 && !p.pidReused(h) {
		_ = syscall.Kill(-h.PID, syscall.SIGKILL) // stragglers of the group
	}
	// PostgreSQL children that left the group (or a previous server's
	// agent) still hold the folder: find them by their command line.
	if !waitUntil(ctx, 20*time.Second, func() bool {
		pids := processesUsing(h.Dir)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return len(pids) == 0
	}) {
		return fmt.Errorf("processes still running in %s: %v", h.Dir, processesUsing(h.Dir))
	}
	return nil
}

// Restart stops the node's agent and starts it again with the same config.
func (p *Process) Restart(ctx context.Context, spec NodeSpec, handle json.RawMessage) (json.RawMessage, error) {
	var h ProcessHandle
	if err := json.Unmarshal(handle, &h); err != nil || h.Config == "" {
		return nil, fmt.Errorf("restart node %s: no process handle", spec.Node)
	}
	rel, err := nodeRel(spec.ClusterID, spec.Node)
	if err != nil {
		return nil, fmt.Errorf("restart node: %w", err)
	}
	if h.Dir != p.abs(rel) || h.Config != filepath.Join(h.Dir, "agent.yaml") {
		return nil, fmt.Errorf("restart node %s: its handle names %s, not its folder %s", spec.Node, proto.Quote(h.Dir, 128), p.abs(rel))
	}
	if err := p.stop(ctx, h); err != nil {
		return nil, fmt.Errorf("restart node %s: %w", spec.Node, err)
	}
	pid, err := p.start(h)
	if err != nil {
		return nil, fmt.Errorf("restart node %s: %w", spec.Node, err)
	}
	h.PID = pid
	return mustHandle(h), nil
}

// Status reports whether the node's agent runs (its pid is alive and runs
// with the node's config). A handle without a config, or whose config file
// is not on this machine (a node another server replica created, or a
// folder removed by hand), is Unknown: this provider could not restart it.
func (p *Process) Status(_ context.Context, handle json.RawMessage) (Status, error) {
	var h ProcessHandle
	if err := json.Unmarshal(handle, &h); err != nil {
		return Status{}, fmt.Errorf("process status: %w", err)
	}
	if p.alive(h) {
		return Status{Running: true, Detail: fmt.Sprintf("pid %d", h.PID)}, nil
	}
	if h.Config == "" {
		return Status{Unknown: true, Detail: "no process handle"}, nil
	}
	if _, err := os.Stat(h.Config); err != nil {
		return Status{Unknown: true, Detail: "agent config " + h.Config + " is not on this machine"}, nil
	}
	if h.PID > 0 {
		return Status{Running: false, Detail: fmt.Sprintf("agent pid %d not running", h.PID)}, nil
	}
	return Status{Running: false, Detail: "agent not running"}, nil
}

// DeleteCluster removes the cluster folder (credentials and any leftovers),
// through the root.
func (p *Process) DeleteCluster(ctx context.Context, clusterID string) error {
	rel, err := clusterRel(clusterID)
	if err != nil {
		return fmt.Errorf("delete cluster: %w", err)
	}
	dir := p.abs(rel)
	if err := p.stop(ctx, ProcessHandle{Dir: dir}); err != nil {
		return fmt.Errorf("delete cluster %s: %w", clusterID, err)
	}
	if err := p.fs.RemoveAll(rel); err != nil {
		return fmt.Errorf("delete cluster %s: %w", clusterID, err)
	}
	return nil
}

// ProcessesUsing lists the pids whose command line mentions dir (the node's
// agent and its PostgreSQL, whose -D names the data folder).
func processesUsing(dir string) []int {
	if dir == "" {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var out []int
	needle := []byte(dir + "/")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		if bytes.Contains(b, needle) {
			stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
				continue // a zombie holds nothing; its parent reaps it
			}
			out = append(out, pid)
		}
	}
	return out
}

// ProcessesUsing lists live processes whose command line mentions a path
// under dir; tests use it to prove a deleted cluster left nothing behind.
func ProcessesUsing(dir string) []int { return processesUsing(dir) }

func waitUntil(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// AgentHTTPAddress implements AgentAddresser: "127.0.0.1:<http_port>" of
// a process handle (the process provider's agents listen on the loopback
// address); "" when the handle records no HTTP port or does not decode.
func (p *Process) AgentHTTPAddress(handle json.RawMessage) string {
	var h ProcessHandle
	if err := json.Unmarshal(handle, &h); err != nil || h.HTTPPort <= 0 {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(h.HTTPPort))
}

func mustHandle(h ProcessHandle) json.RawMessage {
	b, _ := json.Marshal(h)
	return b
}

// writeCredentials creates the cluster's credentials file (0600, rel
// below the root) with random passwords, unless it exists.
func (p *Process) writeCredentials(rel string) error {
	if _, err := p.fs.Stat(rel); err == nil {
		return nil
	}
	doc, err := NewCredentials()
	if err != nil {
		return err
	}
	if err := p.writeFileAtomic(rel, []byte(doc), 0o600); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	return nil
}

// Credentials returns the credentials file of a process cluster.
func (p *Process) Credentials(clusterID string) (string, error) {
	rel, err := clusterRel(clusterID)
	if err != nil {
		return "", err
	}
	b, err := p.fs.ReadFile(filepath.Join(rel, "credentials.yaml"))
	if err != nil {
		return "", fmt.Errorf("read credentials: %w", err)
	}
	return string(b), nil
}

// ReadSuperuser returns the superuser name and password of a process
// cluster (for tests and `psql` walkthroughs).
func (p *Process) ReadSuperuser(clusterID string) (user, password string, err error) {
	rel, err := clusterRel(clusterID)
	if err != nil {
		return "", "", err
	}
	b, err := p.fs.ReadFile(filepath.Join(rel, "credentials.yaml"))
	if err != nil {
		return "", "", fmt.Errorf("read credentials: %w", err)
	}
	var doc struct {
		Superuser struct{ Username, Password string }
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return "", "", fmt.Errorf("read credentials: %w", err)
	}
	return doc.Superuser.Username, doc.Superuser.Password, nil
}

// NewCredentials returns a fresh credentials document (the agent's
// credentials_file format, YAML) with random passwords (32 hex digits);
// the error is the YAML encoder's.
func NewCredentials() (string, error) {
	doc := map[string]any{
		"superuser":   map[string]string{"username": "postgres", "password": randomHex(16)},
		"replication": map[string]string{"username": "replicator", "password": randomHex(16)},
	}
	b, err := yaml.Marshal(doc)
	return string(b), err
}

// ConfigSHA256 is the hash (64 hex digits of SHA-256) by which the server
// and the host runner name a rendered agent config: the runner reports the
// hash of the config its agent runs, and pushes a config whose hash
// differs.
func ConfigSHA256(cfg string) string {
	sum := sha256.Sum256([]byte(cfg))
	return hex.EncodeToString(sum[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
