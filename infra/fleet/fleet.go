// Package fleet is the fleet provider: nodes placed on enrolled
// bare-metal or VM hosts by labels and free capacity, through allocation
// rows in the control plane's store. The host side (`dbpilot-host run`,
// infra.HostRunner) does not import this package: it talks to the
// control plane over HTTP with the proto types only.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
)

// Handle is the fleet provider's handle of one node (JSON, persisted by
// the workflow): the host it is placed on.
type Handle struct {
	HostID   string `json:"host_id"`
	HostName string `json:"host_name"`
	Address  string `json:"address"`
}

// Fleet places nodes on enrolled hosts. Placement is an allocation row in
// the store (host, resources, rendered agent config); the host's runner
// (`dbpilot-host run`) polls its allocations and starts or stops the
// agents. Deleting a node marks its allocation releasing; the runner stops
// the agent, removes its folder and acknowledges, which frees the capacity.
type Fleet struct {
	st  *store.Store
	log *zap.Logger
	// ReleaseTimeout bounds waiting for a host to acknowledge a release.
	ReleaseTimeout time.Duration
	// HostTimeout: a host that has not polled for this long is considered
	// dead; its releases are forced (its runner stops orphans on return).
	HostTimeout time.Duration
	// RestartTimeout bounds waiting for a host to acknowledge a restart
	// (the graceful stop of a primary includes its hand-over).
	RestartTimeout time.Duration
}

// New returns a fleet provider over st (timeouts: release and restart
// 3 min, host silence 2 min).
func New(st *store.Store, log *zap.Logger) *Fleet {
	return &Fleet{st: st, log: log.Named("fleet"), ReleaseTimeout: 3 * time.Minute, HostTimeout: 2 * time.Minute, RestartTimeout: 3 * time.Minute}
}

// Name returns "fleet".
func (f *Fleet) Name() string { return "fleet" }

// Layout is the layout the fleet renders into agent configs; the host
// runner replaces paths, address and ports with its own.
func Layout(spec infra.NodeSpec) infra.NodeLayout {
	dir := filepath.Join("/var/lib/dbpilot", spec.ClusterID, spec.Node)
	return infra.NodeLayout{Address: "0.0.0.0", PGPort: 5432, HTTPPort: 8008, DataDir: filepath.Join(dir, "data"),
		StateDir: filepath.Join(dir, "state"), CredentialsFile: filepath.Join(dir, "credentials.yaml"), OSUser: "postgres",
		EtcdPasswordFile: filepath.Join(dir, "etcd.password")}
}

// Selector is the labels a host must carry for spec: the template's
// host_selector with the plan's on top.
func Selector(spec infra.NodeSpec) map[string]string {
	out := map[string]string{}
	for k, v := range spec.Template.HostSelector {
		out[k] = v
	}
	for k, v := range spec.Plan.HostSelector {
		out[k] = v
	}
	return out
}

// Candidates orders the ready hosts matching sel by free capacity (most
// free memory first, then cpu, then name): nodes spread over the fleet.
func Candidates(hosts []store.Host, allocs []store.Allocation, sel map[string]string) []string {
	used := map[string]store.Resources{}
	for _, a := range allocs {
		u := used[a.HostID]
		u.CPU, u.MemoryMB, u.DiskGB = u.CPU+a.Resources.CPU, u.MemoryMB+a.Resources.MemoryMB, u.DiskGB+a.Resources.DiskGB
		used[a.HostID] = u
	}
	type cand struct {
		id, name string
		free     store.Resources
	}
	var cs []cand
	for _, h := range hosts {
		if h.State != store.HostReady || !matches(h.Labels, sel) {
			continue
		}
		u := used[h.ID]
		cs = append(cs, cand{h.ID, h.Name, store.Resources{CPU: h.Capacity.CPU - u.CPU, MemoryMB: h.Capacity.MemoryMB - u.MemoryMB, DiskGB: h.Capacity.DiskGB - u.DiskGB}})
	}
	sort.Slice(cs, func(i, j int) bool {
		a, b := cs[i].free, cs[j].free
		if a.MemoryMB != b.MemoryMB {
			return a.MemoryMB > b.MemoryMB
		}
		if a.CPU != b.CPU {
			return a.CPU > b.CPU
		}
		return cs[i].name < cs[j].name
	})
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.id
	}
	return out
}

