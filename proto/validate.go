package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// FieldError is one problem with one field of an event. Field is the
// CloudEvents attribute name ("dbpilotterm") or "data." followed by the
// payload's JSON key ("data.primary").
type FieldError struct {
	Field   string
	Problem string
}

// Error returns "field: problem".
func (f FieldError) Error() string { return f.Field + ": " + f.Problem }

// ValidationError lists every problem found in an event, in field order.
// Everything Validate, DecodeEnvelope and Envelope.Payload reject is
// reported as a *ValidationError (possibly wrapped): a consumer can tell a
// malformed event (never retry it) from a failure of its own with
// errors.As.
type ValidationError struct {
	Problems []FieldError
}

// Error returns "invalid event: " and the problems separated by "; ".
func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Error()
	}
	return "invalid event: " + strings.Join(parts, "; ")
}

// Fields returns the names of the offending fields, in order.
func (e *ValidationError) Fields() []string {
	out := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p.Field
	}
	return out
}

// Validate checks e against the contract and returns a *ValidationError
// listing every problem, or nil. It rejects a specversion other than "1.0";
// a missing id, source, type or time; an unknown type; a datacontenttype
// other than "application/json"; data that is not a JSON object decoding
// into the type's struct with no unknown (or differently cased) keys; a
// payload header that disagrees with the envelope (term, revision, time,
// source); a zero term for a type that requires one; and payload fields out
// of their documented ranges.
func (e Envelope) Validate() error {
	_, err := e.validate()
	return err
}

// validate is Validate that also returns the typed payload it decoded (nil
// when the type is unknown or the data does not decode).
func (e Envelope) validate() (any, error) {
	var v validator
	var payload any
	switch e.SpecVersion {
	case SpecVersion:
	case "":
		v.add("specversion", "required")
	default:
		v.addf("specversion", "must be %q (got %q)", SpecVersion, e.SpecVersion)
	}
	if e.ID == "" {
		v.add("id", "required")
	}
	if e.Source == "" {
		v.add("source", "required")
	}
	spec, known := specFor(e.Type)
	switch {
	case e.Type == "":
		v.add("type", "required")
	case !known:
		v.addf("type", "unknown event type %q", e.Type)
	}
	if e.Time.IsZero() {
		v.add("time", "required")
	}
	if e.DataContentType != DataContentType {
		v.addf("datacontenttype", "must be %q (got %q)", DataContentType, e.DataContentType)
	}
	if e.Revision < 0 {
		v.addf("dbpilotrevision", "must be >= 0 (got %d)", e.Revision)
	}
	if known {
		if spec.termRequired && e.Term == 0 {
			v.addf("dbpilotterm", "must be > 0 for %s", e.Type)
		}
		p, problems := decodePayload(spec, e.Data)
		v.problems = append(v.problems, problems...)
		if p != nil {
			v.checkHeader(e, p.head())
			p.check(&v)
			payload = p.value()
		}
	}
	if len(v.problems) == 0 {
		return payload, nil
	}
	return nil, &ValidationError{Problems: v.problems}
}

// validator collects problems.
type validator struct {
	problems []FieldError
}

func (v *validator) add(field, problem string) {
	v.problems = append(v.problems, FieldError{Field: field, Problem: problem})
}

func (v *validator) addf(field, format string, args ...any) {
	v.add(field, fmt.Sprintf(format, args...))
}

func (v *validator) required(field, value string) {
	if value == "" {
		v.add(field, "required")
	}
}

// name checks a namespace, project, cluster or node name against
// NamePattern (an empty value is left to required).
func (v *validator) name(field, value string) {
	if value != "" && !ValidName(value) {
		v.addf(field, "must be 1-40 lowercase letters, digits or '-', starting and ending with a letter or digit (got %s)", Quote(value, 64))
	}
}

// requiredName is required and name.
func (v *validator) requiredName(field, value string) {
	v.required(field, value)
	v.name(field, value)
}

