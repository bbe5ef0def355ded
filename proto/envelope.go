package proto

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// Fixed attribute values of every dbpilot event.
const (
	// SpecVersion is the only CloudEvents version this contract speaks.
	SpecVersion = "1.0"
	// DataContentType is the content type of every payload.
	DataContentType = "application/json"
	// MediaType is the HTTP Content-Type (and Dapr data content type) of a
	// structured-mode event; publishing with it keeps Dapr from wrapping the
	// event in a second envelope.
	MediaType = "application/cloudevents+json"
	// BatchMediaType is the HTTP Content-Type of a batch: a JSON array of
	// structured-mode events (CloudEvents HTTP protocol binding, "batched
	// content mode").
	BatchMediaType = "application/cloudevents-batch+json"
	// AgentSourcePrefix starts the source attribute of agent-emitted events.
	AgentSourcePrefix = "dbpilot-agent/"
)

// Envelope is a CloudEvents 1.0 structured-mode event, encoded as JSON.
//
// The extension attributes dbpilotterm and dbpilotrevision are encoded as
// JSON strings of decimal digits ("dbpilotterm":"7"): the CloudEvents Integer
// type is a signed 32-bit number, which neither a uint64 term nor an int64
// etcd revision fits, and JSON numbers above 2^53 lose precision in many
// consumers. Decoding accepts only the string form.
//
// Decoding (DecodeEnvelope, json.Unmarshal) tolerates extension attributes
// it does not know, as CloudEvents requires, so intermediaries such as Dapr
// may add topic, pubsubname, traceid, traceparent and tracestate; they are
// not kept. It rejects everything else that is not exactly this shape: a
// duplicate attribute, an attribute name that is not lowercase a-z/0-9, a
// known attribute of the wrong JSON type, data_base64, trailing data.
type Envelope struct {
	// SpecVersion is always SpecVersion ("1.0").
	SpecVersion string `json:"specversion"`
	// ID is unique per event; consumers use it as the idempotency key.
	ID string `json:"id"`
	// Source is "dbpilot-agent/{namespace}/{cluster}/{node}" (see
	// AgentSource).
	Source string `json:"source"`
	// Type is one of the Type* constants.
	Type string `json:"type"`
	// Time is when the event happened (UTC, RFC 3339 with nanoseconds on
	// the wire); it agrees with the payload's timestamp_ms.
	Time time.Time `json:"time"`
	// DataContentType is always DataContentType ("application/json").
	DataContentType string `json:"datacontenttype"`
	// Term is the cluster term the event belongs to (dbpilotterm).
	Term uint64 `json:"dbpilotterm,string"`
	// Revision is the etcd revision the event was derived from
	// (dbpilotrevision).
	Revision int64 `json:"dbpilotrevision,string"`
	// Data is the payload: the JSON object of the struct the Type names.
	Data json.RawMessage `json:"data"`
}

// AgentSource returns the source attribute of events emitted by the agent
// on node of namespace/cluster: "dbpilot-agent/{namespace}/{cluster}/{node}".
func AgentSource(namespace, cluster, node string) string {
	return AgentSourcePrefix + namespace + "/" + cluster + "/" + node
}

// NewEnvelope builds a validated event of type typ from source with payload
// data (a value of, or pointer to, the struct typ names, e.g.
// PrimaryChanged for TypePrimaryChanged).
//
// h is authoritative: it sets the envelope's term, revision and time
// (h.TimestampMS) and replaces data's embedded Header, which may be left
// zero; if data's Header is set and differs from h, NewEnvelope fails. The id
// is a fresh random (version 4) UUID. Errors: an unknown type, data of the
// wrong type, a header mismatch, and every problem Validate reports (as a
// *ValidationError).
func NewEnvelope(typ string, source string, h Header, data any) (Envelope, error) {
	spec, ok := specFor(typ)
	if !ok {
		return Envelope{}, fmt.Errorf("new %s event: unknown event type", typ)
	}
	if err := spec.checkGoType(data); err != nil {
		return Envelope{}, fmt.Errorf("new %s event: %w", typ, err)
	}
	raw, err := mergeHeader(spec, data, h)
	if err != nil {
		return Envelope{}, fmt.Errorf("new %s event: %w", typ, err)
	}
	id, err := newID()
	if err != nil {
		return Envelope{}, fmt.Errorf("new %s event: %w", typ, err)
	}
	e := Envelope{
		SpecVersion:     SpecVersion,
		ID:              id,
		Source:          source,
		Type:            typ,
		Time:            time.UnixMilli(h.TimestampMS).UTC(),
		DataContentType: DataContentType,
		Term:            h.Term,
		Revision:        h.Revision,
		Data:            raw,
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, fmt.Errorf("new %s event: %w", typ, err)
	}
	return e, nil
}

