package infra

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/internal/localhost"
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
	// Capacity is what the host offers to database nodes.
	Capacity store.Resources
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
	body, _ := json.Marshal(map[string]any{"join_token": r.cfg.JoinToken, "name": r.cfg.Name, "address": r.cfg.Address,
		"labels": r.cfg.Labels, "capacity": r.cfg.Capacity})
	var out hostIdentity
	if err := r.call(ctx, "POST", "/v1/infra/hosts/enroll", body, 201, &out); err != nil {
		return fmt.Errorf("enrol host %s: %w", r.cfg.Name, err)
	}
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

type assignment struct {
	ClusterID   string `json:"cluster_id"`
	Node        string `json:"node"`
	State       string `json:"state"`
	AgentConfig string `json:"agent_config"`
	Credentials string `json:"credentials"`
}

func (r *HostRunner) nodeDir(clusterID, node string) string {
	return filepath.Join(r.proc.Root(), clusterID, node)
}

// reconcile polls once and acts on every assignment, then stops any local
// node that is no longer assigned (e.g. force-released while we were away).
func (r *HostRunner) reconcile(ctx context.Context) error {
	var out struct {
		Items []assignment `json:"items"`
	}
	if err := r.call(ctx, "GET", "/v1/infra/hosts/self/assignments", nil, 200, &out); err != nil {
		return err
	}
	assigned := map[string]bool{}
	var errs []error
	for _, a := range out.Items {
		dir := r.nodeDir(a.ClusterID, a.Node)
		assigned[dir] = true
		switch a.State {
		case store.AllocActive:
			errs = append(errs, r.ensure(a, dir))
		case store.AllocReleasing:
			if err := r.remove(ctx, dir); err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, r.call(ctx, "DELETE", "/v1/infra/hosts/self/assignments/"+a.ClusterID+"/"+a.Node, nil, 204, nil))
			r.log.Info("node released", zap.String("cluster", a.ClusterID), zap.String("node", a.Node))
		}
	}
	clusters, _ := os.ReadDir(r.proc.Root())
	for _, c := range clusters {
		nodes, _ := os.ReadDir(filepath.Join(r.proc.Root(), c.Name()))
		for _, n := range nodes {
			if dir := r.nodeDir(c.Name(), n.Name()); !assigned[dir] {
				r.log.Info("stopping unassigned node", zap.String("dir", dir))
				errs = append(errs, r.remove(ctx, dir))
			}
		}
		if left, _ := os.ReadDir(filepath.Join(r.proc.Root(), c.Name())); len(left) == 0 {
			_ = os.Remove(filepath.Join(r.proc.Root(), c.Name()))
		}
	}
	return errors.Join(errs...)
}

func (r *HostRunner) remove(ctx context.Context, dir string) error {
	var h ProcessHandle
	if b, err := os.ReadFile(filepath.Join(dir, "node.json")); err == nil {
		_ = json.Unmarshal(b, &h)
	}
	h.Dir = dir
	if err := r.proc.stop(ctx, h); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// ensure starts the node's agent unless it runs. The server's config gets
// this host's layout; the ports are picked once and kept in node.json.
func (r *HostRunner) ensure(a assignment, dir string) error {
	var h ProcessHandle
	statePath := filepath.Join(dir, "node.json")
	if b, err := os.ReadFile(statePath); err == nil {
		_ = json.Unmarshal(b, &h)
	}
	if h.PID > 0 && r.proc.alive(h) {
		return nil
	}
	if err := localhost.MkdirTraversable(dir); err != nil {
		return err
	}
	var err error
	h.Dir, h.Config = dir, filepath.Join(dir, "agent.yaml")
	for _, p := range []*int{&h.PGPort, &h.HTTPPort} {
		if *p == 0 {
			if *p, err = localhost.FreePort(r.cfg.Address); err != nil {
				return err
			}
		}
	}
	cred := filepath.Join(dir, "credentials.yaml")
	if err := os.WriteFile(cred, []byte(a.Credentials), 0o600); err != nil {
		return err
	}
	cfg, err := relayout([]byte(a.AgentConfig), NodeLayout{Address: r.cfg.Address, PGPort: h.PGPort, HTTPPort: h.HTTPPort,
		DataDir: filepath.Join(dir, "data"), StateDir: filepath.Join(dir, "state"), CredentialsFile: cred, OSUser: r.proc.osUser})
	if err != nil {
		return fmt.Errorf("node %s/%s: %w", a.ClusterID, a.Node, err)
	}
	if err := os.WriteFile(h.Config, cfg, 0o600); err != nil {
		return err
	}
	if h.PID, err = r.proc.start(h); err != nil {
		return err
	}
	b, _ := json.Marshal(h)
	if err := os.WriteFile(statePath, b, 0o600); err != nil {
		return err
	}
	r.log.Info("node started", zap.String("cluster", a.ClusterID), zap.String("node", a.Node), zap.Int("pid", h.PID), zap.Int("pg_port", h.PGPort))
	return nil
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
	sub("http")["listen"] = net.JoinHostPort(l.Address, strconv.Itoa(l.HTTPPort))
	return yaml.Marshal(doc)
}
