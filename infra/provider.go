// Package infra is the Infrastructure Service's provider layer: a Provider
// creates, deletes, restarts and reports on one database node from an image
// template (catalog.Template) and an agent configuration. Providers:
//
//   - process: nodes as local process groups (dbpilot-agent run --config)
//     on this machine; the embedded default and the test bed.
//   - fleet: enrolled bare-metal or VM hosts, allocated by labels and free
//     capacity; the host runs the agent with the configuration assigned to it.
//   - cloud-init: RenderCloudInit turns a node into IaaS user-data (see
//     deploy/terraform for a consumer).
//
// Every Provider method is idempotent: the workflow that calls it persists
// the returned handle and retries after a crash or a server restart.
package infra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/catalog"
)

// ErrNoCapacity: no host can take the node (fleet).
var ErrNoCapacity = errors.New("no capacity")

// NodeSpec is everything a provider needs to create one node.
type NodeSpec struct {
	ClusterID string
	Namespace string
	Project   string
	Cluster   string
	Node      string
	Template  catalog.Template
	Plan      catalog.Plan
	Agent     AgentSettings
	// Restore, when set, makes the cluster's first primary bootstrap from
	// another cluster's backup (agent backup.bootstrap_from) instead of
	// running initdb.
	Restore *RestoreSource
}

// RestoreSource names the backup a restored cluster starts from.
type RestoreSource struct {
	// ClusterID is the source cluster's id (its repository).
	ClusterID string `json:"cluster_id"`
	// Cluster is the source's "namespace/project/name" (its prefix in the
	// repository).
	Cluster string `json:"cluster"`
	// BackupID selects the backup ("": the newest).
	BackupID string `json:"backup_id,omitempty"`
	// TargetTime is the point-in-time recovery target (nil: replay all
	// archived WAL).
	TargetTime *time.Time `json:"target_time,omitempty"`
}

// AgentSettings are the cluster-wide parts of every node's agent
// configuration.
type AgentSettings struct {
	EtcdEndpoints []string
	// EtcdUsername and EtcdPassword are the cluster's own etcd user, whose
	// role covers only the cluster's prefix (docs/security.md); empty:
	// etcd without authentication. The password never goes into the
	// config: the provider writes it to NodeLayout.EtcdPasswordFile (0600)
	// and the config names that file (etcd.password_file).
	EtcdUsername string
	EtcdPassword string
	// EtcdCAPEM, when set, is the CA bundle the agents verify etcd's TLS
	// certificate with; the provider writes it to NodeLayout.EtcdCAFile and
	// the config names that file (etcd.tls.ca_file).
	EtcdCAPEM       string
	SynchronousMode string // on | off
	// EventsURL is where the agent posts events over HTTP ("" with Dapr).
	EventsURL string
	// Dapr, when set, makes the agent publish through its sidecar.
	Dapr *DaprSettings
	TTL  time.Duration
	// Interval is the agent's health interval (0: agent default).
	Interval time.Duration
	LogLevel string
}

// DaprSettings name the agent's sidecar and topic.
type DaprSettings struct {
	// HTTPAddress is the sidecar's HTTP API, host:port (daprd
	// --dapr-http-port): the agent's events.dapr.http_address.
	HTTPAddress string `json:"http_address"`
	PubSub      string `json:"pubsub"`
	Topic       string `json:"topic"`
}

// Status is what a provider knows about a node.
type Status struct {
	// Running: the node's agent process is up. Meaningless when Unknown.
	Running bool `json:"running"`
	// Unknown: the provider cannot tell whether the node's agent runs
	// (fleet: the agent is supervised by systemd on its host; process: the
	// node's folder is not on this machine). The control plane's repair
	// reconciler leaves such nodes alone.
	Unknown bool `json:"unknown,omitempty"`
	// Detail says why, in a few words ("pid 4242", "agent not running").
	Detail string `json:"detail,omitempty"`
}

// Provider creates and removes nodes. Handles are provider-specific JSON
// the caller persists and hands back.
type Provider interface {
	// Name is the provider's name in the API ("process", "fleet").
	Name() string
	// Create makes sure the node exists and runs. prev is the handle of an
	// earlier attempt (nil the first time); an existing healthy node is
	// adopted, not recreated.
	Create(ctx context.Context, spec NodeSpec, prev json.RawMessage) (json.RawMessage, error)
	// Delete stops the node and removes everything Create made. Deleting
	// a node that is already gone succeeds.
	Delete(ctx context.Context, spec NodeSpec, handle json.RawMessage) error
	// Restart stops and starts the node's agent (and so its database),
	// keeping its data: the agent rejoins as its own logic decides (a
	// former primary rewinds or re-clones, never comes back writable).
	// It also brings back a node whose agent died.
	Restart(ctx context.Context, spec NodeSpec, handle json.RawMessage) (json.RawMessage, error)
	// Status reports on the node: whether its agent runs, or that the
	// provider cannot tell (Status.Unknown). It must be cheap: the repair
	// reconciler calls it for every node of every ready cluster each
	// repair interval.
	Status(ctx context.Context, handle json.RawMessage) (Status, error)
	// DeleteCluster removes cluster-wide leftovers once every node is gone.
	DeleteCluster(ctx context.Context, clusterID string) error
}