// BatchResult is the receiver's 202 answer to a batch of events
// (BatchMediaType) posted to the control plane's ingest endpoint.
type BatchResult struct {
	// Accepted counts the events stored (or recognised as duplicates).
	Accepted int `json:"accepted"`
	// Rejected lists the events refused for good, by position in the
	// batch; they are never worth a retry. Empty, not null, when none.
	Rejected []BatchRejection `json:"rejected"`
}

// BatchRejection is one refused event of a batch.
type BatchRejection struct {
	// Index is the event's position in the batch, from 0.
	Index int `json:"index"`
	// Error says why, naming the offending fields.
	Error string `json:"error"`
}

// DecodeEnvelope parses one structured-mode event strictly (see Envelope)
// and validates it. Every error it returns wraps a *ValidationError naming
// the offending fields.
func DecodeEnvelope(b []byte) (Envelope, error) {
	e, _, err := DecodeEvent(b)
	return e, err
}

// DecodeEvent is DecodeEnvelope that also returns the typed payload (as
// Payload does), decoded once for validation and use: the consumers' hot
// path. Errors as DecodeEnvelope.
func DecodeEvent(b []byte) (Envelope, any, error) {
	var e Envelope
	if err := e.UnmarshalJSON(b); err != nil {
		return Envelope{}, nil, fmt.Errorf("decode event: %w", err)
	}
	payload, err := e.validate()
	if err != nil {
		return Envelope{}, nil, fmt.Errorf("decode event %s: %w", e.ID, err)
	}
	return e, payload, nil
}

// Before reports whether e is positioned strictly before o in the ordering
// consumers apply: by term, then by etcd revision. A consumer holding o drops
// e when e.Before(o). Events at the same position are not stale; duplicates
// are recognised by ID, not by position.
func (e Envelope) Before(o Envelope) bool {
	if e.Term != o.Term {
		return e.Term < o.Term
	}
	return e.Revision < o.Revision
}

// Payload decodes Data strictly into the struct Type names and returns it as
// a value (PrimaryChanged, MemberState, ...), for a type switch. It does not
// run the envelope-level checks of Validate. Errors wrap *ValidationError.
func (e Envelope) Payload() (any, error) {
	spec, ok := specFor(e.Type)
	if !ok {
		return nil, &ValidationError{Problems: []FieldError{{Field: "type", Problem: fmt.Sprintf("unknown event type %q", e.Type)}}}
	}
	p, problems := decodePayload(spec, e.Data)
	if len(problems) > 0 {
		return nil, &ValidationError{Problems: problems}
	}
	return p.value(), nil
}

// UnmarshalJSON parses b strictly into e without validating the result (see
// Envelope for what strict means; DecodeEnvelope also validates). Errors are
// *ValidationError.
func (e *Envelope) UnmarshalJSON(b []byte) error {
	fields, err := objectFields(b)
	if err != nil {
		return &ValidationError{Problems: []FieldError{{Field: "event", Problem: err.Error()}}}
	}
	var out Envelope
	var problems []FieldError
	for _, f := range fields {
		if p := out.setAttribute(f.name, f.raw); p != "" {
			problems = append(problems, FieldError{Field: f.name, Problem: p})
		}
	}
	if len(problems) > 0 {
		return &ValidationError{Problems: problems}
	}
	*e = out
	return nil
}

