package postgres

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Credentials is a PostgreSQL role name and its password. String redacts the
// password so a Credentials value can be printed or logged safely.
type Credentials struct {
	Username string
	Password string
}

// String returns the username and a redacted password.
func (c Credentials) String() string { return c.Username + ":<redacted>" }

// Config configures one local PostgreSQL instance. All paths must be
// absolute.
type Config struct {
	// NodeName identifies this node. It becomes cluster_name and, on a
	// replica, the application_name in primary_conninfo, which is the name
	// the primary's synchronous_standby_names and pg_stat_replication use.
	// 1-63 characters of [A-Za-z0-9_.-], starting with a letter or digit.
	NodeName string
	// BinDir holds initdb, postgres, pg_basebackup, pg_rewind and
	// pg_controldata, e.g. /usr/lib/postgresql/15/bin.
	BinDir string
	// DataDir is the data directory (PGDATA). Created with mode 0700 and
	// owned by OSUser by Initdb and BaseBackup.
	DataDir string
	// ListenAddress is rendered as listen_addresses, e.g. "127.0.0.1". The
	// agent itself connects to this address ("*", "0.0.0.0" and "" connect
	// to 127.0.0.1, "::" to ::1, a list to its first entry).
	ListenAddress string
	// Port is the TCP port (1-65535).
	Port int
	// OSUser is the operating-system user PostgreSQL runs as when the agent
	// runs as root (required then, and must not be root). Ignored, with a
	// warning if it differs, when the agent is not root.
	OSUser string
	// Parameters are extra postgresql.conf settings. They override the
	// defaults (shared_buffers=32MB, max_connections=50, wal_keep_size=512MB,
	// ...) but may not set parameters the agent manages: listen_addresses,
	// port, cluster_name, hot_standby, primary_conninfo, primary_slot_name,
	// recovery_target_timeline, synchronous_standby_names, data_directory,
	// config_file, hba_file, ident_file or include directives. Names are
	// case-insensitive; values are written as quoted strings.
	Parameters map[string]string
	// Superuser is the superuser created by initdb and used by the agent for
	// all SQL and as pg_rewind's source user.
	Superuser Credentials
	// Replication is the role replicas stream with (created by Bootstrap).
	// It may equal Superuser (then Bootstrap has nothing to do).
	Replication Credentials
	// LogFile receives the postmaster's stdout and stderr (the server log,
	// appended). Created owned by OSUser. Default: <parent of DataDir>/postgres.log.
	LogFile string
	// HBA lines are inserted verbatim into pg_hba.conf after the loopback
	// rules and before the catch-all "0.0.0.0/0" and "::/0" scram-sha-256
	// rules, so they can narrow or reject non-loopback access (pg_hba.conf
	// is first-match). Production deployments should use them to restrict
	// the catch-all.
	HBA []string
	// InitdbArgs are extra initdb arguments appended after the ones Initdb
	// sets, e.g. "--no-sync" in tests or "--wal-segsize=64".
	InitdbArgs []string
	// ArchiveCommand, when set, turns on continuous WAL archiving:
	// archive_mode = on and archive_command = ArchiveCommand (%p and %f as
	// PostgreSQL documents). Only a primary archives.
	ArchiveCommand string
	// RestoreCommand, when set, is rendered as restore_command, so a replica
	// that falls behind wal_keep_size can fetch archived WAL.
	RestoreCommand string
	// PreloadLibraries are added to shared_preload_libraries after the
	// libraries Parameters lists there (each once, in this order), e.g.
	// "pg_stat_statements". A change takes effect at the next start.
	// Check a library is installed first ([LibraryInstalled]): PostgreSQL
	// does not start with a missing one.
	PreloadLibraries []string
}

// Upstream identifies the primary a replica streams from.
type Upstream struct {
	// Host is the primary's host name or address.
	Host string
	// Port is the primary's TCP port.
	Port int
	// Name is the leader's node name (for logs).
	Name string
}

// Role is the replication role an instance is started in.
type Role string

