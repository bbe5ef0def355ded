package handlers

import (
	"maps"
	"slices"
	"time"
)

// Phase names one lifecycle hook. Its value is the hook's YAML key.
type Phase string

// The five lifecycle hooks, in the order the agent's life goes through them.
const (
	// PreStart runs before the agent starts the database.
	PreStart Phase = "preStart"
	// Health runs periodically; see [Runner.CheckHealth].
	Health Phase = "health"
	// OnChange runs after every role or leader change the node observes; see
	// [Runner.NotifyChange].
	OnChange Phase = "onChange"
	// PreStop runs before the agent stops the database.
	PreStop Phase = "preStop"
	// PostStop runs after the database has stopped.
	PostStop Phase = "postStop"
)

// Phases returns the five phases in lifecycle order. The slice is new on every
// call.
func Phases() []Phase {
	return []Phase{PreStart, Health, OnChange, PreStop, PostStop}
}

// Valid reports whether p is one of the five phases.
func (p Phase) Valid() bool {
	return slices.Contains(Phases(), p)
}

// String returns the phase's YAML key, e.g. "preStart".
func (p Phase) String() string { return string(p) }

// Defaults applied to a [Spec] whose field is zero.
const (
	// DefaultTimeout bounds a run of every phase except health.
	DefaultTimeout = 30 * time.Second
	// DefaultHealthTimeout bounds a health run.
	DefaultHealthTimeout = 5 * time.Second
	// DefaultThreshold is how many consecutive failed health runs make the
	// node unhealthy.
	DefaultThreshold = 3
)

// ShellPath is the shell that runs [Spec.Shell] scripts, as ShellPath -c script.
const ShellPath = "/bin/sh"

// Spec is one handler's YAML config. Exactly one of Command (argv, run without
// a shell) or Shell (a script run via /bin/sh -c) is set.
type Spec struct {
	// Command is the argv to execute; Command[0] is looked up in PATH when it
	// contains no slash.
	Command []string `yaml:"command,omitempty"`
	// Shell is a script passed to /bin/sh -c.
	Shell string `yaml:"shell,omitempty"`
	// Timeout bounds one run (YAML: a Go duration such as "10s"). Zero means
	// DefaultTimeout, or DefaultHealthTimeout for health.
	Timeout time.Duration `yaml:"timeout,omitempty"`
	// Interval is the time between health runs; health only. Zero means the
	// agent's health.interval.
	Interval time.Duration `yaml:"interval,omitempty"`
	// Threshold is the number of consecutive failed health runs before the
	// node counts as unhealthy; health only. Zero means DefaultThreshold.
	Threshold int `yaml:"threshold,omitempty"`
	// Env adds variables to the handler's environment, overriding the agent's
	// own. Names starting with DBPILOT_ are reserved.
	Env map[string]string `yaml:"env,omitempty"`
	// Dir is the absolute working directory of the handler; empty means the
	// agent's working directory.
	Dir string `yaml:"dir,omitempty"`
}

// Clone returns a deep copy of s (Command and Env are not shared).
func (s Spec) Clone() Spec {
	s.Command = slices.Clone(s.Command)
	s.Env = maps.Clone(s.Env)
	return s
}

// withDefaults returns a deep copy of s with Timeout and Threshold filled in
// for phase p. Interval stays zero when unset: only the agent knows its
// health.interval.
func (s Spec) withDefaults(p Phase) Spec {
	s = s.Clone()
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
		if p == Health {
			s.Timeout = DefaultHealthTimeout
		}
	}
	if p == Health && s.Threshold <= 0 {
		s.Threshold = DefaultThreshold
	}
	return s
}

// argv returns the program and arguments to execute for phase p.
func (s Spec) argv(p Phase) []string {
	if len(s.Command) > 0 {
		return s.Command
	}
	// The trailing argument becomes $0, so the shell's own error messages
	// name the handler ("dbpilot-health: 1: foo: not found").
	return []string{ShellPath, "-c", s.Shell, "dbpilot-" + string(p)}
}

// Set holds the five handlers and the OS user they run as. A nil field means
// the hook is not configured; running it yields [StatusSkipped].
type Set struct {
	// User is the OS user (name, or numeric uid) every handler runs as:
	// its uid, primary gid and supplementary groups, with HOME, USER and
	// LOGNAME set to its own. Empty means the agent's own user, which is
	// refused when the agent runs as root (the agent's config defaults it
	// to postgres.os_user then). root and uid 0 are always refused:
	// handlers never run as root. Switching to another user needs the
	// agent to run as root.
	User     string `yaml:"user,omitempty"`
	PreStart *Spec  `yaml:"preStart,omitempty"`
	Health   *Spec  `yaml:"health,omitempty"`
	OnChange *Spec  `yaml:"onChange,omitempty"`
	PreStop  *Spec  `yaml:"preStop,omitempty"`
	PostStop *Spec  `yaml:"postStop,omitempty"`
}

// Get returns the spec configured for p, nil when p is not configured or not a
// valid phase. The returned pointer is the one stored in s, not a copy.
func (s Set) Get(p Phase) *Spec {
	switch p {
	case PreStart:
		return s.PreStart
	case Health:
		return s.Health
	case OnChange:
		return s.OnChange
	case PreStop:
		return s.PreStop
	case PostStop:
		return s.PostStop
	}
	return nil
}

// Clone returns a deep copy of s: no Spec, Command or Env is shared.
func (s Set) Clone() Set {
	c := func(sp *Spec) *Spec {
		if sp == nil {
			return nil
		}
		cp := sp.Clone()
		return &cp
	}
	return Set{
		User:     s.User,
		PreStart: c(s.PreStart),
		Health:   c(s.Health),
		OnChange: c(s.OnChange),
		PreStop:  c(s.PreStop),
		PostStop: c(s.PostStop),
	}
}
