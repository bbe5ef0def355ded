package infra

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/internal/localhost"
	"github.com/dbpilot/dbpilot/proto"
)

// HostRunnerConfig configures the host side of the fleet provider.
type HostRunnerConfig struct {
	// Server is the control plane's base URL.
	Server string
	// JoinToken enrols the host the first time (later runs reuse the
	// credential saved in Root/host.json).
	JoinToken string
	// Name and Address identify the host; nodes listen on Address.
	Name    string
	Address string
	Labels  map[string]string
	// Capacity is what the host offers to database nodes (cpu >= 1,
	// memory_mb >= 128, disk_gb >= 1; the server refuses less).
	Capacity proto.Resources
	// Root holds host.json and one folder per node (Root/nodes/{cluster}/{node}).
	Root string
	// AgentBin is the dbpilot-agent binary started for each node.
	AgentBin string
	// Interval between assignment polls (default 2 s).
	Interval time.Duration
}

// HostRunner enrols a fleet host and keeps the host's agents in line with
// its assignments: it starts an agent per active assignment (config from
// the server, with this host's paths, address and ports), and for a
// releasing one stops the agent gracefully, removes the node folder and
// acknowledges. Agents outlive the runner; a restarted runner adopts them.
type HostRunner struct {
	cfg  HostRunnerConfig
	proc *Process
	hc   *http.Client
	log  *zap.Logger
	cred string
}

// hostIdentity is Root/host.json (0600): the host's id and bearer
// credential from the enrolment answer (a proto.Host).
type hostIdentity struct {
	ID         string `json:"id"`
	Credential string `json:"credential"`
}

// NewHostRunner returns a runner; Run enrols (if needed) and polls.
func NewHostRunner(cfg HostRunnerConfig, log *zap.Logger) (*HostRunner, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	p, err := NewProcess(filepath.Join(cfg.Root, "nodes"), cfg.AgentBin, log)
	if err != nil {
		return nil, err
	}
	return &HostRunner{cfg: cfg, proc: p, hc: &http.Client{Timeout: 15 * time.Second}, log: log.Named("host")}, nil
}

// Run enrols the host unless Root/host.json holds a credential, then polls
// its assignments until ctx ends.
func (r *HostRunner) Run(ctx context.Context) error {
	if err := r.enrol(ctx); err != nil {
		return err
	}
	for {
		if err := r.reconcile(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.Interval):
		}
	}
}

