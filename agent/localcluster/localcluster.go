// Package localcluster runs a real dbpilot cluster on one machine: an
// embedded etcd (go.etcd.io/etcd/server/v3/embed; one member by default, or
// several on loopback), one dbpilot-agent process per node (each with its
// own PostgreSQL on a loopback port) and a TCP proxy per agent in front of
// the whole etcd cluster to simulate partitions. It also injects the faults
// of the chaos campaign: host kill, agent kill, agent freeze, a node cut
// from etcd, etcd members stopped and restarted, a lost data directory. It
// is the engine of `dbpilot-demo` (make demo-agents), the integration tests
// and the benchmarks.
package localcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/internal/embedetcd"
	"github.com/dbpilot/dbpilot/internal/localhost"
)

// Options configures a local cluster.
type Options struct {
	Dir       string // root folder; created; must be traversable by OSUser
	Nodes     int    // default 3
	Namespace string // default "demo"
	Project   string // default "default"
	Cluster   string // default "local"
	AgentBin  string // path of the dbpilot-agent binary
	OSUser    string // OS user for PostgreSQL when running as root; default "postgres"
	// SynchronousMode is "on" or "off" (default).
	SynchronousMode string
	TTL             time.Duration // 0 = agent default
	Interval        time.Duration // 0 = agent default
	LogLevel        string        // agent log level, default "info"
	// Handlers is the agent's handlers section (YAML-shaped), the same for every node.
	Handlers map[string]any
	// Parameters are extra postgresql.conf parameters for every node.
	Parameters map[string]string
	// EventsURL, when set, makes every agent post its CloudEvents there.
	EventsURL string
	// Backup is the agent's backup section (YAML-shaped), the same for
	// every node; nil: no backups.
	Backup map[string]any
	// Events is the agent's events section (YAML-shaped); nil: none.
	// It takes precedence over EventsURL.
	Events map[string]any
	// Env are extra environment variables (KEY=value) for every agent.
	Env []string
	// SummaryInterval is the agents' report.summary_interval (0: the
	// agent's default).
	SummaryInterval time.Duration
	// EtcdAuth turns on etcd authentication (off by default): the root
	// password is kept in Dir/etcd-root.password, Cluster.Admin logs in as
	// root, and the agents log in as the cluster's own user (EtcdUser),
	// whose role covers only the cluster's prefix, as the control plane
	// provisions them (docs/security.md).
	EtcdAuth bool
	// EtcdMembers is the size of the embedded etcd cluster: 0 or 1 = one
	// member (the default), 3 = three members on loopback, each stoppable
	// and restartable (StopEtcd, StartEtcd). Every agent lists every member.
	EtcdMembers int
	Log         *zap.Logger
}

// Node is one agent + PostgreSQL.
type Node struct {
	Name       string
	Dir        string
	ConfigPath string
	LogPath    string
	DataDir    string // PostgreSQL data directory
	PGPort     int
	HTTPPort   int
	// Proxy stands between the agent and every etcd member; Proxy.Cut
	// partitions the agent from the whole etcd cluster.
	Proxy *Proxy

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	frozen bool
}

// Cluster is a running local cluster.
type Cluster struct {
	Opts Options
	// Etcd is the first etcd member's server as Start started it (a
	// member restarted by StartEtcd has a new one; see EtcdMembers).
	Etcd *embed.Etcd
	URL  string // the first etcd member's client URL
	// EtcdMembers are the embedded etcd's members (one by default).
	EtcdMembers []*EtcdMember
	// Admin is the admin side of every etcd member (directly, not through
	// a proxy): the harness reads and writes the keyspace through it.
	Admin *admin.Admin
	Keys  dcs.Keys
	Nodes []*Node
	// Superuser and its password for connecting to any node.
	Superuser, Password string
	// EtcdUser and EtcdPassword are the agents' etcd login with
	// Options.EtcdAuth ("" otherwise); RootPassword is etcd root's.
	EtcdUser, EtcdPassword, RootPassword string
}