// AgentAddresser is implemented by providers whose handle records where a
// node's agent serves HTTP (/health, /metrics): the control plane's
// Prometheus service discovery falls back to it while the agent's member
// key, which carries its api_url, is absent (agent down, etcd
// unreachable).
type AgentAddresser interface {
	// AgentHTTPAddress returns the agent's HTTP address as "host:port"
	// from a handle Create or Restart returned; "" when the handle does
	// not say (no port recorded, not this provider's handle).
	AgentHTTPAddress(handle json.RawMessage) string
}

// HostNamer is implemented by providers that place nodes on named hosts.
type HostNamer interface {
	// NodeHost returns the host a node's handle places it on.
	NodeHost(handle json.RawMessage) string
}

// AgentConfig renders the dbpilot-agent YAML for one node (the format of
// docs/agent-config.md). Paths and ports are the node's.
func AgentConfig(spec NodeSpec, l NodeLayout) ([]byte, error) {
	pg := map[string]any{
		"data_dir": l.DataDir, "listen_address": l.Address, "port": l.PGPort,
		"credentials_file": l.CredentialsFile,
	}
	if spec.Template.BinDir != "" {
		pg["bin_dir"] = spec.Template.BinDir
	}
	if l.OSUser != "" {
		pg["os_user"] = l.OSUser
	}
	if len(spec.Template.Parameters) > 0 {
		pg["parameters"] = spec.Template.Parameters
	}
	cfg := map[string]any{
		"node":             map[string]any{"name": spec.Node, "address": l.Address},
		"cluster":          map[string]any{"namespace": spec.Namespace, "project": spec.Project, "name": spec.Cluster},
		"etcd":             etcdSection(spec, l),
		"synchronous_mode": orDefault(spec.Agent.SynchronousMode, "off"),
		"state_dir":        l.StateDir,
		"postgres":         pg,
		"log":              map[string]any{"level": orDefault(spec.Agent.LogLevel, "info")},
	}
	if l.HTTPPort > 0 {
		cfg["http"] = map[string]any{"listen": fmt.Sprintf("%s:%d", l.Address, l.HTTPPort)}
	}
	if spec.Agent.TTL > 0 {
		cfg["ttl"] = spec.Agent.TTL.String()
	}
	if spec.Agent.Interval > 0 {
		cfg["health"] = map[string]any{"interval": spec.Agent.Interval.String()}
	}
	switch {
	case spec.Agent.Dapr != nil:
		cfg["events"] = map[string]any{"dapr": map[string]any{
			"http_address": spec.Agent.Dapr.HTTPAddress, "pubsub": spec.Agent.Dapr.PubSub, "topic": spec.Agent.Dapr.Topic}}
	case spec.Agent.EventsURL != "":
		// dbpilot-server's ingest takes CloudEvents batches (docs/events.md).
		cfg["events"] = map[string]any{"http": map[string]any{"url": spec.Agent.EventsURL, "timeout": "5s", "max_batch": 100}}
	}
	if len(spec.Template.Handlers) > 0 {
		cfg["handlers"] = spec.Template.Handlers
	}
	if b := backupSection(spec, l); b != nil {
		cfg["backup"] = b
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("render agent config for %s: %w", spec.Node, err)
	}
	return b, nil
}

// NodeLayout is where one node lives.
type NodeLayout struct {
	Address         string
	PGPort          int
	HTTPPort        int
	DataDir         string
	StateDir        string
	CredentialsFile string
	OSUser          string
	// BackupRepository is the cluster's filesystem backup repository, shared
	// by its nodes ("": the provider has none; no backup section).
	BackupRepository string
	// SourceRepository is the restore source cluster's repository (with
	// NodeSpec.Restore).
	SourceRepository string
	// EtcdPasswordFile is where the provider writes the cluster's etcd
	// password (with AgentSettings.EtcdUsername set).
	EtcdPasswordFile string
	// EtcdCAFile is where the provider writes AgentSettings.EtcdCAPEM.
	EtcdCAFile string
	// ArchiveSocket overrides the agent's default WAL archive socket path
	// ("": default, next to the data directory).
	ArchiveSocket string
}

