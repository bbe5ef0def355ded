package handlers

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestSetValidate(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		set    Set
		want   []string
	}{
		{name: "empty set", set: Set{}},
		{
			name: "all valid",
			set: Set{
				PreStart: &Spec{Command: []string{"/usr/local/bin/prestart", "--fast"}, Timeout: time.Minute, Dir: "/var/lib/dbpilot"},
				Health:   &Spec{Shell: "pg_isready -q", Timeout: 2 * time.Second, Interval: 5 * time.Second, Threshold: 4},
				OnChange: &Spec{Shell: "notify.sh", Env: map[string]string{"WEBHOOK_URL": "https://x", "_A1": ""}},
				PreStop:  &Spec{Command: []string{"true"}},
				PostStop: &Spec{Shell: "true"},
			},
		},
		{
			name: "neither command nor shell",
			set:  Set{PreStart: &Spec{}},
			want: []string{"handlers.preStart: set exactly one of command or shell"},
		},
		{
			name: "both command and shell",
			set:  Set{PreStop: &Spec{Command: []string{"true"}, Shell: "true"}},
			want: []string{"handlers.preStop: set exactly one of command or shell"},
		},
		{
			name: "blank shell counts as unset",
			set:  Set{PostStop: &Spec{Shell: "  \n"}},
			want: []string{"handlers.postStop: set exactly one of command or shell"},
		},
		{
			name: "empty program",
			set:  Set{PreStop: &Spec{Command: []string{"", "arg"}}},
			want: []string{`handlers.preStop.command[0]: must name a program (got "")`},
		},
		{
			name: "NUL bytes",
			set:  Set{PreStop: &Spec{Command: []string{"true", "a\x00b"}}, PostStop: &Spec{Shell: "true\x00"}},
			want: []string{
				"handlers.preStop.command[1]: must not contain a NUL byte",
				"handlers.postStop.shell: must not contain a NUL byte",
			},
		},
		{
			name: "negative timeout",
			set:  Set{Health: &Spec{Shell: "true", Timeout: -time.Second}},
			want: []string{`handlers.health.timeout: must be > 0 (got "-1s")`},
		},
		{
			name: "interval and threshold outside health",
			set:  Set{OnChange: &Spec{Shell: "true", Interval: time.Second}, PostStop: &Spec{Shell: "true", Threshold: 2}},
			want: []string{
				"handlers.onChange.interval: only valid for health; remove it",
				"handlers.postStop.threshold: only valid for health; remove it",
			},
		},
		{
			name: "negative health interval and threshold",
			set:  Set{Health: &Spec{Shell: "true", Interval: -5 * time.Second, Threshold: -1}},
			want: []string{
				`handlers.health.interval: must be > 0 (got "-5s"); omit it to use the agent's health.interval`,
				"handlers.health.threshold: must be > 0 (got -1)",
			},
		},
		{
			name: "env names",
			set: Set{PreStart: &Spec{Shell: "true", Env: map[string]string{
				"1BAD": "x", "A-B": "x", "DBPILOT_ROLE": "x", "dbpilot_term": "x", "OK": "a\x00b", "": "x",
			}}},
			want: []string{
				"handlers.preStart.env.: not a valid variable name (letters, digits and _, not starting with a digit)",
				"handlers.preStart.env.1BAD: not a valid variable name (letters, digits and _, not starting with a digit)",
				"handlers.preStart.env.A-B: not a valid variable name (letters, digits and _, not starting with a digit)",
				"handlers.preStart.env.DBPILOT_ROLE: reserved: the agent sets DBPILOT_* variables itself",
				"handlers.preStart.env.OK: must not contain a NUL byte",
				"handlers.preStart.env.dbpilot_term: reserved: the agent sets DBPILOT_* variables itself",
			},
		},
		{
			name: "relative dir",
			set:  Set{OnChange: &Spec{Shell: "true", Dir: "hooks"}},
			want: []string{`handlers.onChange.dir: must be an absolute path (got "hooks")`},
		},
		{
			name:   "several problems, phase order, custom prefix",
			prefix: "agent.handlers",
			set: Set{
				PostStop: &Spec{},
				PreStart: &Spec{Shell: "true", Timeout: -time.Millisecond, Interval: time.Second},
			},
			want: []string{
				`agent.handlers.preStart.timeout: must be > 0 (got "-1ms")`,
				"agent.handlers.preStart.interval: only valid for health; remove it",
				"agent.handlers.postStop: set exactly one of command or shell",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := tt.prefix
			if prefix == "" {
				prefix = "handlers"
			}
			if tt.set.User == "" {
				tt.set.User = testUser(t)
			}
			errs := tt.set.Validate(prefix)
			var got []string
			for _, err := range errs {
				got = append(got, err.Error())
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Path == "" {
					t.Errorf("%v is not a *FieldError with a path", err)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Validate(%q) =\n  %q\nwant\n  %q", prefix, got, tt.want)
			}
		})
	}
}

