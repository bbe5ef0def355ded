package infra_test

import (
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/catalog"
	"github.com/dbpilot/dbpilot/infra"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestRenderCloudInitGolden renders user-data for a postgres-15 node and
// compares it with testdata/cloudinit.golden (go test -update rewrites it);
// it also checks the document is YAML with the files and commands a
// machine needs.
func TestRenderCloudInitGolden(t *testing.T) {
	tpl, ok := catalog.Lookup("postgres-15")
	if !ok {
		t.Fatal("no postgres-15")
	}
	spec := infra.NodeSpec{ClusterID: "c-123", Namespace: "acme", Project: "default", Cluster: "billing", Node: "node2",
		Template: tpl, Plan: tpl.Plans["small"], Agent: infra.AgentSettings{EtcdEndpoints: []string{"https://etcd.example:2379"},
			SynchronousMode: "on", EventsURL: "https://c-123:key@dbpilot.example/v1/ingest/events", TTL: 30 * time.Second}}
	cred := "superuser: {username: postgres, password: s3cret}\nreplication: {username: replicator, password: r3pl}\n"
	got, err := infra.RenderCloudInit(spec, cred, infra.CloudInitOptions{AgentURL: "https://downloads.example/dbpilot-agent",
		AgentSHA256: strings.Repeat("ab", 32)})
	if err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/cloudinit.golden"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("user-data differs from %s (go test -update to accept):\n%s", golden, got)
	}
	if !strings.HasPrefix(string(got), "#cloud-config\n") {
		t.Fatal("missing #cloud-config header")
	}
	var doc struct {
		WriteFiles []struct{ Path, Permissions, Content string } `yaml:"write_files"`
		RunCmd     [][]string                                    `yaml:"runcmd"`
	}
	if err := yaml.Unmarshal(got, &doc); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, f := range doc.WriteFiles {
		files[f.Path] = f.Permissions
		if f.Path == "/etc/dbpilot/credentials.yaml" && f.Content != cred {
			t.Errorf("credentials content %q", f.Content)
		}
	}
	if files["/etc/dbpilot/agent.yaml"] != "0600" || files["/etc/dbpilot/credentials.yaml"] != "0600" || files["/etc/systemd/system/dbpilot-agent.service"] == "" {
		t.Errorf("files %v", files)
	}
	if last := doc.RunCmd[len(doc.RunCmd)-1]; strings.Join(last, " ") != "systemctl enable --now dbpilot-agent.service" {
		t.Errorf("last command %v", last)
	}
	if _, err := infra.RenderCloudInit(spec, cred, infra.CloudInitOptions{AgentURL: "x", AgentSHA256: "nothex"}); err == nil {
		t.Error("bad sha256 accepted")
	}
}

// TestAgentUnitMatchesDeploy keeps the embedded unit identical to
// deploy/systemd/dbpilot-agent.service.
func TestAgentUnitMatchesDeploy(t *testing.T) {
	b, err := os.ReadFile("../deploy/systemd/dbpilot-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != infra.AgentUnit {
		t.Fatal("infra.AgentUnit differs from deploy/systemd/dbpilot-agent.service")
	}
}