func (v *validator) oneOf(field, value string, allowed ...string) {
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	v.addf(field, "must be one of %s (got %q)", strings.Join(allowed, ", "), value)
}

func (v *validator) nonNegative(field string, value int64) {
	if value < 0 {
		v.addf(field, "must be >= 0 (got %d)", value)
	}
}

func (v *validator) lsn(field, value string) {
	if value != "" && !isLSN(value) {
		v.addf(field, "must be a PostgreSQL LSN like \"16/B374D848\" (got %q)", value)
	}
}

// checkHeader checks the fields every payload carries and their agreement
// with the envelope.
func (v *validator) checkHeader(e Envelope, h Header) {
	for _, f := range []struct{ name, value string }{
		{"data.namespace", h.Namespace},
		{"data.cluster", h.Cluster},
		{"data.node", h.Node},
	} {
		switch {
		case f.value == "":
			v.add(f.name, "required")
		default:
			v.name(f.name, f.value)
		}
	}
	if h.Project != "" {
		v.name("data.project", h.Project)
	}
	if h.Namespace != "" && h.Cluster != "" && h.Node != "" && e.Source != "" {
		if want := AgentSource(h.Namespace, h.Cluster, h.Node); e.Source != want {
			v.addf("source", "must be %q for this payload (got %q)", want, e.Source)
		}
	}
	if h.Term != e.Term {
		v.addf("data.term", "%d disagrees with dbpilotterm %d", h.Term, e.Term)
	}
	if h.Revision != e.Revision {
		v.addf("data.revision", "%d disagrees with dbpilotrevision %d", h.Revision, e.Revision)
	}
	switch {
	case h.TimestampMS <= 0:
		v.addf("data.timestamp_ms", "must be > 0 (got %d)", h.TimestampMS)
	case !e.Time.IsZero() && e.Time.UnixMilli() != h.TimestampMS:
		v.addf("time", "%s disagrees with data.timestamp_ms %d", e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), h.TimestampMS)
	}
}

// payload is implemented by pointers to the payload structs.
type payload interface {
	head() Header
	setHead(h Header)
	check(v *validator)
	value() any
}

func (h Header) head() Header { return h }

func (h *Header) setHead(x Header) { *h = x }

func (p *PrimaryChanged) value() any { return *p }
func (p *PrimaryChanged) check(v *validator) {
	v.requiredName("data.primary", p.Primary)
	v.oneOf("data.reason", p.Reason, ReasonBootstrap, ReasonFailover, ReasonSwitchover)
	v.lsn("data.lsn", p.LSN)
	v.nonNegative("data.duration_ms", p.DurationMS)
}

func (p *MemberState) value() any { return *p }
func (p *MemberState) check(v *validator) {
	v.oneOf("data.role", p.Role, RolePrimary, RoleReplica, RoleUnknown)
	v.oneOf("data.state", p.State, StateRunning, StateStarting, StateStopped, StateFenced, StateUnhealthy)
	v.lsn("data.lsn", p.LSN)
	if p.LagBytes < -1 {
		v.addf("data.lag_bytes", "must be >= 0, or -1 for unknown (got %d)", p.LagBytes)
	}
}

func (p *MemberSummary) value() any { return *p }
func (p *MemberSummary) check(v *validator) {
	if p.IntervalMS < 1000 {
		v.addf("data.interval_ms", "must be >= 1000 (got %d)", p.IntervalMS)
	}
	v.oneOf("data.role", p.Role, RolePrimary, RoleReplica, RoleUnknown)
	v.oneOf("data.state", p.State, StateRunning, StateStarting, StateStopped, StateFenced, StateUnhealthy)
	if p.LagBytes < -1 {
		v.addf("data.lag_bytes", "must be >= 0, or -1 for unknown (got %d)", p.LagBytes)
	}
	for i, f := range p.Filesystems {
		field := fmt.Sprintf("data.filesystems[%d]", i)
		v.oneOf(field+".kind", f.Kind, FilesystemData, FilesystemWAL)
		if f.SizeBytes <= 0 || f.UsedBytes < 0 || f.UsedPct < 0 || f.UsedPct > 100 {
			v.addf(field, "size_bytes must be > 0, used_bytes >= 0 and used_pct within 0-100 (got %d, %d, %g)", f.SizeBytes, f.UsedBytes, f.UsedPct)
		}
	}
	for i, b := range p.Backups {
		v.required(fmt.Sprintf("data.backups[%d].job", i), b.Job)
	}
}