// EtcdUserName is the agents' etcd user with Options.EtcdAuth.
const EtcdUserName = "dbpilot-agent-local"

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Start creates the folder layout, starts etcd and every agent.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Namespace == "" {
		o.Namespace = "demo"
	}
	if o.Project == "" {
		o.Project = "default"
	}
	if o.Cluster == "" {
		o.Cluster = "local"
	}
	if o.OSUser == "" && os.Geteuid() == 0 {
		o.OSUser = "postgres"
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.SynchronousMode == "" {
		o.SynchronousMode = "off"
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	o.Dir = abs
	if err := localhost.MkdirTraversable(o.Dir); err != nil {
		return nil, err
	}
	c := &Cluster{Opts: o, Keys: dcs.NewKeys(o.Namespace, o.Project, o.Cluster), Superuser: "postgres"}
	if err := c.startEtcd(); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.connectEtcd(); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.writeCredentials(); err != nil {
		c.Close()
		return nil, err
	}
	for i := 0; i < o.Nodes; i++ {
		if err := c.addNode(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	for i := range c.Nodes {
		if err := c.StartNode(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// connectEtcd opens Cluster.Admin on every member and, with EtcdAuth,
// turns authentication on and creates the cluster's agent user.
func (c *Cluster) connectEtcd() error {
	var err error
	opts := dcs.Options{Endpoints: c.EtcdEndpoints(), DialTimeout: 2 * time.Second}
	if c.Opts.EtcdAuth {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c.RootPassword, err = embedetcd.EnableAuth(ctx, c.URL, filepath.Join(c.Opts.Dir, "etcd-root.password"), c.Opts.Log); err != nil {
			return err
		}
		opts.Username, opts.Password = embedetcd.RootUser, c.RootPassword
	}
	// Quiet: the chaos campaign stops etcd members under this client.
	adm, err := admin.Dial(opts, zap.NewNop())
	if err != nil {
		return err
	}
	c.Admin = adm
	if c.Opts.EtcdAuth {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c.EtcdPassword, err = embedetcd.LoadOrCreatePassword(c.etcdPasswordPath()); err != nil {
			return err
		}
		c.EtcdUser = EtcdUserName
		if err := adm.EnsureClusterUser(ctx, c.EtcdUser, c.EtcdPassword, c.Keys); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) etcdPasswordPath() string { return filepath.Join(c.Opts.Dir, "etcd-agent.password") }

func (c *Cluster) credentialsPath() string { return filepath.Join(c.Opts.Dir, "credentials.yaml") }

func (c *Cluster) writeCredentials() error {
	p := c.credentialsPath()
	if b, err := os.ReadFile(p); err == nil {
		var cr struct{ Superuser struct{ Password string } }
		if yaml.Unmarshal(b, &cr) == nil && cr.Superuser.Password != "" {
			c.Password = cr.Superuser.Password
			return nil
		}
	}
	c.Password = randomHex(12)
	doc := map[string]any{
		"superuser":   map[string]string{"username": c.Superuser, "password": c.Password},
		"replication": map[string]string{"username": "replicator", "password": randomHex(12)},
	}
	b, _ := yaml.Marshal(doc)
	return os.WriteFile(p, b, 0o600)
}

func (c *Cluster) addNode(i int) error {
	n := &Node{Name: fmt.Sprintf("node%d", i+1), Dir: filepath.Join(c.Opts.Dir, fmt.Sprintf("node%d", i+1))}
	n.DataDir = filepath.Join(n.Dir, "data")
	if err := localhost.MkdirTraversable(n.Dir); err != nil {
		return err
	}
	var err error
	if n.PGPort, err = localhost.FreePort(""); err != nil {
		return err
	}
	if n.HTTPPort, err = localhost.FreePort(""); err != nil {
		return err
	}
	var targets []string
	for _, u := range c.EtcdEndpoints() {
		targets = append(targets, strings.TrimPrefix(u, "http://"))
	}
	if n.Proxy, err = NewProxy(targets...); err != nil {
		return err
	}
	var endpoints []string
	for _, a := range n.Proxy.Addrs() {
		endpoints = append(endpoints, "http://"+a)
	}
	n.ConfigPath = filepath.Join(n.Dir, "agent.yaml")
	n.LogPath = filepath.Join(n.Dir, "agent.log")
	cfg := map[string]any{
		"node":             map[string]any{"name": n.Name, "address": "127.0.0.1"},
		"cluster":          map[string]any{"namespace": c.Opts.Namespace, "project": c.Opts.Project, "name": c.Opts.Cluster},
		"etcd":             map[string]any{"endpoints": endpoints},
		"synchronous_mode": c.Opts.SynchronousMode,
		"state_dir":        filepath.Join(n.Dir, "state"),
		"postgres": map[string]any{
			"data_dir": n.DataDir, "listen_address": "127.0.0.1", "port": n.PGPort,
			"os_user": c.Opts.OSUser, "credentials_file": c.credentialsPath(), "parameters": c.Opts.Parameters,
		},
		"http": map[string]any{"listen": "127.0.0.1:" + strconv.Itoa(n.HTTPPort)},
		"log":  map[string]any{"level": c.Opts.LogLevel},
	}
	if c.EtcdUser != "" {
		cfg["etcd"] = map[string]any{"endpoints": endpoints, "username": c.EtcdUser, "password_file": c.etcdPasswordPath()}
	}
	if c.Opts.TTL > 0 {
		cfg["ttl"] = c.Opts.TTL.String()
	}
	if c.Opts.Interval > 0 {
		cfg["health"] = map[string]any{"interval": c.Opts.Interval.String()}
	}
	if c.Opts.SummaryInterval > 0 {
		cfg["report"] = map[string]any{"summary_interval": c.Opts.SummaryInterval.String()}
	}
	if c.Opts.EventsURL != "" {
		cfg["events"] = map[string]any{"http": map[string]any{"url": c.Opts.EventsURL}}
	}
	if c.Opts.Handlers != nil {
		cfg["handlers"] = c.Opts.Handlers
	}
	if c.Opts.Backup != nil {
		cfg["backup"] = c.Opts.Backup
	}
	if c.Opts.Events != nil {
		cfg["events"] = c.Opts.Events
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(n.ConfigPath, b, 0o644); err != nil {
		return err
	}
	c.Nodes = append(c.Nodes, n)
	return nil
}

// StartNode starts node i's agent in its own process group (PostgreSQL joins
// that group), logging to its agent.log.
func (c *Cluster) StartNode(i int) error {
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("%s already running", n.Name)
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.Opts.AgentBin, "run", "--config", n.ConfigPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(c.Opts.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Opts.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start agent %s: %w", n.Name, err)
	}
	_ = os.WriteFile(filepath.Join(n.Dir, "agent.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	n.cmd, n.done, n.frozen = cmd, make(chan struct{}), false
	done := n.done
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	return nil
}

// Pid returns the agent's pid (also its process group id), 0 if not running.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Running reports whether node i's agent process is running.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

func (n *Node) signal(sig syscall.Signal, group bool, wait time.Duration) error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	pid := cmd.Process.Pid
	if group {
		pid = -pid
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	select {
	case <-done:
	case <-time.After(wait):
		return fmt.Errorf("%s did not exit within %s after %s", n.Name, wait, sig)
	}
	n.mu.Lock()
	n.cmd, n.frozen = nil, false
	n.mu.Unlock()
	return nil
}

// Kill SIGKILLs node i's whole process group: agent, PostgreSQL and its
// backends at once, as if the host died.
func (c *Cluster) Kill(i int) error {
	n := c.Nodes[i]
	err := n.signal(syscall.SIGKILL, true, 10*time.Second)
	n.waitPortFree()
	return err
}

// waitPortFree waits (up to 10 s) until nothing answers on the node's
// PostgreSQL port: backends notice the postmaster's death by themselves,
// and a restart must be able to bind the port.
func (n *Node) waitPortFree() {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		conn, derr := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(n.PGPort), 100*time.Millisecond)
		if derr != nil {
			return
		}
		conn.Close()
		time.Sleep(50 * time.Millisecond)
	}
}

// KillAgent SIGKILLs node i's agent process only, not its process group.
// PostgreSQL runs with a parent-death signal, so it dies too; KillAgent
// waits until its port is free.
func (c *Cluster) KillAgent(i int) error {
	n := c.Nodes[i]
	err := n.signal(syscall.SIGKILL, false, 10*time.Second)
	n.waitPortFree()
	return err
}

// Freeze SIGSTOPs node i's agent process only: PostgreSQL keeps running,
// as with a deadlocked or CPU-starved agent. Thaw resumes it.
func (c *Cluster) Freeze(i int) error { return c.Nodes[i].stopCont(true) }

// Thaw SIGCONTs node i's agent after Freeze.
func (c *Cluster) Thaw(i int) error { return c.Nodes[i].stopCont(false) }

// Frozen reports whether the agent is stopped by Freeze.
func (n *Node) Frozen() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.frozen
}

func (n *Node) stopCont(stop bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return fmt.Errorf("%s is not running", n.Name)
	}
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	if err := syscall.Kill(n.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("%s %s: %w", n.Name, sig, err)
	}
	n.frozen = stop
	return nil
}

// RemoveData deletes node i's PostgreSQL data directory, as a lost disk
// does; the node must be stopped (Kill first). Its agent re-clones it from
// the primary when started again.
func (c *Cluster) RemoveData(i int) error {
	n := c.Nodes[i]
	if n.Running() {
		return fmt.Errorf("%s is running; kill it before removing its data", n.Name)
	}
	return os.RemoveAll(n.DataDir)
}

// Stop sends SIGTERM to node i's agent (resuming it first if frozen) and
// waits for the graceful stop.
func (c *Cluster) Stop(i int, wait time.Duration) error {
	if c.Nodes[i].Frozen() {
		_ = c.Thaw(i)
	}
	return c.Nodes[i].signal(syscall.SIGTERM, false, wait)
}

// Close stops every agent (SIGTERM, then SIGKILL of the group), the proxies
// and etcd.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n.Frozen() {
				_ = n.stopCont(false)
			}
			if err := n.signal(syscall.SIGTERM, false, 60*time.Second); err != nil {
				_ = n.signal(syscall.SIGKILL, true, 10*time.Second)
			}
			n.Proxy.Close()
		}()
	}
	wg.Wait()
	if c.Admin != nil {
		_ = c.Admin.Close()
	}
	_ = c.StopEtcd()
}
