package postgres

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// defaultParameters are the postgresql.conf settings [Config.Parameters] may
// override. They keep PostgreSQL small (shared_buffers, max_connections),
// make every node a valid primary or standby (wal_level, max_wal_senders,
// max_replication_slots, wal_keep_size), bound the WAL the agent's
// replication slots may retain (max_slot_wal_keep_size, see [SlotName]),
// make pg_rewind possible (wal_log_hints; data checksums also suffice),
// keep a standby's retries of its upstream short (wal_retrieve_retry_interval,
// below), and send the server log to stderr, which Start redirects to
// Config.LogFile.
//
// wal_retrieve_retry_interval is 500 ms instead of PostgreSQL's 5 s: a
// promotion that the startup process notices while it waits on a stream
// from a lost primary is treated as a failed source and sleeps out the
// rest of that interval before ending recovery (seen here as a 5 s stall
// of a failover, PostgreSQL 15, xlogrecovery.c WaitForWALToBecomeAvailable),
// and a replica re-pointed at a new primary retries on the same period. The
// cost is a connection attempt (and a log line) every 500 ms while a
// standby's upstream is down.
func defaultParameters() map[string]string {
	return map[string]string{
		"unix_socket_directories":     "", // TCP only: the packaged default dir may not exist or be writable
		"wal_level":                   "replica",
		"max_wal_senders":             "10",
		"max_replication_slots":       "10",
		"wal_keep_size":               "512MB",
		"max_slot_wal_keep_size":      "1GB",
		"wal_log_hints":               "on",
		"hot_standby_feedback":        "on",
		"wal_retrieve_retry_interval": "500ms",
		"shared_buffers":              "32MB",
		"max_connections":             "50",
		"password_encryption":         "scram-sha-256",
		"logging_collector":           "off",
		"log_destination":             "stderr",
		"log_line_prefix":             "%m [%p] %q%u@%d ",
		"lc_messages":                 "C",
		"timezone":                    "UTC",
		"log_timezone":                "UTC",
		"datestyle":                   "iso, mdy",
		"default_text_search_config":  "pg_catalog.english",
	}
}

// addPreload appends libs to the shared_preload_libraries entry of params
// (whatever the letter case of its name), skipping those it already lists.
func addPreload(params map[string]string, libs []string) {
	if len(libs) == 0 {
		return
	}
	key := "shared_preload_libraries"
	for k := range params {
		if strings.EqualFold(k, key) {
			key = k
		}
	}
	var list []string
	have := map[string]bool{}
	for _, l := range strings.Split(params[key], ",") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		list = append(list, l)
		have[strings.ToLower(strings.Trim(l, `"`))] = true
	}
	for _, l := range libs {
		if !have[strings.ToLower(l)] {
			list = append(list, l)
			have[strings.ToLower(l)] = true
		}
	}
	params[key] = strings.Join(list, ",")
}

// LibraryInstalled reports whether the server library name (e.g.
// "pg_stat_statements") is installed for the binaries in binDir: a file
// name.so in the package library directory, which is binDir's sibling lib
// in the Debian (/usr/lib/postgresql/15/{bin,lib}), PGDG RPM
// (/usr/pgsql-15/{bin,lib}) and source (/usr/local/pgsql/{bin,lib})
// layouts.
func LibraryInstalled(binDir, name string) bool {
	st, err := os.Stat(filepath.Join(filepath.Dir(filepath.Clean(binDir)), "lib", name+".so"))
	return err == nil && st.Mode().IsRegular()
}

// quoteConf quotes a value as a postgresql.conf string: single quotes, with
// embedded quotes doubled and backslashes escaped (the configuration file
// parser processes backslash escapes).
func quoteConf(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(v) + "'"
}