func (p *Fenced) value() any { return *p }
func (p *Fenced) check(v *validator) {
	v.required("data.reason", p.Reason)
}

func (p *FailoverStarted) value() any { return *p }
func (p *FailoverStarted) check(v *validator) {
	v.requiredName("data.failed_primary", p.FailedPrimary)
	v.requiredName("data.candidate", p.Candidate)
	v.required("data.reason", p.Reason)
}

func (p *SwitchoverCompleted) value() any { return *p }
func (p *SwitchoverCompleted) check(v *validator) {
	v.requiredName("data.from", p.From)
	v.requiredName("data.to", p.To)
	if p.From != "" && p.From == p.To {
		v.addf("data.to", "must differ from data.from (both %q)", p.To)
	}
	v.nonNegative("data.duration_ms", p.DurationMS)
}

func (p *HandlerResult) value() any { return *p }
func (p *HandlerResult) check(v *validator) {
	v.required("data.handler", p.Handler)
	v.oneOf("data.status", p.Status, HandlerFailed, HandlerTimedOut, HandlerStartFailed, HandlerCanceled)
	v.nonNegative("data.duration_ms", p.DurationMS)
}

func (p *Failsafe) value() any { return *p }
func (p *Failsafe) check(v *validator) {
	v.oneOf("data.state", p.State, FailsafeActive, FailsafeReclaimed, FailsafeEnded)
	v.nonNegative("data.members", int64(p.Members))
}

// typeSpec describes one event type.
type typeSpec struct {
	// termRequired: the event only exists at a term >= 1.
	termRequired bool
	newPayload   func() payload
}

// specFor returns the spec of event type typ.
func specFor(typ string) (typeSpec, bool) {
	switch typ {
	case TypePrimaryChanged:
		return typeSpec{termRequired: true, newPayload: func() payload { return new(PrimaryChanged) }}, true
	case TypeMemberState:
		return typeSpec{termRequired: false, newPayload: func() payload { return new(MemberState) }}, true
	case TypeFenced:
		return typeSpec{termRequired: true, newPayload: func() payload { return new(Fenced) }}, true
	case TypeFailoverStarted:
		return typeSpec{termRequired: true, newPayload: func() payload { return new(FailoverStarted) }}, true
	case TypeSwitchover:
		return typeSpec{termRequired: true, newPayload: func() payload { return new(SwitchoverCompleted) }}, true
	case TypeHandlerResult:
		return typeSpec{termRequired: false, newPayload: func() payload { return new(HandlerResult) }}, true
	case TypeFailsafe:
		return typeSpec{termRequired: true, newPayload: func() payload { return new(Failsafe) }}, true
	case TypeBackupStarted:
		return typeSpec{newPayload: func() payload { return new(BackupStarted) }}, true
	case TypeBackupCompleted:
		return typeSpec{newPayload: func() payload { return new(BackupCompleted) }}, true
	case TypeBackupFailed:
		return typeSpec{newPayload: func() payload { return new(BackupFailed) }}, true
	case TypeBackupVerified:
		return typeSpec{newPayload: func() payload { return new(BackupVerified) }}, true
	case TypeMemberSummary:
		return typeSpec{newPayload: func() payload { return new(MemberSummary) }}, true
	}
	return typeSpec{}, false
}

// checkGoType rejects data that is not (a non-nil pointer to) the struct the
// spec's type names.
func (s typeSpec) checkGoType(data any) error {
	want := reflect.TypeOf(s.newPayload()).Elem()
	rv := reflect.ValueOf(data)
	if !rv.IsValid() {
		return errors.New("data is nil")
	}
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return errors.New("data is a nil pointer")
		}
		rv = rv.Elem()
	}
	if rv.Type() != want {
		return fmt.Errorf("data is %T, want proto.%s", data, want.Name())
	}
	return nil
}