// Roles accepted by [Instance.Start].
const (
	// RolePrimary starts a read-write server (no standby.signal).
	RolePrimary Role = "primary"
	// RoleReplica starts a hot standby streaming from an [Upstream].
	RoleReplica Role = "replica"
)

// StopMode is a PostgreSQL shutdown mode; see
// https://www.postgresql.org/docs/15/server-shutdown.html.
type StopMode string

// Shutdown modes accepted by [Instance.Stop].
const (
	// StopSmart (SIGTERM) waits for all clients to disconnect.
	StopSmart StopMode = "smart"
	// StopFast (SIGINT) disconnects clients, checkpoints and exits cleanly.
	StopFast StopMode = "fast"
	// StopImmediate (SIGQUIT) exits without a checkpoint; the next start
	// performs crash recovery.
	StopImmediate StopMode = "immediate"
)

func (m StopMode) signal() (syscall.Signal, error) {
	switch m {
	case StopSmart:
		return syscall.SIGTERM, nil
	case StopFast:
		return syscall.SIGINT, nil
	case StopImmediate:
		return syscall.SIGQUIT, nil
	}
	return 0, fmt.Errorf("unknown stop mode %q (want smart, fast or immediate)", string(m))
}

// validName reports whether s is usable as a node name: it ends up as
// application_name (at most NAMEDATALEN-1 = 63 bytes) and inside quoted
// identifiers in synchronous_standby_names.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case (c == '_' || c == '.' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// validParamName reports whether s looks like a GUC name (lower case,
// optionally "prefix.name" for extensions).
func validParamName(s string) bool {
	if s == "" {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if part == "" || '0' <= part[0] && part[0] <= '9' {
			return false
		}
		for _, c := range part {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
				return false
			}
		}
	}
	return strings.Count(s, ".") <= 1
}

// managedParameter reports whether the agent sets the parameter itself.
func managedParameter(name string) bool {
	switch name {
	case "listen_addresses", "port", "cluster_name", "hot_standby",
		"primary_conninfo", "primary_slot_name", "recovery_target_timeline",
		"synchronous_standby_names", "data_directory", "config_file",
		"archive_mode", "archive_command", "restore_command",
		"hba_file", "ident_file", "include", "include_if_exists", "include_dir":
		return true
	}
	return false
}

// ParameterProblem is one entry of [Config.Parameters] that [New] refuses.
type ParameterProblem struct {
	// Name is the parameter's name as given (any letter case).
	Name string
	// Managed is true when the agent renders the parameter itself, so it
	// may not be set at all.
	Managed bool
	// Msg says what is wrong, e.g. "is managed by the agent and cannot be set".
	Msg string
}

// CheckParameters returns every entry of params that [Config.Parameters]
// may not hold, sorted by name, so a configuration loader can report them
// with its own paths before [New] would refuse them. Names are compared
// case-insensitively: a name that is not a valid parameter name, a
// parameter the agent manages (listen_addresses, port, cluster_name,
// hot_standby, primary_conninfo, primary_slot_name,
// recovery_target_timeline, synchronous_standby_names, data_directory,
// config_file, hba_file, ident_file, include directives, archive_mode,
// archive_command, restore_command), a value with control characters,
// wal_level = minimal, max_replication_slots = 0, and two names that
// differ only in letter case.
func CheckParameters(params map[string]string) []ParameterProblem {
	var out []ParameterProblem
	seen := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		v := params[k]
		name := strings.ToLower(k)
		bad := func(managed bool, format string, args ...any) {
			out = append(out, ParameterProblem{Name: k, Managed: managed, Msg: fmt.Sprintf(format, args...)})
		}
		switch {
		case !validParamName(name):
			bad(false, "not a valid parameter name; use lowercase letters, digits and _, with at most one '.' (extension.name)")
		case managedParameter(name):
			bad(true, "is managed by the agent and cannot be set")
		case hasControl(v):
			bad(false, "value contains control characters; write it on one line")
		case name == "wal_level" && strings.EqualFold(v, "minimal"):
			bad(false, "must be replica or logical for replication (got %q)", v)
		case name == "max_replication_slots" && strings.TrimSpace(v) == "0":
			bad(false, "must be at least 1: replicas stream through replication slots (got %q)", v)
		}
		if prev, dup := seen[name]; dup {
			bad(false, "duplicates %q (names are case-insensitive); keep one of them", prev)
		}
		seen[name] = k
	}
	return out
}

