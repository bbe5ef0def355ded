package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/handlers"
	"github.com/dbpilot/dbpilot/proto"
)

// Field rules: every template field that reaches a shell, a path or a
// configuration file is checked for what it is.
var (
	// binDirRE: an absolute path of plain characters (no shell
	// metacharacters, spaces or quotes).
	binDirRE = regexp.MustCompile(`^/[A-Za-z0-9._+/-]*$`)
	// packageRE: a Debian package name (Debian Policy 5.6.1: lowercase
	// letters, digits, '+', '-', '.', at least two characters, starting
	// with a letter or digit), optionally pinned to a version
	// (name=version, Debian Policy 5.6.12 characters).
	packageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$`)
	// parameterRE: a PostgreSQL setting name (extension settings have a
	// dot: pg_stat_statements.max).
	parameterRE = regexp.MustCompile(`^[a-z_][a-z0-9_.]*$`)
	// labelKeyRE and labelValueRE: host label syntax (as Kubernetes
	// labels: an optional DNS prefix and "/", then a name; values plain).
	labelKeyRE   = regexp.MustCompile(`^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$`)
	// versionRE: an engine or agent version ("15", "v1.2.3", "dev").
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)
)

// reservedParameters are PostgreSQL settings a template may not set, even
// a platform admin's: the agent manages them (addresses, ports, archiving,
// recovery), they name files or run commands outside the agent's control,
// or they are configuration-file directives that read other files.
var reservedParameters = map[string]bool{
	"listen_addresses": true, "port": true, "cluster_name": true, "hot_standby": true,
	"archive_mode": true, "archive_command": true, "archive_library": true, "restore_command": true,
	"recovery_end_command": true, "archive_cleanup_command": true, "ssl_passphrase_command": true,
	"primary_conninfo": true, "primary_slot_name": true, "synchronous_standby_names": true,
	"data_directory": true, "config_file": true, "hba_file": true, "ident_file": true, "external_pid_file": true,
	"include": true, "include_dir": true, "include_if_exists": true,
	"dynamic_library_path": true, "unix_socket_directories": true,
}

// maxParameterValue bounds a parameter value, in bytes.
const maxParameterValue = 1024

// ValidLabel returns nil when key=value is a valid host label (template
// and plan host_selector, dbpilot-host --label), else an error saying
// what is wrong.
func ValidLabel(key, value string) error {
	if !labelKeyRE.MatchString(key) {
		return fmt.Errorf("label key %s: must be an optional DNS prefix and '/', then 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", proto.Quote(key, 64))
	}
	if !labelValueRE.MatchString(value) {
		return fmt.Errorf("label %s: value %s must be empty or 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", key, proto.Quote(value, 64))
	}
	return nil
}

// validateFields checks the fields that reach a shell, a path or a
// configuration file.
func validateFields(t Template, add func(f, p string)) {
	if t.EngineVersion != "" && !versionRE.MatchString(t.EngineVersion) {
		add("engine_version", fmt.Sprintf("must be a version like \"15\": letters, digits, '.', '_', '+' or '-' (got %s)", proto.Quote(t.EngineVersion, 64)))
	}
	if t.AgentVersion != "" && !versionRE.MatchString(t.AgentVersion) {
		add("agent_version", fmt.Sprintf("must be a version like \"v1.2.3\": letters, digits, '.', '_', '+' or '-' (got %s)", proto.Quote(t.AgentVersion, 64)))
	}
	if len(t.Description) > 200 || proto.HasControl(t.Description) {
		add("description", "must be one line of at most 200 characters without control characters")
	}
	if b := t.BinDir; b != "" {
		switch {
		case !binDirRE.MatchString(b):
			add("bin_dir", fmt.Sprintf("must be an absolute path of letters, digits, '.', '_', '+', '-' and '/' only, like /usr/lib/postgresql/15/bin (got %s)", proto.Quote(b, 128)))
		case filepath.Clean(b) != b:
			add("bin_dir", fmt.Sprintf("must be a clean path (no \"..\", \".\", \"//\" or trailing '/'): use %s (got %s)", filepath.Clean(b), proto.Quote(b, 128)))
		}
	}
	if len(t.Handlers) > 0 {
		validateHandlers(t.Handlers, add)
	}
	for i, p := range t.Packages {
		if !packageRE.MatchString(p) {
			add(fmt.Sprintf("packages[%d]", i), fmt.Sprintf("must be a Debian package name (lowercase letters, digits, '+', '-', '.'; at least 2 characters), optionally name=version, like postgresql-15 (got %s)", proto.Quote(p, 64)))
		}
	}
	for _, k := range sortedKeys(t.Parameters) {
		v := t.Parameters[k]
		f := "parameters." + k
		if !parameterRE.MatchString(k) {
			add("parameters", fmt.Sprintf("setting name %s must match %s, like max_connections", proto.Quote(k, 64), parameterRE))
			continue
		}
		if reservedParameters[k] {
			add(f, "is managed by dbpilot or runs commands and reads files outside its control; remove it")
		}
		if len(v) > maxParameterValue || proto.HasControl(v) {
			add(f, fmt.Sprintf("value must be at most %d bytes without newlines or other control characters", maxParameterValue))
		}
	}
	for _, k := range sortedKeys(t.HostSelector) {
		if err := ValidLabel(k, t.HostSelector[k]); err != nil {
			add("host_selector", err.Error())
		}
	}
	for _, n := range sortedKeys(t.Plans) {
		for _, k := range sortedKeys(t.Plans[n].HostSelector) {
			if err := ValidLabel(k, t.Plans[n].HostSelector[k]); err != nil {
				add("plans."+n+".host_selector", err.Error())
			}
		}
	}
	if t.Backup != nil {
		for i, j := range t.Backup.Jobs {
			if len(j.Description) > 200 || proto.HasControl(j.Description) {
				add(fmt.Sprintf("backup.jobs[%d].description", i), "must be one line of at most 200 characters without control characters")
			}
		}
	}
}

// PrivilegedFields names the fields of t that only a platform admin (admin
// on every namespace, "*") may set, because they choose what runs on the
// database hosts: handlers (commands the agent runs), bin_dir (the
// binaries it runs), packages (what a machine installs), parameters
// (free-form PostgreSQL settings, which can load libraries) and
// host_selector (template or plan: where nodes land). Empty when a tenant
// may create t.
func PrivilegedFields(t Template) []string {
	var out []string
	if len(t.Handlers) > 0 {
		out = append(out, "handlers")
	}
	if t.BinDir != "" {
		out = append(out, "bin_dir")
	}
	if len(t.Packages) > 0 {
		out = append(out, "packages")
	}
	if len(t.Parameters) > 0 {
		out = append(out, "parameters")
	}
	if len(t.HostSelector) > 0 {
		out = append(out, "host_selector")
	}
	for _, n := range sortedKeys(t.Plans) {
		if len(t.Plans[n].HostSelector) > 0 {
			out = append(out, "plans."+n+".host_selector")
		}
	}
	return out
}

// approvedKey is the member a stored namespace template carries when a
// platform admin created it (not part of the API document: a request
// holding it is refused by strict decoding).
const approvedKey = "x_dbpilot_approved_by"

// ErrNotApproved: a stored namespace template has privileged fields
// (PrivilegedFields) but was not created by a platform admin.
var ErrNotApproved = errors.New("template has platform-admin-only fields but no platform admin approved it")

// ToStored encodes t for the store; approvedBy (the platform admin's
// token id, "" for a tenant) is recorded with it.
func ToStored(t Template, approvedBy string) ([]byte, error) {
	b, err := json.Marshal(t)
	if err != nil || approvedBy == "" {
		return b, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	m[approvedKey] = approvedBy
	return json.Marshal(m)
}

// FromStored decodes a stored namespace template and checks it again as a
// new one would be: it must validate, and privileged fields need a
// platform admin's approval (a template stored before these rules, or
// written to the store by other means, is refused: ErrNotApproved or a
// validation error).
func FromStored(b []byte) (Template, error) {
	t, err := FromJSON(b)
	if err != nil {
		return Template{}, err
	}
	if err := Validate(t); err != nil {
		return Template{}, fmt.Errorf("template %s: %w", t.Name, err)
	}
	if priv := PrivilegedFields(t); len(priv) > 0 {
		var m map[string]json.RawMessage
		_ = json.Unmarshal(b, &m)
		var by string
		if raw, ok := m[approvedKey]; !ok || json.Unmarshal(raw, &by) != nil || by == "" {
			return Template{}, fmt.Errorf("template %s (%s): %w; a platform admin must re-create it", t.Name, strings.Join(priv, ", "), ErrNotApproved)
		}
	}
	return t, nil
}

// validateHandlers decodes the handlers section strictly as the agent
// does (handlers.Set) and applies the agent's checks that do not depend on
// the host (handlers.Set.ValidateSpecs): the user a handler runs as is
// resolved on the database host, where the agent defaults it to the
// PostgreSQL OS user.
func validateHandlers(h map[string]any, add func(f, p string)) {
	raw, err := yaml.Marshal(h)
	if err != nil {
		add("handlers", err.Error())
		return
	}
	var set handlers.Set
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&set); err != nil {
		add("handlers", "not an agent handlers section (docs/agent-config.md): "+err.Error())
		return
	}
	for _, err := range set.ValidateSpecs("handlers") {
		var fe *handlers.FieldError
		if errors.As(err, &fe) {
			add(fe.Path, fe.Msg)
			continue
		}
		add("handlers", err.Error())
	}
}
