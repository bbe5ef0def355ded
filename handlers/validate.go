package handlers

import (
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
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
	errs := s.ValidateSpecs(prefix)
	userChecked := slices.ContainsFunc(errs, func(err error) bool {
		fe, ok := err.(*FieldError)
		return ok && fe.Path == joinPath(prefix, "user")
	})
	if !userChecked && (s.configured() || s.User != "") {
		if _, err := resolveUser(s.User); err != nil {
			errs = append(errs, &FieldError{Path: joinPath(prefix, "user"), Msg: err.Error()})
		}
	}
	return errs
}

// ValidateSpecs checks what does not depend on the host the agent runs on:
// every configured handler, and a handlers.user that names an account by
// a plausible name and not root. Validate adds the host-dependent checks
// (the user exists here; a user is required when the agent runs as root).
// The control plane validates templates with it. Errors are *FieldError
// under prefix.
func (s Set) ValidateSpecs(prefix string) []error {
	var errs []error
	for _, p := range Phases() {
		if sp := s.Get(p); sp != nil {
			errs = append(errs, sp.validate(joinPath(prefix, string(p)), p)...)
		}
	}
	switch u := s.User; {
	case u == "root" || u == "0":
		errs = append(errs, &FieldError{Path: joinPath(prefix, "user"), Msg: fmt.Sprintf("handlers never run as root (got %q); name an unprivileged OS user such as postgres", u)})
	case u != "" && !userNamePattern.MatchString(u):
		errs = append(errs, &FieldError{Path: joinPath(prefix, "user"), Msg: fmt.Sprintf("must name an unprivileged OS user, e.g. postgres (got %q)", u)})
	}
	return errs
}

// userNamePattern is the portable user-name syntax of useradd(8) (or a uid).
var userNamePattern = regexp.MustCompile(`^([a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})$`)

func (s Set) configured() bool {
	for _, p := range Phases() {
		if s.Get(p) != nil {
			return true
		}
	}
	return false
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
