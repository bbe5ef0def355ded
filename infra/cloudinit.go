package infra

import (
	"bytes"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// CloudInitAddress is the placeholder rendered where the node's own IP
// address belongs; the user-data replaces it at first boot (the address is
// not known before the IaaS creates the machine).
const CloudInitAddress = "__DBPILOT_NODE_ADDRESS__"

// AgentUnit is deploy/systemd/dbpilot-agent.service (a test keeps the two
// identical).
const AgentUnit = `# dbpilot-agent as a systemd service (image-template material).
# PostgreSQL runs as a child of the agent (as OS user postgres), so stopping
# the unit runs the graceful path: preStop, hand-over, stop PostgreSQL, postStop.
[Unit]
Description=dbpilot node agent (PostgreSQL autopilot)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStartPre=/usr/local/bin/dbpilot-agent validate --config /etc/dbpilot/agent.yaml
ExecStart=/usr/local/bin/dbpilot-agent run --config /etc/dbpilot/agent.yaml
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM to the agent only; it stops PostgreSQL itself. Kill the rest only
# after the graceful stop had its time (2 × ttl + 30 s with the defaults).
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=60
Restart=on-failure
RestartSec=2
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`

// CloudInitOptions say how the machine gets the agent binary.
type CloudInitOptions struct {
	// AgentURL is downloaded to /usr/local/bin/dbpilot-agent; empty: the
	// image already has the binary there.
	AgentURL string
	// AgentSHA256, when set, is checked before the binary is installed.
	AgentSHA256 string
}

// CloudInitLayout is where a cloud-init node keeps its files.
func CloudInitLayout() NodeLayout {
	return NodeLayout{Address: CloudInitAddress, PGPort: 5432, HTTPPort: 8008, DataDir: "/var/lib/dbpilot/data",
		StateDir: "/var/lib/dbpilot/state", CredentialsFile: "/etc/dbpilot/credentials.yaml", OSUser: "postgres",
		EtcdPasswordFile: "/etc/dbpilot/etcd-password", EtcdCAFile: "/etc/dbpilot/etcd-ca.pem"}
}

type cloudFile struct {
	Path        string `yaml:"path"`
	Owner       string `yaml:"owner"`
	Permissions string `yaml:"permissions"`
	Content     string `yaml:"content"`
}

type cloudConfig struct {
	PackageUpdate bool        `yaml:"package_update"`
	Packages      []string    `yaml:"packages,omitempty"`
	WriteFiles    []cloudFile `yaml:"write_files"`
	RunCmd        [][]string  `yaml:"runcmd"`
}

// RenderCloudInit renders #cloud-config user-data that turns a fresh IaaS
// machine of the spec's image template into the node: it installs the
// template's packages, writes /etc/dbpilot/agent.yaml, the cluster
// credentials and, with per-cluster etcd users, the cluster's etcd password
// (/etc/dbpilot/etcd-password; all 0600), installs the agent binary and its systemd unit,
// puts the machine's address into the config and starts the agent.
// credentials is the credentials file content (the cluster's).
func RenderCloudInit(spec NodeSpec, credentials string, opts CloudInitOptions) ([]byte, error) {
	agentCfg, err := AgentConfig(spec, CloudInitLayout())
	if err != nil {
		return nil, err
	}
	cc := cloudConfig{
		PackageUpdate: len(spec.Template.Packages) > 0,
		Packages:      spec.Template.Packages,
		WriteFiles: []cloudFile{
			{Path: "/etc/dbpilot/agent.yaml", Owner: "root:root", Permissions: "0600", Content: string(agentCfg)},
			{Path: "/etc/dbpilot/credentials.yaml", Owner: "root:root", Permissions: "0600", Content: credentials},
			{Path: "/etc/systemd/system/dbpilot-agent.service", Owner: "root:root", Permissions: "0644", Content: AgentUnit},
		},
	}
	if l := CloudInitLayout(); spec.Agent.EtcdUsername != "" {
		// The cluster's own etcd user (its role covers only the cluster's
		// prefix), never a shared one.
		cc.WriteFiles = append(cc.WriteFiles, cloudFile{Path: l.EtcdPasswordFile, Owner: "root:root", Permissions: "0600", Content: spec.Agent.EtcdPassword + "\n"})
	}
	if l := CloudInitLayout(); spec.Agent.EtcdCAPEM != "" {
		cc.WriteFiles = append(cc.WriteFiles, cloudFile{Path: l.EtcdCAFile, Owner: "root:root", Permissions: "0644", Content: spec.Agent.EtcdCAPEM})
	}
	run := func(args ...string) { cc.RunCmd = append(cc.RunCmd, args) }
	if opts.AgentURL != "" {
		run("curl", "-fsSL", "--retry", "5", "-o", "/usr/local/bin/dbpilot-agent.download", opts.AgentURL)
		if opts.AgentSHA256 != "" {
			if len(opts.AgentSHA256) != 64 || strings.Trim(strings.ToLower(opts.AgentSHA256), "0123456789abcdef") != "" {
				return nil, fmt.Errorf("agent_sha256: want 64 hex digits (got %q)", opts.AgentSHA256)
			}
			run("sh", "-c", "echo '"+strings.ToLower(opts.AgentSHA256)+"  /usr/local/bin/dbpilot-agent.download' | sha256sum -c -")
		}
		run("install", "-m", "0755", "/usr/local/bin/dbpilot-agent.download", "/usr/local/bin/dbpilot-agent")
		run("rm", "-f", "/usr/local/bin/dbpilot-agent.download")
	}
	// The distribution's own PostgreSQL service must not run: the agent
	// owns PostgreSQL.
	if len(spec.Template.Packages) > 0 {
		run("sh", "-c", "systemctl disable --now postgresql || true")
	}
	run("sh", "-c", `addr=$(hostname -I | awk '{print $1}'); sed -i "s/`+CloudInitAddress+`/$addr/g" /etc/dbpilot/agent.yaml`)
	run("mkdir", "-p", "/var/lib/dbpilot")
	run("systemctl", "daemon-reload")
	run("systemctl", "enable", "--now", "dbpilot-agent.service")

	var buf bytes.Buffer
	buf.WriteString("#cloud-config\n")
	buf.WriteString(fmt.Sprintf("# dbpilot node %s of cluster %s/%s/%s (template %s)\n", spec.Node, spec.Namespace, spec.Project, spec.Cluster, spec.Template.Name))
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cc); err != nil {
		return nil, fmt.Errorf("render cloud-init: %w", err)
	}
	_ = enc.Close()
	return buf.Bytes(), nil
}
