// Package prometheus_test checks the Prometheus files of deploy/prometheus
// with promtool (Debian's prometheus package; deploy/dev/install-deps.sh
// --test installs it): the alerting rules load and pass their unit tests,
// and the example configuration is valid and discovers its targets from
// dbpilot-server. The rules' and the dashboards' metric names are checked
// against live agents by controlplane/server TestPrometheusScrapesAgents.
package prometheus_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// promtool returns promtool's path; it fails the test when it is missing
// (make test installs it: deploy/dev/install-deps.sh --test).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: run deploy/dev/install-deps.sh --test (Debian's prometheus package)")
	}
	return p
}

// run runs promtool with args in dir and fails with its output on error.
func run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRules: the alerting rules load (promtool check rules) and pass
// their unit tests (promtool test rules: every rule fires where it must
// and stays silent where it must not).
func TestRules(t *testing.T) {
	out := run(t, ".", "check", "rules", "dbpilot.rules.yml")
	if !strings.Contains(out, "SUCCESS: 10 rules found") {
		t.Errorf("promtool check rules: %s, want 10 rules", out)
	}
	run(t, ".", "test", "rules", "dbpilot.rules_test.yml")

	// Every alert has a severity of page, ticket or info, a summary and
	// a description, and a unit test that expects it to fire.
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, "dbpilot.rules.yml", &doc)
	tests, err := os.ReadFile("dbpilot.rules_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			n++
			switch r.Labels["severity"] {
			case "page", "ticket", "info":
			default:
				t.Errorf("%s: severity %q, want page, ticket or info", r.Alert, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a summary and a description annotation", r.Alert)
			}
			if !strings.Contains(string(tests), "alertname: "+r.Alert+"\n        exp_alerts:") {
				t.Errorf("%s: no test in dbpilot.rules_test.yml expects it to fire", r.Alert)
			}
		}
	}
	if n != 10 {
		t.Errorf("%d rules, want 10", n)
	}
}

// TestExampleConfig: prometheus.yml is a valid configuration (promtool
// check config, which also loads its rule file) whose one scrape job
// discovers targets from dbpilot-server with a bearer token file.
func TestExampleConfig(t *testing.T) {
	run(t, ".", "check", "config", "prometheus.yml")
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			HTTPSDConfigs []struct {
				URL           string `yaml:"url"`
				Authorization struct {
					Type            string `yaml:"type"`
					CredentialsFile string `yaml:"credentials_file"`
				} `yaml:"authorization"`
			} `yaml:"http_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "prometheus.yml", &cfg)
	if len(cfg.RuleFiles) != 1 || cfg.RuleFiles[0] != "dbpilot.rules.yml" {
		t.Errorf("rule_files %v, want [dbpilot.rules.yml]", cfg.RuleFiles)
	}
	if len(cfg.ScrapeConfigs) != 1 || cfg.ScrapeConfigs[0].JobName != "dbpilot" || len(cfg.ScrapeConfigs[0].HTTPSDConfigs) != 1 {
		t.Fatalf("scrape_configs %+v, want one job dbpilot with one http_sd_configs entry", cfg.ScrapeConfigs)
	}
	sd := cfg.ScrapeConfigs[0].HTTPSDConfigs[0]
	if !strings.HasSuffix(sd.URL, "/v1/prometheus/targets") || sd.Authorization.Type != "Bearer" || sd.Authorization.CredentialsFile == "" {
		t.Errorf("http_sd_configs %+v, want the targets URL and a Bearer credentials_file", sd)
	}
	// promtool reads the rule file relative to the configuration: a copy
	// elsewhere without it must fail, so the check above did load it.
	dir := t.TempDir()
	b, err := os.ReadFile("prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool(t), "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput(); err == nil {
		t.Errorf("promtool check config without the rule file passed:\n%s", out)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