// hasControl reports whether s contains a control character (newline, NUL,
// ...), which would break the rendered files.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// validate checks the configuration and returns all problems joined, each
// prefixed with the field name.
func (c Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !validName(c.NodeName) {
		bad("NodeName", "must be 1-63 characters of [A-Za-z0-9_.-] starting with a letter or digit (got %q)", c.NodeName)
	}
	switch {
	case !filepath.IsAbs(c.BinDir):
		bad("BinDir", "must be an absolute path (got %q)", c.BinDir)
	default:
		if st, err := os.Stat(filepath.Join(c.BinDir, "postgres")); err != nil || st.IsDir() {
			bad("BinDir", "no postgres executable in %q", c.BinDir)
		}
	}
	if !filepath.IsAbs(c.DataDir) || filepath.Clean(c.DataDir) == "/" {
		bad("DataDir", "must be an absolute path other than / (got %q)", c.DataDir)
	}
	if strings.TrimSpace(c.ListenAddress) == "" || hasControl(c.ListenAddress) || strings.ContainsAny(c.ListenAddress, `'"\`) {
		bad("ListenAddress", "must be a non-empty address list without quotes (got %q)", c.ListenAddress)
	}
	if c.Port < 1 || c.Port > 65535 {
		bad("Port", "must be in 1-65535 (got %d)", c.Port)
	}
	if c.OSUser != "" && hasControl(c.OSUser) {
		bad("OSUser", "contains control characters")
	}
	for field, cr := range map[string]Credentials{"Superuser": c.Superuser, "Replication": c.Replication} {
		if cr.Username == "" || len(cr.Username) > 63 || hasControl(cr.Username) {
			bad(field+".Username", "must be 1-63 characters without control characters (got %q)", cr.Username)
		}
		if cr.Password == "" || hasControl(cr.Password) {
			bad(field+".Password", "must be non-empty and free of control characters")
		}
	}
	if c.Superuser.Username == c.Replication.Username && c.Superuser.Password != c.Replication.Password {
		bad("Replication", "same username as Superuser but a different password")
	}
	for _, p := range CheckParameters(c.Parameters) {
		bad("Parameters."+p.Name, "%s", p.Msg)
	}
	if c.LogFile != "" && !filepath.IsAbs(c.LogFile) {
		bad("LogFile", "must be an absolute path (got %q)", c.LogFile)
	}
	if hasControl(c.ArchiveCommand) || hasControl(c.RestoreCommand) {
		bad("ArchiveCommand", "archive and restore commands must not contain control characters")
	}
	for i, line := range c.HBA {
		if hasControl(line) {
			bad(fmt.Sprintf("HBA[%d]", i), "contains control characters (one rule per entry)")
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns a copy with defaults filled in and maps/slices copied,
// so later changes by the caller do not affect the Instance.
func (c Config) withDefaults() Config {
	c.DataDir = filepath.Clean(c.DataDir)
	c.BinDir = filepath.Clean(c.BinDir)
	if c.LogFile == "" {
		c.LogFile = filepath.Join(filepath.Dir(c.DataDir), "postgres.log")
	}
	params := make(map[string]string, len(c.Parameters))
	for k, v := range c.Parameters {
		params[strings.ToLower(k)] = v
	}
	c.Parameters = params
	c.HBA = append([]string(nil), c.HBA...)
	c.InitdbArgs = append([]string(nil), c.InitdbArgs...)
	return c
}

// connectHost is the address the agent uses to reach its own server.
func (c Config) connectHost() string {
	first, _, _ := strings.Cut(c.ListenAddress, ",")
	first = strings.TrimSpace(first)
	switch first {
	case "", "*", "0.0.0.0", "localhost":
		return "127.0.0.1"
	case "::":
		return "::1"
	}
	return first
}
