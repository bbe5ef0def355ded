package catalog

import (
	"errors"
	"strings"
	"testing"
)

// base is a minimal valid template.
func base() Template {
	return Template{Name: "t", Engine: "postgres", EngineVersion: "15", AgentVersion: "dev", Plans: map[string]Plan{"s": {CPU: 1, MemoryMB: 512, DiskGB: 1}}}
}

// fieldOf returns the first FieldError's field of err ("" when none).
func fieldOf(err error) string {
	var fe FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

func TestValidateFields(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Template)
		field string // "" = valid
	}{
		{"base", func(*Template) {}, ""},
		{"bin_dir ok", func(t *Template) { t.BinDir = "/usr/lib/postgresql/15/bin" }, ""},
		{"bin_dir relative", func(t *Template) { t.BinDir = "usr/lib" }, "bin_dir"},
		{"bin_dir shell", func(t *Template) { t.BinDir = "a;rm -rf /" }, "bin_dir"},
		{"bin_dir subst", func(t *Template) { t.BinDir = "/usr/$(id)" }, "bin_dir"},
		{"bin_dir space", func(t *Template) { t.BinDir = "/usr/lib/x y" }, "bin_dir"},
		{"bin_dir dotdot", func(t *Template) { t.BinDir = "/usr/../tmp" }, "bin_dir"},
		{"bin_dir trailing slash", func(t *Template) { t.BinDir = "/usr/lib/" }, "bin_dir"},
		{"bin_dir newline", func(t *Template) { t.BinDir = "/usr\n/lib" }, "bin_dir"},
		{"packages ok", func(t *Template) { t.Packages = []string{"postgresql-15", "libc6", "g++", "postgresql-15=15.4-1"} }, ""},
		{"package shell", func(t *Template) { t.Packages = []string{"a;rm -rf /"} }, "packages[0]"},
		{"package option", func(t *Template) { t.Packages = []string{"ok", "-oDpkg::Pre-Invoke=x"} }, "packages[1]"},
		{"package upper", func(t *Template) { t.Packages = []string{"Postgres"} }, "packages[0]"},
		{"package one char", func(t *Template) { t.Packages = []string{"a"} }, "packages[0]"},
		{"parameters ok", func(t *Template) {
			t.Parameters = map[string]string{"max_connections": "100", "pg_stat_statements.max": "5000", "search_path": `"$user", public`}
		}, ""},
		{"parameter name", func(t *Template) { t.Parameters = map[string]string{"x;y": "1"} }, "parameters"},
		{"parameter name upper", func(t *Template) { t.Parameters = map[string]string{"Work_mem": "1"} }, "parameters"},
		{"parameter value newline", func(t *Template) { t.Parameters = map[string]string{"work_mem": "1\ninclude '/x'"} }, "parameters.work_mem"},
		{"parameter value cr", func(t *Template) { t.Parameters = map[string]string{"work_mem": "1\r"} }, "parameters.work_mem"},
		{"parameter value long", func(t *Template) { t.Parameters = map[string]string{"work_mem": strings.Repeat("1", 2000)} }, "parameters.work_mem"},
		{"parameter command", func(t *Template) { t.Parameters = map[string]string{"archive_command": "sh"} }, "parameters.archive_command"},
		{"parameter include", func(t *Template) { t.Parameters = map[string]string{"include_dir": "/etc"} }, "parameters.include_dir"},
		{"selector ok", func(t *Template) {
			t.HostSelector = map[string]string{"zone": "eu-1", "example.com/disk": "nvme", "empty": ""}
		}, ""},
		{"selector key", func(t *Template) { t.HostSelector = map[string]string{"zone;x": "a"} }, "host_selector"},
		{"selector value", func(t *Template) { t.HostSelector = map[string]string{"zone": "a b"} }, "host_selector"},
		{"plan selector", func(t *Template) {
			t.Plans["s"] = Plan{CPU: 1, MemoryMB: 512, DiskGB: 1, HostSelector: map[string]string{"d": "$x"}}
		}, "plans.s.host_selector"},
		{"handlers ok", func(t *Template) {
			t.Handlers = map[string]any{"preStart": map[string]any{"command": []any{"/bin/true"}, "timeout": "10s"}}
		}, ""},
		{"handlers unknown key", func(t *Template) { t.Handlers = map[string]any{"preStart": map[string]any{"bogus": 1}} }, "handlers"},
		{"handlers unknown phase", func(t *Template) { t.Handlers = map[string]any{"always": map[string]any{"shell": "x"}} }, "handlers"},
		{"version", func(t *Template) { t.EngineVersion = "15; rm" }, "engine_version"},
		{"agent version", func(t *Template) { t.AgentVersion = "v1\n" }, "agent_version"},
		{"description control", func(t *Template) { t.Description = "x\x1b[2J" }, "description"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpl := base()
			tc.edit(&tpl)
			err := Validate(tpl)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if fieldOf(err) != tc.field || !strings.Contains(err.Error(), tc.field+": ") {
				t.Fatalf("got %v (field %q), want an error naming %s", err, fieldOf(err), tc.field)
			}
		})
	}
}

