package handlers

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
)

// FieldError is one configuration problem, located by its full config path,
// e.g. Path "handlers.health.timeout", Msg `must be > 0 (got "-1s")`.
type FieldError struct {
	// Path is the dotted config path of the offending field.
	Path string
	// Msg says what is wrong and, where useful, what was found.
	Msg string
}

// Error returns "path: msg".
func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// reservedEnvPrefix marks the variables the runner sets itself.
const reservedEnvPrefix = "DBPILOT_"

// Validate checks every configured handler and returns one *FieldError per
// problem, in phase order, each naming the full config path under prefix
// (normally "handlers"), e.g.
//
//	handlers.health.timeout: must be > 0 (got "-1s")
//	handlers.preStart: set exactly one of command or shell
//	handlers.onChange.interval: only valid for health; remove it
//
// It returns nil when the set is valid. Zero durations and thresholds are
// valid: they select the defaults. Join the result with errors.Join to report
// it as one error.
//
// It also checks User (path prefix.user) when a handler is configured: it
// must name an existing OS user other than root (uid 0), and may be empty
// only when the agent does not run as root.
func (s Set) Validate(prefix string) []error {
	var errs []error
	configured := false
	for _, p := range Phases() {
		if sp := s.Get(p); sp != nil {
			configured = true
			errs = append(errs, sp.validate(joinPath(prefix, string(p)), p)...)
		}
	}
	if configured || s.User != "" {
		if _, err := resolveUser(s.User); err != nil {
			errs = append(errs, &FieldError{Path: joinPath(prefix, "user"), Msg: err.Error()})
		}
	}
	return errs
}

// validate returns the problems of one spec configured for phase p at path.
func (s Spec) validate(path string, p Phase) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Path: joinPath(path, field), Msg: fmt.Sprintf(format, args...)})
	}

	hasCommand, hasShell := len(s.Command) > 0, strings.TrimSpace(s.Shell) != ""
	if hasCommand == hasShell {
		add("", "set exactly one of command or shell")
	}
	if hasCommand && strings.TrimSpace(s.Command[0]) == "" {
		add("command[0]", "must name a program (got %q)", s.Command[0])
	}
	for i, a := range s.Command {
		if strings.ContainsRune(a, 0) {
			add(fmt.Sprintf("command[%d]", i), "must not contain a NUL byte")
		}
	}
	if strings.ContainsRune(s.Shell, 0) {
		add("shell", "must not contain a NUL byte")
	}
	if s.Timeout < 0 {
		add("timeout", "must be > 0 (got %q)", s.Timeout.String())
	}
	if p == Health {
		if s.Interval < 0 {
			add("interval", "must be > 0 (got %q); omit it to use the agent's health.interval", s.Interval.String())
		}
		if s.Threshold < 0 {
			add("threshold", "must be > 0 (got %d)", s.Threshold)
		}
	} else {
		if s.Interval != 0 {
			add("interval", "only valid for health; remove it")
		}
		if s.Threshold != 0 {
			add("threshold", "only valid for health; remove it")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		switch {
		case !validEnvName(k):
			add("env."+k, "not a valid variable name (letters, digits and _, not starting with a digit)")
		case strings.HasPrefix(strings.ToUpper(k), reservedEnvPrefix):
			add("env."+k, "reserved: the agent sets %s* variables itself", reservedEnvPrefix)
		case strings.ContainsRune(s.Env[k], 0):
			add("env."+k, "must not contain a NUL byte")
		}
	}
	if s.Dir != "" && !filepath.IsAbs(s.Dir) {
		add("dir", "must be an absolute path (got %q)", s.Dir)
	}
	return errs
}

// joinPath joins config path elements with dots, skipping empty ones, so that
// a field-less problem is reported on the handler itself.
func joinPath(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	case strings.HasPrefix(field, "["):
		return prefix + field
	}
	return prefix + "." + field
}

// validEnvName reports whether name is a POSIX portable variable name:
// letters, digits and underscores, not starting with a digit.
func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, c := range name {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