func matches(labels, sel map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Create allocates a host for the node (idempotent: an allocated node
// keeps its host) and records the agent config the host will run. When
// the node is placed already and the config rendered from spec differs
// from the one it runs, the new config is stored: the host writes it and
// signals the agent to reload it (SIGHUP; the agent applies handler
// settings at once, the rest at its next restart).
func (f *Fleet) Create(ctx context.Context, spec infra.NodeSpec, _ json.RawMessage) (json.RawMessage, error) {
	// The names become the host's folder Root/nodes/{cluster}/{node}.
	if _, err := infra.NodeRel(spec.ClusterID, spec.Node); err != nil {
		return nil, fmt.Errorf("create node: %w", err)
	}
	if _, err := f.st.ClusterCredentials(ctx, spec.ClusterID, infra.NewCredentials); err != nil {
		return nil, err
	}
	cfg, err := infra.AgentConfig(spec, Layout(spec))
	if err != nil {
		return nil, err
	}
	if cur, err := f.st.GetAllocation(ctx, spec.ClusterID, spec.Node); err == nil && cur.State == store.AllocActive && cur.Config != string(cfg) {
		changed, err := f.st.UpdateAllocationConfig(ctx, spec.ClusterID, spec.Node, string(cfg))
		if err != nil {
			return nil, fmt.Errorf("node %s: push agent config: %w", spec.Node, err)
		}
		if changed {
			f.log.Info("agent config changed; the host reloads it", zap.String("cluster", spec.ClusterID), zap.String("node", spec.Node),
				zap.String("host", cur.HostID), zap.String("config_sha256", infra.ConfigSHA256(string(cfg))))
		}
	}
	hosts, err := f.st.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	allocs, err := f.st.ListAllocations(ctx, "")
	if err != nil {
		return nil, err
	}
	sel := Selector(spec)
	need := store.Resources{CPU: spec.Plan.CPU, MemoryMB: spec.Plan.MemoryMB, DiskGB: spec.Plan.DiskGB}
	a, err := f.st.AllocateWith(ctx, Candidates(hosts, allocs, sel), store.Allocation{ClusterID: spec.ClusterID, Node: spec.Node,
		Resources: need, Config: string(cfg)}, store.AllocateOptions{AllowColocation: spec.Template.AllowColocation})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("node %s: no ready host with labels %v and free cpu=%d memory_mb=%d disk_gb=%d%s: %w",
			spec.Node, sel, need.CPU, need.MemoryMB, need.DiskGB, map[bool]string{true: "", false: " without another node of the cluster"}[spec.Template.AllowColocation], infra.ErrNoCapacity)
	}
	if err != nil {
		return nil, err
	}
	if a.State == store.AllocReleasing {
		return nil, fmt.Errorf("node %s: its previous allocation on host %s is still being released", spec.Node, a.HostID)
	}
	h := Handle{HostID: a.HostID}
	for _, x := range hosts {
		if x.ID == a.HostID {
			h.HostName, h.Address = x.Name, x.Address
		}
	}
	f.log.Info("node allocated", zap.String("cluster", spec.ClusterID), zap.String("node", spec.Node), zap.String("host", h.HostName))
	b, _ := json.Marshal(h)
	return b, nil
}

// NodeHost returns the host name a handle places the node on.
func (f *Fleet) NodeHost(handle json.RawMessage) string {
	var h Handle
	_ = json.Unmarshal(handle, &h)
	return h.HostName
}

// Delete asks the node's host to stop it and waits until the host
// acknowledged (folder removed, capacity freed). A host that stopped
// polling is presumed dead and the allocation is released without it.
func (f *Fleet) Delete(ctx context.Context, spec infra.NodeSpec, _ json.RawMessage) error {
	if _, err := infra.NodeRel(spec.ClusterID, spec.Node); err != nil {
		return fmt.Errorf("delete node: %w", err)
	}
	if err := f.st.MarkReleasing(ctx, spec.ClusterID, spec.Node); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	deadline := time.Now().Add(f.ReleaseTimeout)
	for {
		a, err := f.st.GetAllocation(ctx, spec.ClusterID, spec.Node)
		if errors.Is(err, store.ErrNotFound) {
			f.log.Info("node released", zap.String("cluster", spec.ClusterID), zap.String("node", spec.Node))
			return nil
		}
		if err == nil && f.hostDead(ctx, a.HostID) {
			f.log.Warn("host silent; releasing without its acknowledgement", zap.String("host", a.HostID), zap.String("node", spec.Node))
			return f.st.Release(ctx, spec.ClusterID, spec.Node)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s: host %s did not stop it within %s", spec.Node, a.HostID, f.ReleaseTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (f *Fleet) hostDead(ctx context.Context, id string) bool {
	hosts, err := f.st.ListHosts(ctx)
	if err != nil {
		return false
	}
	for _, h := range hosts {
		if h.ID == id {
			return time.Since(h.LastSeen) > f.HostTimeout
		}
	}
	return true // the host row is gone
}

// Restart asks the node's host to restart its agent (the host runner
// stops it gracefully — SIGTERM: a primary hands over to a replica first —
// and starts it again with the same config and data) and waits until the
// host acknowledges the restart generation, at most RestartTimeout. A
// retried Restart whose request is still pending waits for that request
// instead of asking for a second restart. Errors: the node has no active
// allocation; its host has not polled for HostTimeout; no acknowledgement
// in time. The handle is returned unchanged.
func (f *Fleet) Restart(ctx context.Context, spec infra.NodeSpec, handle json.RawMessage) (json.RawMessage, error) {
	gen, err := f.st.RequestRestart(ctx, spec.ClusterID, spec.Node)
	if err != nil {
		return nil, fmt.Errorf("restart node %s: %w", spec.Node, err)
	}
	f.log.Info("node restart requested", zap.String("cluster", spec.ClusterID), zap.String("node", spec.Node), zap.Int64("generation", gen))
	start := time.Now()
	for {
		a, err := f.st.GetAllocation(ctx, spec.ClusterID, spec.Node)
		if err != nil {
			return nil, fmt.Errorf("restart node %s: %w", spec.Node, err)
		}
		if a.RestartApplied >= gen {
			f.log.Info("node restarted", zap.String("cluster", spec.ClusterID), zap.String("node", spec.Node), zap.String("host", a.HostID),
				zap.Int64("generation", gen), zap.Duration("took", time.Since(start)))
			return handle, nil
		}
		if f.hostDead(ctx, a.HostID) {
			return nil, fmt.Errorf("restart node %s: host %s has not polled for %s; bring its runner (dbpilot-host run) back, or drain the host", spec.Node, a.HostID, f.HostTimeout)
		}
		if time.Since(start) > f.RestartTimeout {
			return nil, fmt.Errorf("restart node %s: host %s did not acknowledge restart generation %d within %s (it applied %d); see the host runner's log",
				spec.Node, a.HostID, gen, f.RestartTimeout, a.RestartApplied)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Status is always Unknown on the fleet: the control plane cannot see the
// agent process, and supervising it is the host's job. A machine set up
// from cloud-init runs the agent under systemd (infra.AgentUnit,
// Restart=on-failure: a killed agent is restarted); a `dbpilot-host run`
// host starts, at every poll, an assigned agent that is not running. A
// host that stopped polling may still run its agents (they outlive the
// runner). Detail says whether the host polls.
func (f *Fleet) Status(ctx context.Context, handle json.RawMessage) (infra.Status, error) {
	var h Handle
	if err := json.Unmarshal(handle, &h); err != nil {
		return infra.Status{}, fmt.Errorf("fleet status: %w", err)
	}
	if f.hostDead(ctx, h.HostID) {
		return infra.Status{Unknown: true, Detail: "host " + h.HostName + " is not polling"}, nil
	}
	return infra.Status{Unknown: true, Detail: "on host " + h.HostName + " (its agent is supervised there)"}, nil
}

// DeleteCluster releases whatever allocation of the cluster is left.
func (f *Fleet) DeleteCluster(ctx context.Context, clusterID string) error {
	allocs, err := f.st.ListAllocations(ctx, "")
	if err != nil {
		return err
	}
	for _, a := range allocs {
		if a.ClusterID == clusterID {
			if err := f.Delete(ctx, infra.NodeSpec{ClusterID: clusterID, Node: a.Node}, nil); err != nil {
				return err
			}
		}
	}
	return nil
}