func (r *HostRunner) enrol(ctx context.Context) error {
	idPath := filepath.Join(r.cfg.Root, "host.json")
	if b, err := os.ReadFile(idPath); err == nil {
		var id hostIdentity
		if err := json.Unmarshal(b, &id); err == nil && id.Credential != "" {
			r.cred = id.Credential
			return nil
		}
	}
	if r.cfg.JoinToken == "" {
		return errors.New("not enrolled yet: --join-token is required")
	}
	body, _ := json.Marshal(proto.EnrollRequest{JoinToken: r.cfg.JoinToken, Name: r.cfg.Name, Address: r.cfg.Address,
		Labels: r.cfg.Labels, Capacity: r.cfg.Capacity})
	var host proto.Host
	if err := r.call(ctx, "POST", "/v1/infra/hosts/enroll", body, 201, &host); err != nil {
		return fmt.Errorf("enrol host %s: %w", r.cfg.Name, err)
	}
	out := hostIdentity{ID: host.ID, Credential: host.Credential}
	b, _ := json.Marshal(out)
	if err := os.MkdirAll(r.cfg.Root, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(idPath, b, 0o600); err != nil {
		return fmt.Errorf("save host credential: %w", err)
	}
	r.cred = out.Credential
	r.log.Info("host enrolled", zap.String("id", out.ID), zap.String("name", r.cfg.Name))
	return nil
}

func (r *HostRunner) call(ctx context.Context, method, path string, body []byte, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, r.cfg.Server+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.cred != "" {
		req.Header.Set("Authorization", "Bearer "+r.cred)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// hostNode is a node's local state, Root/nodes/{cluster}/{node}/node.json
// (0600): the process handle plus what the runner applied.
type hostNode struct {
	ProcessHandle
	// RestartGeneration is the restart generation the node last applied
	// (every start of the agent applies the assignment's current one).
	RestartGeneration int64 `json:"restart_generation"`
	// ConfigSHA256 names the server-rendered config the agent runs
	// (ConfigSHA256 of the assignment's agent_config, before relayout).
	ConfigSHA256 string `json:"config_sha256,omitempty"`
	// RejectedSHA256 names a config the runner refused because
	// `dbpilot-agent validate` failed on it; ConfigError holds the output.
	// The agent keeps running the previous one.
	RejectedSHA256 string `json:"rejected_sha256,omitempty"`
	ConfigError    string `json:"config_error,omitempty"`
}

// maxConfigError bounds the validation output a runner reports, in bytes.
const maxConfigError = 2000

// nodeDir returns the node's folder (absolute) after checking that the
// cluster id and node name are valid names, so the folder is
// Root/nodes/{cluster}/{node} and nothing else.
func (r *HostRunner) nodeDir(clusterID, node string) (string, error) {
	rel, err := nodeRel(clusterID, node)
	if err != nil {
		return "", err
	}
	return r.proc.abs(rel), nil
}

// reconcile polls once and acts on every assignment, then stops any local
// node that is no longer assigned (e.g. force-released while we were away).
// An assignment whose cluster id or node name is not a valid name is
// refused and logged (truncated): the server never sends one, so it is an
// attack or a bug, and it never reaches the filesystem.
func (r *HostRunner) reconcile(ctx context.Context) error {
	var out proto.List[proto.Assignment]
	if err := r.call(ctx, "GET", "/v1/infra/hosts/self/assignments", nil, 200, &out); err != nil {
		return err
	}
	assigned := map[string]bool{}
	var errs []error
	for _, a := range out.Items {
		dir, err := r.nodeDir(a.ClusterID, a.Node)
		if err != nil {
			r.log.Warn("assignment refused", zap.String("cluster", proto.Quote(a.ClusterID, 64)), zap.String("node", proto.Quote(a.Node, 64)), zap.Error(err))
			errs = append(errs, err)
			continue
		}
		assigned[dir] = true
		switch a.State {
		case proto.AssignmentActive:
			errs = append(errs, r.ensure(ctx, a, dir))
		case proto.AssignmentReleasing:
			if err := r.remove(ctx, dir); err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, r.call(ctx, "DELETE", "/v1/infra/hosts/self/assignments/"+a.ClusterID+"/"+a.Node, nil, 204, nil))
			r.log.Info("node released", zap.String("cluster", a.ClusterID), zap.String("node", a.Node))
		}
	}
	clusters, _ := fs.ReadDir(r.proc.fs.FS(), ".")
	for _, c := range clusters {
		if !c.IsDir() || !proto.ValidName(c.Name()) {
			continue // not a folder this runner made
		}
		nodes, _ := fs.ReadDir(r.proc.fs.FS(), c.Name())
		for _, n := range nodes {
			dir, err := r.nodeDir(c.Name(), n.Name())
			if err != nil || !n.IsDir() {
				continue
			}
			if !assigned[dir] {
				r.log.Info("stopping unassigned node", zap.String("dir", dir))
				errs = append(errs, r.remove(ctx, dir))
			}
		}
		if left, _ := fs.ReadDir(r.proc.fs.FS(), c.Name()); len(left) == 0 {
			_ = r.proc.fs.Remove(c.Name())
		}
	}
	return errors.Join(errs...)
}

// remove stops the node of folder dir and removes the folder, through the
// provider root.
func (r *HostRunner) remove(ctx context.Context, dir string) error {
	rel, err := r.proc.relOf(dir)
	if err != nil {
		return err
	}
	var h ProcessHandle
	if b, err := r.proc.fs.ReadFile(filepath.Join(rel, "node.json")); err == nil {
		_ = json.Unmarshal(b, &h)
	}
	h.Dir = dir
	if err := r.proc.stop(ctx, h); err != nil {
		return err
	}
	return r.proc.fs.RemoveAll(rel)
}

// ensure keeps one active node in line with its assignment, then
// acknowledges what it applied when the server's record differs:
//
//   - agent not running (new node, or it died): write the config and
//     start it (this applies the current restart generation);
//   - restart generation above the applied one: stop the agent gracefully
//     (SIGTERM; a primary hands over first) and start it again;
//   - config changed: validate the new one with `dbpilot-agent validate`,
//     then write it and send SIGHUP to the agent (not to its process
//     group: PostgreSQL is not signalled); a config that fails validation
//     is refused, reported, and not tried again until it changes.
//
// The server's config gets this host's layout; the ports are picked once
// and kept in node.json.
func (r *HostRunner) ensure(ctx context.Context, a proto.Assignment, dir string) error {
	h := r.loadHostNode(dir)
	sum := ConfigSHA256(a.AgentConfig)
	log := r.log.With(zap.String("cluster", a.ClusterID), zap.String("node", a.Node))
	var err error
	switch alive := h.PID > 0 && r.proc.alive(h.ProcessHandle); {
	case !alive:
		err = r.start(ctx, a, dir, &h, sum)
		if err == nil {
			log.Info("node started", zap.Int("pid", h.PID), zap.Int("pg_port", h.PGPort), zap.Int64("restart_generation", h.RestartGeneration))
		}
	case a.RestartGeneration > h.RestartGeneration:
		log.Info("restarting node", zap.Int("pid", h.PID), zap.Int64("applied", h.RestartGeneration), zap.Int64("requested", a.RestartGeneration))
		if err = r.proc.stop(ctx, h.ProcessHandle); err == nil {
			old := h.PID
			if err = r.start(ctx, a, dir, &h, sum); err == nil {
				log.Info("node restarted", zap.Int("old_pid", old), zap.Int("pid", h.PID), zap.Int64("restart_generation", h.RestartGeneration))
			}
		}
	case sum != h.ConfigSHA256 && sum != h.RejectedSHA256:
		var ok bool
		if ok, err = r.writeConfig(ctx, a, dir, &h, sum, true); err == nil && ok {
			if err = syscall.Kill(h.PID, syscall.SIGHUP); err == nil {
				log.Info("agent config pushed (SIGHUP)", zap.Int("pid", h.PID), zap.String("config_sha256", sum))
			}
		}
		if err == nil {
			err = r.saveHostNode(dir, h)
		}
	}
	if err != nil {
		return fmt.Errorf("node %s/%s: %w", a.ClusterID, a.Node, err)
	}
	if a.AppliedRestartGeneration == h.RestartGeneration && a.AppliedConfigSHA256 == h.ConfigSHA256 && a.ConfigError == h.ConfigError {
		return nil
	}
	body, _ := json.Marshal(proto.AssignmentAck{ConfigError: h.ConfigError, ConfigSHA256: h.ConfigSHA256, RestartGeneration: h.RestartGeneration})
	if err := r.call(ctx, "POST", "/v1/infra/hosts/self/assignments/"+a.ClusterID+"/"+a.Node+"/ack", body, 204, nil); err != nil {
		return fmt.Errorf("node %s/%s: acknowledge: %w", a.ClusterID, a.Node, err)
	}
	return nil
}

// start writes the node's credentials and config and starts its agent
// (h.PID, h.RestartGeneration and node.json updated). A config that fails
// validation while an earlier one exists is refused: the agent starts with
// the earlier one.
func (r *HostRunner) start(ctx context.Context, a proto.Assignment, dir string, h *hostNode, sum string) error {
	rel, err := r.proc.relOf(dir)
	if err != nil {
		return err
	}
	if err := r.proc.mkdirTraversable(rel); err != nil {
		return err
	}
	h.Dir, h.Config = dir, filepath.Join(dir, "agent.yaml")
	for _, p := range []*int{&h.PGPort, &h.HTTPPort} {
		if *p == 0 {
			if *p, err = localhost.FreePort(r.cfg.Address); err != nil {
				return err
			}
		}
	}
	if err := r.proc.fs.WriteFile(filepath.Join(rel, "credentials.yaml"), []byte(a.Credentials), 0o600); err != nil {
		return err
	}
	if a.EtcdPassword != "" {
		// The cluster's own etcd user (docs/security.md, "etcd").
		if err := r.proc.fs.WriteFile(filepath.Join(rel, "etcd.password"), []byte(a.EtcdPassword+"\n"), 0o600); err != nil {
			return err
		}
	}
	if _, hadConfig := r.proc.fs.Stat(filepath.Join(rel, "agent.yaml")); sum != h.ConfigSHA256 || hadConfig != nil {
		if _, err := r.writeConfig(ctx, a, dir, h, sum, hadConfig == nil && h.ConfigSHA256 != ""); err != nil {
			return err
		}
	}
	if h.PID, err = r.proc.start(h.ProcessHandle); err != nil {
		return err
	}
	h.RestartGeneration = a.RestartGeneration
	return r.saveHostNode(dir, *h)
}

// writeConfig renders the assignment's config with this host's layout
// into agent.yaml. With validate, the new file is first checked with
// `dbpilot-agent validate`; a failure leaves agent.yaml alone, records the
// refusal in h and returns false.
func (r *HostRunner) writeConfig(ctx context.Context, a proto.Assignment, dir string, h *hostNode, sum string, validate bool) (bool, error) {
	cfg, err := relayout([]byte(a.AgentConfig), NodeLayout{Address: r.cfg.Address, PGPort: h.PGPort, HTTPPort: h.HTTPPort,
		DataDir: filepath.Join(dir, "data"), StateDir: filepath.Join(dir, "state"), CredentialsFile: filepath.Join(dir, "credentials.yaml"), OSUser: r.proc.osUser,
		EtcdPasswordFile: filepath.Join(dir, "etcd.password")})
	if err != nil {
		return false, err
	}
	rel, err := r.proc.relOf(dir)
	if err != nil {
		return false, err
	}
	tmpRel := filepath.Join(rel, "agent.yaml.new")
	tmp := filepath.Join(dir, "agent.yaml.new")
	if err := r.proc.fs.WriteFile(tmpRel, cfg, 0o600); err != nil {
		return false, err
	}
	if validate {
		vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(vctx, r.proc.agentBin, "validate", "--config", tmp).CombinedOutput()
		cancel()
		if err != nil {
			_ = r.proc.fs.Remove(tmpRel)
			msg := strings.TrimSpace(string(out))
			if msg == "" {
				msg = err.Error()
			}
			if len(msg) > maxConfigError {
				msg = msg[:maxConfigError]
			}
			h.RejectedSHA256, h.ConfigError = sum, msg
			r.log.Warn("agent config refused: the agent keeps its running config", zap.String("cluster", a.ClusterID), zap.String("node", a.Node),
				zap.String("config_sha256", sum), zap.String("error", msg))
			return false, nil
		}
	}
	if err := r.proc.fs.Rename(tmpRel, filepath.Join(rel, "agent.yaml")); err != nil {
		return false, err
	}
	h.ConfigSHA256, h.RejectedSHA256, h.ConfigError = sum, "", ""
	return true, nil
}

// loadHostNode reads dir's node.json (through the provider root; zero
// when absent).
func (r *HostRunner) loadHostNode(dir string) hostNode {
	var h hostNode
	rel, err := r.proc.relOf(dir)
	if err != nil {
		return h
	}
	if b, err := r.proc.fs.ReadFile(filepath.Join(rel, "node.json")); err == nil {
		_ = json.Unmarshal(b, &h)
	}
	return h
}

// saveHostNode writes dir's node.json (through the provider root).
func (r *HostRunner) saveHostNode(dir string, h hostNode) error {
	rel, err := r.proc.relOf(dir)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(h)
	return r.proc.writeFileAtomic(filepath.Join(rel, "node.json"), b, 0o600)
}

// relayout replaces the host-specific parts of a rendered agent config
// (address, ports, paths, OS user) with l.
func relayout(cfg []byte, l NodeLayout) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(cfg, &doc); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	sub := func(k string) map[string]any {
		m, _ := doc[k].(map[string]any)
		if m == nil {
			m = map[string]any{}
			doc[k] = m
		}
		return m
	}
	sub("node")["address"] = l.Address
	pg := sub("postgres")
	pg["listen_address"], pg["port"], pg["data_dir"], pg["credentials_file"] = l.Address, l.PGPort, l.DataDir, l.CredentialsFile
	if l.OSUser != "" {
		pg["os_user"] = l.OSUser
	} else {
		delete(pg, "os_user")
	}
	doc["state_dir"] = l.StateDir
	if e, _ := doc["etcd"].(map[string]any); e != nil && e["password_file"] != nil && l.EtcdPasswordFile != "" {
		e["password_file"] = l.EtcdPasswordFile
	}
	sub("http")["listen"] = net.JoinHostPort(l.Address, strconv.Itoa(l.HTTPPort))
	return yaml.Marshal(doc)
}
