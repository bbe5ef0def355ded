package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Environment variables that supply or override credentials. The password
// variables are read once at start-up; they never appear in logs.
const (
	EnvSuperuserUser       = "DBPILOT_SUPERUSER_USERNAME"
	EnvSuperuserPassword   = "DBPILOT_SUPERUSER_PASSWORD"
	EnvReplicationUser     = "DBPILOT_REPLICATION_USERNAME"
	EnvReplicationPassword = "DBPILOT_REPLICATION_PASSWORD"
)

// Secret is a string that formats as "******" in logs, JSON and %v, so a
// password cannot leak through a log line or an error message.
type Secret string

// String redacts the value.
func (Secret) String() string { return "******" }

// GoString redacts the value for %#v.
func (Secret) GoString() string { return `"******"` }

// MarshalJSON redacts the value.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"******"`), nil }

// Reveal returns the plain value; call it only where the value is handed to
// PostgreSQL.
func (s Secret) Reveal() string { return string(s) }

// Login is one database role's name and password.
type Login struct {
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
}

// Credentials is the content of postgres.credentials_file:
//
//	superuser:   {username: postgres,   password: "…"}
//	replication: {username: replicator, password: "…"}
type Credentials struct {
	Superuser   Login `yaml:"superuser"`
	Replication Login `yaml:"replication"`
}

// checkSecretFile refuses files readable or writable by group or others.
func checkSecretFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot read %q: %v; fix the path", path, errors.Unwrap(err))
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%q has mode %04o; it holds passwords: chmod 600 it", path, st.Mode().Perm())
	}
	return nil
}

// LoadCredentials reads postgres.credentials_file (if set) and applies the
// environment overrides. Usernames default to "postgres" and "replicator".
// Errors name the file and field but never include a password.
func (c *Config) LoadCredentials() (Credentials, error) {
	var cr Credentials
	if f := c.Postgres.CredentialsFile; f != "" {
		if err := checkSecretFile(f); err != nil {
			return cr, fmt.Errorf("postgres.credentials_file: %w", err)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return cr, fmt.Errorf("postgres.credentials_file: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&cr); err != nil && !errors.Is(err, io.EOF) {
			// One line, keys named as in the file: "pasword: unknown key (line 1); …".
			msg := strings.ReplaceAll(decodeError(err).Error(), "\n", "; ")
			msg = strings.ReplaceAll(msg, "docs/agent-config.md", "docs/agent-config.md#credentials")
			return cr, fmt.Errorf("postgres.credentials_file: %q: %s", f, msg)
		}
	}
	override := func(dst *string, env string) {
		if v := os.Getenv(env); v != "" {
			*dst = v
		}
	}
	override(&cr.Superuser.Username, EnvSuperuserUser)
	override(&cr.Replication.Username, EnvReplicationUser)
	if v := os.Getenv(EnvSuperuserPassword); v != "" {
		cr.Superuser.Password = Secret(v)
	}
	if v := os.Getenv(EnvReplicationPassword); v != "" {
		cr.Replication.Password = Secret(v)
	}
	if cr.Superuser.Username == "" {
		cr.Superuser.Username = "postgres"
	}
	if cr.Replication.Username == "" {
		cr.Replication.Username = "replicator"
	}
	return cr, cr.validate()
}

// validate returns every problem of the credentials that agent/postgres
// would refuse at start-up, named by their key in postgres.credentials_file
// and never quoting a password.
func (cr Credentials) validate() error {
	var errs []error
	for _, l := range []struct {
		key, env string
		login    Login
	}{{"superuser", EnvSuperuserPassword, cr.Superuser}, {"replication", EnvReplicationPassword, cr.Replication}} {
		if u := l.login.Username; len(u) > 63 || hasControl(u) {
			errs = append(errs, fmt.Errorf("%s.username: must be 1-63 characters without control characters (got %q); PostgreSQL role names are at most 63 bytes", l.key, u))
		}
		switch p := l.login.Password.Reveal(); {
		case p == "":
			errs = append(errs, fmt.Errorf("%s.password: required; set it in postgres.credentials_file or %s", l.key, l.env))
		case hasControl(p):
			errs = append(errs, fmt.Errorf("%s.password: contains control characters (a newline?); set it on one line in postgres.credentials_file or %s", l.key, l.env))
		}
	}
	if cr.Superuser.Username == cr.Replication.Username && cr.Superuser.Password != cr.Replication.Password {
		errs = append(errs, fmt.Errorf("replication.username: %q is also superuser.username but the passwords differ; give both the same password or use another replication user", cr.Replication.Username))
	}
	return errors.Join(errs...)
}