func TestPrivilegedFieldsAndStored(t *testing.T) {
	plain := base()
	plain.AllowColocation = true
	if got := PrivilegedFields(plain); len(got) != 0 {
		t.Errorf("plain template: privileged %v", got)
	}
	priv := base()
	priv.Handlers = map[string]any{"preStart": map[string]any{"shell": "id"}}
	priv.BinDir, priv.Packages, priv.Parameters = "/usr/bin", []string{"pg"}, map[string]string{"work_mem": "1MB"}
	priv.HostSelector = map[string]string{"zone": "a"}
	priv.Plans["s"] = Plan{CPU: 1, MemoryMB: 512, DiskGB: 1, HostSelector: map[string]string{"disk": "nvme"}}
	want := "handlers,bin_dir,packages,parameters,host_selector,plans.s.host_selector"
	if got := strings.Join(PrivilegedFields(priv), ","); got != want {
		t.Errorf("privileged %s, want %s", got, want)
	}
	// Stored by a tenant (no approval): refused at use; by a platform
	// admin: usable. A plain template needs no approval.
	for _, tc := range []struct {
		t          Template
		approvedBy string
		ok         bool
	}{{priv, "", false}, {priv, "tok-admin", true}, {plain, "", true}} {
		b, err := ToStored(tc.t, tc.approvedBy)
		if err != nil {
			t.Fatal(err)
		}
		_, err = FromStored(b)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrNotApproved)) {
			t.Errorf("approved by %q: %v, want ok=%t", tc.approvedBy, err, tc.ok)
		}
	}
	// A stored template that no longer validates is refused too.
	bad := base()
	bad.BinDir = "a;b"
	b, _ := ToStored(bad, "tok-admin")
	if _, err := FromStored(b); err == nil || fieldOf(err) != "bin_dir" {
		t.Errorf("stored invalid template: %v", err)
	}
}

func TestValidLabel(t *testing.T) {
	for _, tc := range []struct {
		k, v string
		ok   bool
	}{
		{"zone", "eu-1", true}, {"example.com/disk", "nvme", true}, {"a", "", true}, {"Zone_1", "A.b", true},
		{"", "x", false}, {"zone", "a b", false}, {"zone", "-a", false}, {"/x", "a", false}, {"a/b/c", "a", false},
		{"zone", "a;b", false}, {"zo ne", "a", false}, {"zone", "a\n", false}, {strings.Repeat("a", 64), "a", false},
	} {
		if err := ValidLabel(tc.k, tc.v); (err == nil) != tc.ok {
			t.Errorf("ValidLabel(%q, %q) = %v, want ok=%t", tc.k, tc.v, err, tc.ok)
		}
	}
}