// quoteConninfo quotes a libpq keyword/value connection-string value
// (https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING).
func quoteConninfo(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// quoteLiteral quotes an SQL string literal as an escape string (E'...'),
// which is correct whatever standard_conforming_strings is set to.
func quoteLiteral(v string) string {
	return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(v) + "'"
}

// SynchronousStandbyNames returns the synchronous_standby_names value for a
// quorum of one among names: `ANY 1 ("n2","n3")` with each name a quoted
// identifier, or "" (asynchronous replication) for no names. See
// https://www.postgresql.org/docs/15/runtime-config-replication.html#GUC-SYNCHRONOUS-STANDBY-NAMES.
func SynchronousStandbyNames(names []string) string {
	if len(names) == 0 {
		return ""
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = `"` + strings.ReplaceAll(n, `"`, `""`) + `"`
	}
	return "ANY 1 (" + strings.Join(quoted, ",") + ")"
}

// primaryConninfo is the replica's primary_conninfo for up.
func (c Config) primaryConninfo(up Upstream) string {
	return strings.Join([]string{
		"host=" + quoteConninfo(up.Host),
		"port=" + strconv.Itoa(up.Port),
		"user=" + quoteConninfo(c.Replication.Username),
		"password=" + quoteConninfo(c.Replication.Password),
		"application_name=" + quoteConninfo(c.NodeName),
	}, " ")
}

// renderPostgresqlConf renders the complete postgresql.conf. conninfo is the
// replica's primary_conninfo ("" renders none: a standby without upstream).
// synchronous_standby_names is rendered for both roles: a standby ignores it,
// and a promoted standby applies it from its first commit.
func renderPostgresqlConf(c Config, role Role, conninfo string, syncNames []string, recovery map[string]string) string {
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(v)) }
	b.WriteString("# Managed by dbpilot: rendered before every start, on Follow and on\n" +
		"# SetSynchronousStandbys. Edits are overwritten; ALTER SYSTEM is not supported.\n\n")
	line("listen_addresses", c.ListenAddress)
	line("port", strconv.Itoa(c.Port))
	line("cluster_name", c.NodeName)
	line("hot_standby", "on")

	b.WriteString("\n# defaults and Config.Parameters\n")
	params := defaultParameters()
	for k, v := range c.Parameters {
		params[k] = v
	}
	addPreload(params, c.PreloadLibraries)
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		line(k, params[k])
	}

	if c.ArchiveCommand != "" {
		b.WriteString("\n# continuous WAL archiving (dbpilot backups)\n")
		line("archive_mode", "on")
		line("archive_command", c.ArchiveCommand)
	}
	if c.RestoreCommand != "" && recovery == nil {
		line("restore_command", c.RestoreCommand)
	}
	if len(recovery) > 0 {
		b.WriteString("\n# targeted recovery (restore from backup)\n")
		keys := make([]string, 0, len(recovery))
		for k := range recovery {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			line(k, recovery[k])
		}
	}

	fmt.Fprintf(&b, "\n# role: %s\n", role)
	line("synchronous_standby_names", SynchronousStandbyNames(syncNames))
	if role == RoleReplica {
		if conninfo != "" {
			line("primary_conninfo", conninfo)
			line("primary_slot_name", SlotName(c.NodeName))
		}
		line("recovery_target_timeline", "latest")
	}
	return b.String()
}

// renderHBA renders pg_hba.conf: password (scram-sha-256) authentication for
// everything, loopback first, then Config.HBA, then catch-all rules that
// production deployments should narrow with Config.HBA. The Unix socket is
// disabled by default; if enabled it also requires a password (trust would
// make every local OS user a superuser).
func renderHBA(c Config) string {
	var b strings.Builder
	b.WriteString("# Managed by dbpilot: rendered before every start. Edits are overwritten.\n" +
		"# TYPE  DATABASE     USER  ADDRESS       METHOD\n" +
		"local   all          all                 scram-sha-256\n")
	rule := func(db, addr string) { fmt.Fprintf(&b, "host    %-12s all   %-13s scram-sha-256\n", db, addr) }
	for _, addr := range []string{"127.0.0.1/32", "::1/128"} {
		rule("all", addr)
		rule("replication", addr)
	}
	if len(c.HBA) > 0 {
		b.WriteString("# Config.HBA\n")
		for _, l := range c.HBA {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("# catch-all: narrow with Config.HBA in production\n")
	for _, addr := range []string{"0.0.0.0/0", "::/0"} {
		rule("all", addr)
		rule("replication", addr)
	}
	return b.String()
}

// renderLocked writes postgresql.conf, pg_hba.conf and an empty
// postgresql.auto.conf into the data directory. The caller holds p.mu.
func (p *Instance) renderLocked(role Role, conninfo string, syncNames []string) error {
	dir := p.cfg.DataDir
	files := []struct {
		name, content string
	}{
		{"postgresql.conf", renderPostgresqlConf(p.cfg, role, conninfo, syncNames, p.recovery)},
		{"pg_hba.conf", renderHBA(p.cfg)},
		{"postgresql.auto.conf", "# Reset by dbpilot: ALTER SYSTEM is not supported, use Config.Parameters.\n"},
	}
	for _, f := range files {
		if err := p.writeFileAtomic(filepath.Join(dir, f.name), []byte(f.content), 0o600); err != nil {
			return fmt.Errorf("render config: %w", err)
		}
	}
	return nil
}

// writeSignalFiles creates standby.signal for a replica and removes it for
// a primary; recovery.signal is written only while StartRecovery runs a
// targeted recovery, and removed otherwise. See https://www.postgresql.org/docs/15/warm-standby.html.
func (p *Instance) writeSignalFiles(role Role) error {
	standby := filepath.Join(p.cfg.DataDir, "standby.signal")
	if p.recovery != nil {
		if err := removeIfExists(standby); err != nil {
			return err
		}
		return p.writeFileAtomic(filepath.Join(p.cfg.DataDir, "recovery.signal"), nil, 0o600)
	}
	if err := removeIfExists(filepath.Join(p.cfg.DataDir, "recovery.signal")); err != nil {
		return err
	}
	if role != RoleReplica {
		return removeIfExists(standby)
	}
	return p.writeFileAtomic(standby, nil, 0o600)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