func TestSetYAML(t *testing.T) {
	const doc = `
preStart:
  command: ["/usr/local/bin/prestart", "--fast"]
  timeout: 10s
health:
  shell: pg_isready -q
  timeout: 2s
  interval: 5s
  threshold: 4
  env:
    PGPORT: "5432"
onChange:
  shell: ./notify.sh
  dir: /opt/hooks
`
	var set Set
	dec := yaml.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.KnownFields(true)
	if err := dec.Decode(&set); err != nil {
		t.Fatal(err)
	}
	want := Set{
		PreStart: &Spec{Command: []string{"/usr/local/bin/prestart", "--fast"}, Timeout: 10 * time.Second},
		Health:   &Spec{Shell: "pg_isready -q", Timeout: 2 * time.Second, Interval: 5 * time.Second, Threshold: 4, Env: map[string]string{"PGPORT": "5432"}},
		OnChange: &Spec{Shell: "./notify.sh", Dir: "/opt/hooks"},
	}
	if !reflect.DeepEqual(set, want) {
		t.Errorf("decoded %+v\nwant %+v", set, want)
	}
	set.User = testUser(t)
	if errs := set.Validate("handlers"); errs != nil {
		t.Errorf("Validate = %v, want nil", errs)
	}

	dec = yaml.NewDecoder(bytes.NewReader([]byte("health:\n  shell: x\n  timout: 1s\n")))
	dec.KnownFields(true)
	if err := dec.Decode(&Set{}); err == nil {
		t.Error("a misspelt field decoded without error under KnownFields")
	}
}

func TestPhases(t *testing.T) {
	for _, p := range Phases() {
		if !p.Valid() || p.String() != string(p) {
			t.Errorf("phase %q invalid", p)
		}
	}
	if Phase("health ").Valid() || Phase("").Valid() {
		t.Error("invalid phase reported valid")
	}
}

// TestSetValidateUser: root, uid 0 and unknown users are refused on
// handlers.user, and so is an empty user when the agent runs as root.
func TestSetValidateUser(t *testing.T) {
	set := Set{Health: &Spec{Shell: "true"}}
	for _, tc := range []struct{ user, want string }{
		{"root", "handlers never run as root"},
		{"0", "handlers never run as root"},
		{"dbpilot-no-such-user", `no OS user "dbpilot-no-such-user"`},
	} {
		set.User = tc.user
		errs := set.Validate("handlers")
		if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "handlers.user: ") || !strings.Contains(errs[0].Error(), tc.want) {
			t.Errorf("user %q: Validate = %v, want one handlers.user error containing %q", tc.user, errs, tc.want)
		}
	}
	set.User = ""
	errs := set.Validate("handlers")
	if root := os.Geteuid() == 0; root != (len(errs) == 1) {
		t.Errorf("empty user, running as root=%v: Validate = %v", root, errs)
	}
	if errs := (Set{}).Validate("handlers"); errs != nil {
		t.Errorf("no handlers: Validate = %v, want nil (no user needed)", errs)
	}
}