// decodePayload strictly decodes raw into the spec's payload struct.
func decodePayload(spec typeSpec, raw json.RawMessage) (payload, []FieldError) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, []FieldError{{Field: "data", Problem: "required"}}
	}
	p := spec.newPayload()
	// One strict pass (github.com/go-json-experiment/json, the basis of
	// encoding/json/v2): member names match exactly (no case folding),
	// duplicates and unknown members are errors.
	if t := bytes.TrimSpace(raw); t[0] != '{' {
		return nil, []FieldError{{Field: "data", Problem: "must be a JSON object"}}
	}
	if err := jsonv2.Unmarshal(raw, p, jsonv2.RejectUnknownMembers(true)); err != nil {
		if errors.Is(err, jsonv2.ErrUnknownName) {
			// The error path only: name every unknown member, not just
			// the first.
			if problems := unknownMembers(raw, reflect.TypeOf(p).Elem()); len(problems) > 0 {
				return nil, problems
			}
		}
		return nil, []FieldError{payloadProblem(err)}
	}
	return p, nil
}

// unknownMembers lists the members of the JSON object raw that struct type
// t does not have.
func unknownMembers(raw []byte, t reflect.Type) []FieldError {
	fields, err := objectFields(raw)
	if err != nil {
		return nil
	}
	keys := jsonKeys(t)
	var problems []FieldError
	for _, f := range fields {
		if !keys[f.name] {
			problems = append(problems, FieldError{Field: "data." + f.name, Problem: "unknown field"})
		}
	}
	return problems
}

// payloadProblem names the payload field a decoding error is about.
func payloadProblem(err error) FieldError {
	var se *jsonv2.SemanticError
	if errors.As(err, &se) {
		field := "data" + strings.ReplaceAll(string(se.JSONPointer), "/", ".")
		switch {
		case errors.Is(se.Err, jsonv2.ErrUnknownName):
			return FieldError{Field: field, Problem: "unknown field"}
		case se.GoType != nil && se.JSONKind != 0:
			return FieldError{Field: field, Problem: fmt.Sprintf("must be a JSON %s (got %s)", jsonKindOf(se.GoType), se.JSONKind)}
		case se.GoType != nil:
			return FieldError{Field: field, Problem: fmt.Sprintf("must be a JSON %s", jsonKindOf(se.GoType))}
		}
		return FieldError{Field: field, Problem: se.Error()}
	}
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) {
		field := "data" + strings.ReplaceAll(string(syn.JSONPointer), "/", ".")
		if errors.Is(syn.Err, jsontext.ErrDuplicateName) {
			return FieldError{Field: field, Problem: "duplicate member"}
		}
		return FieldError{Field: "data", Problem: "not JSON: " + syn.Error()}
	}
	return FieldError{Field: "data", Problem: err.Error()}
}

// jsonKindOf words the JSON kind a Go type decodes from.
func jsonKindOf(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "number (" + t.String() + ")"
	case reflect.Slice, reflect.Array:
		return "array"
	default:
		return "object"
	}
}

// jsonKeys returns the JSON member names of struct type t, with embedded
// structs inlined as encoding/json does.
func jsonKeys(t reflect.Type) map[string]bool {
	keys := make(map[string]bool)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
			for k := range jsonKeys(f.Type) {
				keys[k] = true
			}
			continue
		}
		if !f.IsExported() || tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		keys[name] = true
	}
	return keys
}

// isLSN reports whether s looks like a PostgreSQL LSN: two hexadecimal
// numbers separated by "/".
func isLSN(s string) bool {
	hi, lo, ok := strings.Cut(s, "/")
	return ok && isHex(hi) && isHex(lo) && len(hi) <= 8 && len(lo) <= 8
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}
