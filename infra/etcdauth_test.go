package infra_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/catalog"
	"github.com/dbpilot/dbpilot/infra"
)

func etcdSpec(t *testing.T, user, password string) infra.NodeSpec {
	t.Helper()
	tpl, ok := catalog.Lookup("postgres-15")
	if !ok {
		t.Fatal("no postgres-15")
	}
	return infra.NodeSpec{ClusterID: "c-123", Namespace: "acme", Project: "default", Cluster: "billing", Node: "node1",
		Template: tpl, Plan: tpl.Plans["small"], Agent: infra.AgentSettings{EtcdEndpoints: []string{"http://127.0.0.1:2379"},
			EtcdUsername: user, EtcdPassword: password, EtcdCAPEM: map[bool]string{true: "-----BEGIN CERTIFICATE-----\n", false: ""}[user != ""]}}
}

type etcdDoc struct {
	Etcd struct {
		Endpoints    []string          `yaml:"endpoints"`
		Username     string            `yaml:"username"`
		PasswordFile string            `yaml:"password_file"`
		DialTimeout  string            `yaml:"dial_timeout"`
		TLS          map[string]string `yaml:"tls"`
	} `yaml:"etcd"`
}

// TestAgentConfigCarriesClusterEtcdUser: a node of a cluster with its own
// etcd user gets the user and a password file (never the password itself)
// in its config, and the provider writes the file 0600; without a user
// the etcd section has only the endpoints.
func TestAgentConfigCarriesClusterEtcdUser(t *testing.T) {
	dir := t.TempDir()
	l := infra.NodeLayout{Address: "127.0.0.1", PGPort: 5432, DataDir: dir + "/data", StateDir: dir + "/state", CredentialsFile: dir + "/c.yaml",
		EtcdPasswordFile: filepath.Join(dir, "etcd.password"), EtcdCAFile: filepath.Join(dir, "etcd-ca.pem")}
	spec := etcdSpec(t, "dbpilot-agent-c-123", "s3cret-etcd")
	b, err := infra.AgentConfig(spec, l)
	if err != nil {
		t.Fatal(err)
	}
	var doc etcdDoc
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Etcd.Username != "dbpilot-agent-c-123" || doc.Etcd.PasswordFile != l.EtcdPasswordFile || doc.Etcd.DialTimeout == "" ||
		doc.Etcd.TLS["ca_file"] != l.EtcdCAFile || strings.Contains(string(b), "s3cret-etcd") {
		t.Fatalf("etcd section %+v of:\n%s", doc.Etcd, b)
	}
	if err := infra.WriteEtcdFiles(spec, l); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(l.EtcdPasswordFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v, want 0600", fi, err)
	}
	if got, _ := os.ReadFile(l.EtcdPasswordFile); strings.TrimSpace(string(got)) != "s3cret-etcd" {
		t.Fatalf("password file holds %q", got)
	}

	plain := etcdSpec(t, "", "")
	b, err = infra.AgentConfig(plain, l)
	if err != nil {
		t.Fatal(err)
	}
	doc = etcdDoc{}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Etcd.Username != "" || doc.Etcd.PasswordFile != "" || doc.Etcd.TLS != nil {
		t.Fatalf("etcd section without a user: %+v", doc.Etcd)
	}
}

// TestCloudInitCarriesClusterEtcdUser: user-data writes the cluster's etcd
// password to a 0600 file the agent config names.
func TestCloudInitCarriesClusterEtcdUser(t *testing.T) {
	got, err := infra.RenderCloudInit(etcdSpec(t, "dbpilot-agent-c-123", "s3cret-etcd"), "superuser: {}\n", infra.CloudInitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cc struct {
		WriteFiles []struct{ Path, Permissions, Content string } `yaml:"write_files"`
	}
	if err := yaml.Unmarshal(got, &cc); err != nil {
		t.Fatal(err)
	}
	files := map[string][2]string{}
	for _, f := range cc.WriteFiles {
		files[f.Path] = [2]string{f.Permissions, f.Content}
	}
	l := infra.CloudInitLayout()
	if f := files[l.EtcdPasswordFile]; f[0] != "0600" || strings.TrimSpace(f[1]) != "s3cret-etcd" {
		t.Fatalf("etcd password file %s: %v", l.EtcdPasswordFile, f)
	}
	var doc etcdDoc
	if err := yaml.Unmarshal([]byte(files["/etc/dbpilot/agent.yaml"][1]), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Etcd.Username != "dbpilot-agent-c-123" || doc.Etcd.PasswordFile != l.EtcdPasswordFile {
		t.Fatalf("agent.yaml etcd section %+v", doc.Etcd)
	}
}