// setAttribute decodes one top-level attribute into e and returns a problem
// description, or "" when the attribute is fine.
func (e *Envelope) setAttribute(name string, raw json.RawMessage) string {
	var err error
	switch name {
	case "specversion":
		e.SpecVersion, err = jsonString(raw)
	case "id":
		e.ID, err = jsonString(raw)
	case "source":
		e.Source, err = jsonString(raw)
	case "type":
		e.Type, err = jsonString(raw)
	case "datacontenttype":
		e.DataContentType, err = jsonString(raw)
	case "time":
		e.Time, err = jsonTime(raw)
	case "dbpilotterm":
		e.Term, err = jsonUint(raw)
	case "dbpilotrevision":
		e.Revision, err = jsonInt(raw)
	case "data":
		e.Data = append(json.RawMessage(nil), raw...)
	case "data_base64":
		return "not supported: data must be a JSON object in data"
	default:
		if !isAttributeName(name) {
			return "not a CloudEvents attribute name (lowercase a-z and 0-9 only)"
		}
		// An extension attribute added on the way (Dapr: topic, traceid, ...).
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// newID returns a random version 4 UUID in its canonical text form.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate event id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// mergeHeader encodes data as the spec's payload with its header set from
// h. data's own header must be zero or equal to h.
func mergeHeader(spec typeSpec, data any, h Header) (json.RawMessage, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encode data: %w", err)
	}
	p := spec.newPayload()
	if err := json.Unmarshal(raw, p); err != nil {
		return nil, fmt.Errorf("encode data: %w", err)
	}
	if got := p.head(); got != (Header{}) && got != h {
		return nil, fmt.Errorf("data header %+v differs from header %+v", got, h)
	}
	p.setHead(h)
	out, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode data: %w", err)
	}
	return out, nil
}

// isAttributeName reports whether s is a valid CloudEvents attribute name.
func isAttributeName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// field is one member of a JSON object, in document order.
type field struct {
	name string
	raw  json.RawMessage
}

// objectFields splits b, which must hold exactly one JSON object, into its
// members (values copied out of b). Duplicate names, invalid UTF-8 and
// trailing data are errors. The tokenizer is jsontext from
// github.com/go-json-experiment/json (the basis of Go's encoding/json/v2),
// which rejects duplicate member names itself.
func objectFields(b []byte) ([]field, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(b))
	tok, err := dec.ReadToken()
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if tok.Kind() != '{' {
		return nil, fmt.Errorf("must be a JSON object")
	}
	fields := make([]field, 0, 10)
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return nil, jsonProblem(err)
		}
		name := tok.String()
		val, err := dec.ReadValue()
		if err != nil {
			return nil, jsonProblem(err)
		}
		fields = append(fields, field{name: name, raw: json.RawMessage(val.Clone())})
	}
	if _, err := dec.ReadToken(); err != nil { // the closing '}'
		return nil, jsonProblem(err)
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the object")
	}
	return fields, nil
}

// jsonProblem words a tokenizer error for a FieldError.
func jsonProblem(err error) error {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) && errors.Is(se.Err, jsontext.ErrDuplicateName) {
		return fmt.Errorf("duplicate member %q", strings.TrimPrefix(string(se.JSONPointer), "/"))
	}
	return fmt.Errorf("not JSON: %w", err)
}

func jsonString(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("must be a JSON string")
	}
	b, err := jsontext.AppendUnquote(nil, raw)
	if err != nil {
		return "", fmt.Errorf("must be a JSON string: %w", err)
	}
	return string(b), nil
}

func jsonTime(raw json.RawMessage) (time.Time, error) {
	s, err := jsonString(raw)
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("must be an RFC 3339 timestamp (got %q)", s)
	}
	return t, nil
}

// jsonUint decodes a uint64 written as a JSON string of decimal digits.
func jsonUint(raw json.RawMessage) (uint64, error) {
	s, err := jsonString(raw)
	if err != nil {
		return 0, fmt.Errorf("must be a JSON string of decimal digits (a CloudEvents Integer is only 32-bit)")
	}
	if !isDigits(s) {
		return 0, fmt.Errorf("must be a string of decimal digits (got %q)", s)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("out of range for uint64 (got %q)", s)
	}
	return v, nil
}

// jsonInt decodes a non-negative int64 written as a JSON string of decimal
// digits.
func jsonInt(raw json.RawMessage) (int64, error) {
	s, err := jsonString(raw)
	if err != nil {
		return 0, fmt.Errorf("must be a JSON string of decimal digits (a CloudEvents Integer is only 32-bit)")
	}
	if !isDigits(s) {
		return 0, fmt.Errorf("must be a string of decimal digits (got %q)", s)
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("out of range for int64 (got %q)", s)
	}
	return v, nil
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}
