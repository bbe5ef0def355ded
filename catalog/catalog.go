// Package catalog is the Service Catalog: image templates that fix the
// engine, its version, the agent version, default handlers and parameters
// and the resource plans a cluster may be created with. Shipped templates are
// YAML files embedded from catalog/templates; users add their own through
// the API. Both are validated the same way.
package catalog

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/proto"
)

//go:embed templates/*.yaml
var shipped embed.FS

// The template document is part of the API's wire contract: its types are
// defined in package proto and named here for the catalog's users.
type (
	// Template is an image template ([proto.Template]).
	Template = proto.Template
	// Plan is a resource size of a template ([proto.Plan]).
	Plan = proto.Plan
	// BackupPolicy is a template's default backup policy
	// ([proto.BackupPolicy]).
	BackupPolicy = proto.BackupPolicy
	// BackupJob is one scheduled job of a BackupPolicy ([proto.BackupJob]).
	BackupJob = proto.BackupJob
)

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

var jobNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

func validateBackup(b *BackupPolicy, add func(f, p string)) {
	switch b.RunOn {
	case "", "prefer-replica", "replica", "primary", "any":
	default:
		add("backup.run_on", fmt.Sprintf("must be prefer-replica, replica, primary or any (got %q)", b.RunOn))
	}
	seen := map[string]bool{}
	for i, j := range b.Jobs {
		p := fmt.Sprintf("backup.jobs[%d]", i)
		if !jobNameRE.MatchString(j.Name) || seen[j.Name] {
			add(p+".name", fmt.Sprintf("must match %s and be unique (got %q)", jobNameRE, j.Name))
		}
		seen[j.Name] = true
		if _, err := cronParser.Parse(j.Schedule); err != nil {
			add(p+".schedule", fmt.Sprintf("invalid cron expression %q: %v", j.Schedule, err))
		}
		if j.Method != "physical" && j.Method != "logical" && j.Method != "verify" {
			add(p+".method", fmt.Sprintf("must be physical, logical or verify (got %q)", j.Method))
		}
		if j.RetentionCount < 0 {
			add(p+".retention_count", fmt.Sprintf("must be >= 0 (got %d)", j.RetentionCount))
		}
		if j.RetentionAge != "" {
			if d, err := time.ParseDuration(j.RetentionAge); err != nil || d < 0 {
				add(p+".retention_age", fmt.Sprintf("must be a non-negative duration like 168h (got %q)", j.RetentionAge))
			}
		}
	}
}

// FieldError is one validation problem, naming the field.
type FieldError struct {
	Field   string
	Problem string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Problem }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Engines lists the supported engines.
var Engines = []string{"postgres"}

// Validate returns every problem of t joined (each a FieldError).
func Validate(t Template) error {
	var errs []error
	add := func(f, p string) { errs = append(errs, FieldError{Field: f, Problem: p}) }
	if !nameRE.MatchString(t.Name) {
		add("name", fmt.Sprintf("must match %s (got %q)", nameRE, t.Name))
	}
	if t.Engine != "postgres" {
		add("engine", fmt.Sprintf("must be one of %v (got %q)", Engines, t.Engine))
	}
	if t.EngineVersion == "" {
		add("engine_version", "required")
	}
	if t.AgentVersion == "" {
		add("agent_version", "required")
	}
	if len(t.Plans) == 0 {
		add("plans", "at least one plan is required")
	}
	for _, n := range sortedKeys(t.Plans) {
		p := t.Plans[n]
		if !nameRE.MatchString(n) {
			add("plans."+n, "plan names must match "+nameRE.String())
		}
		if p.CPU < 1 || p.CPU > 1024 {
			add("plans."+n+".cpu", fmt.Sprintf("must be in [1, 1024] (got %d)", p.CPU))
		}
		if p.MemoryMB < 128 {
			add("plans."+n+".memory_mb", fmt.Sprintf("must be >= 128 (got %d)", p.MemoryMB))
		}
		if p.DiskGB < 1 {
			add("plans."+n+".disk_gb", fmt.Sprintf("must be >= 1 (got %d)", p.DiskGB))
		}
	}
	if t.Backup != nil {
		validateBackup(t.Backup, add)
	}
	if t.Alerts != nil {
		t.Alerts.Check("alerts.", add)
	}
	validateFields(t, add)
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Parse strictly decodes one YAML (or JSON) template and validates it.
func Parse(b []byte) (Template, error) {
	var t Template
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&t); err != nil {
		return Template{}, fmt.Errorf("parse template: %w", err)
	}
	if err := Validate(t); err != nil {
		return Template{}, fmt.Errorf("template %q: %w", t.Name, err)
	}
	return t, nil
}

// Shipped returns the built-in templates, sorted by name.
func Shipped() ([]Template, error) {
	files, err := fs.Glob(shipped, "templates/*.yaml")
	if err != nil {
		return nil, fmt.Errorf("shipped templates: %w", err)
	}
	var out []Template
	for _, f := range files {
		b, err := shipped.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("shipped template %s: %w", f, err)
		}
		t, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("shipped template %s: %w", f, err)
		}
		t.Builtin = true
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Lookup returns the shipped template name.
func Lookup(name string) (Template, bool) {
	ts, err := Shipped()
	if err != nil {
		return Template{}, false
	}
	for _, t := range ts {
		if t.Name == name {
			return t, true
		}
	}
	return Template{}, false
}

// FromJSON decodes a stored user template.
func FromJSON(b []byte) (Template, error) {
	var t Template
	if err := json.Unmarshal(b, &t); err != nil {
		return Template{}, fmt.Errorf("decode template: %w", err)
	}
	return t, nil
}