// Repository names in generated agent configs.
const (
	// RepoDefault is the cluster's own repository.
	RepoDefault = "default"
	// RepoSource is the restore source cluster's repository.
	RepoSource = "source"
)

// backupSection renders the agent's backup section from the template's
// policy and the layout's repositories (nil: none).
func backupSection(spec NodeSpec, l NodeLayout) map[string]any {
	pol := spec.Template.Backup
	if l.BackupRepository == "" || (pol == nil && spec.Restore == nil) {
		return nil
	}
	repos := []map[string]any{{"name": RepoDefault, "type": "filesystem", "path": l.BackupRepository}}
	b := map[string]any{}
	if pol != nil {
		if pol.WALArchive {
			b["wal_archive"] = RepoDefault
		}
		if pol.RunOn != "" {
			b["run_on"] = pol.RunOn
		}
		var jobs []map[string]any
		for _, j := range pol.Jobs {
			job := map[string]any{"name": j.Name, "schedule": j.Schedule, "method": j.Method, "repository": RepoDefault}
			if j.Description != "" {
				job["description"] = j.Description
			}
			if j.TimeZone != "" {
				job["time_zone"] = j.TimeZone
			}
			ret := map[string]any{}
			if j.RetentionCount > 0 {
				ret["count"] = j.RetentionCount
			}
			if j.RetentionAge != "" {
				ret["age"] = j.RetentionAge
			}
			if len(ret) > 0 {
				job["retention"] = ret
			}
			jobs = append(jobs, job)
		}
		if len(jobs) > 0 {
			b["jobs"] = jobs
		}
	}
	if r := spec.Restore; r != nil && l.SourceRepository != "" {
		repos = append(repos, map[string]any{"name": RepoSource, "type": "filesystem", "path": l.SourceRepository})
		bf := map[string]any{"repository": RepoSource, "cluster": r.Cluster}
		if r.BackupID != "" {
			bf["backup_id"] = r.BackupID
		}
		if r.TargetTime != nil {
			bf["target_time"] = r.TargetTime.UTC().Format(time.RFC3339Nano)
		}
		b["bootstrap_from"] = bf
	}
	b["repositories"] = repos
	if l.ArchiveSocket != "" {
		b["archive_socket"] = l.ArchiveSocket
	}
	return b
}

// AgentEtcdDialTimeout is the etcd.dial_timeout of agents that log in to
// etcd: the agent's default (2s) covers a TCP connect, not a login on a
// loaded etcd.
const AgentEtcdDialTimeout = 10 * time.Second

// etcdSection renders the agent's etcd section: the endpoints and, when
// the cluster has its own etcd user, its name and password file.
func etcdSection(spec NodeSpec, l NodeLayout) map[string]any {
	e := map[string]any{"endpoints": spec.Agent.EtcdEndpoints}
	if spec.Agent.EtcdUsername != "" && l.EtcdPasswordFile != "" {
		e["username"], e["password_file"] = spec.Agent.EtcdUsername, l.EtcdPasswordFile
		// With a username, connecting includes a login (etcd checks the
		// password with bcrypt) that must fit in the dial timeout.
		e["dial_timeout"] = AgentEtcdDialTimeout.String()
	}
	if spec.Agent.EtcdCAPEM != "" && l.EtcdCAFile != "" {
		e["tls"] = map[string]any{"ca_file": l.EtcdCAFile}
	}
	return e
}

// WriteEtcdFiles writes spec's etcd password to l.EtcdPasswordFile (0600)
// and its etcd CA bundle to l.EtcdCAFile (0644), each replaced atomically,
// when the cluster has them.
func WriteEtcdFiles(spec NodeSpec, l NodeLayout) error {
	write := func(path, content string, mode os.FileMode) error {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), mode); err != nil {
			return err
		}
		return os.Rename(tmp, path)
	}
	if spec.Agent.EtcdUsername != "" && l.EtcdPasswordFile != "" {
		if err := write(l.EtcdPasswordFile, spec.Agent.EtcdPassword+"\n", 0o600); err != nil {
			return fmt.Errorf("write etcd password: %w", err)
		}
	}
	if spec.Agent.EtcdCAPEM != "" && l.EtcdCAFile != "" {
		if err := write(l.EtcdCAFile, spec.Agent.EtcdCAPEM, 0o644); err != nil {
			return fmt.Errorf("write etcd CA: %w", err)
		}
	}
	return nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
