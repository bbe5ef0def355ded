package proto

import (
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const testTS = int64(1696494655123) // 2023-10-05T08:30:55.123Z

func testHeader(term uint64) Header {
	return Header{
		ClusterRef:  ClusterRef{Namespace: "production", Project: "bluebird", Cluster: "mybillingapp"},
		Node:        "db-node-2",
		Term:        term,
		TimestampMS: testTS,
		Revision:    42,
	}
}

func testSource() string { return AgentSource("production", "mybillingapp", "db-node-2") }

// samples returns one valid payload per event type.
func samples() map[string]any {
	return map[string]any{
		TypePrimaryChanged: PrimaryChanged{Primary: "db-node-2", PreviousPrimary: "db-node-1", Reason: ReasonFailover, Timeline: 3, LSN: "0/3000148", DurationMS: 8200},
		TypeMemberState:    MemberState{Role: RoleReplica, State: StateRunning, Healthy: true, LSN: "16/B374D848", LagBytes: 1024, Timeline: 2},
		TypeFenced:         Fenced{Reason: "lease renewal failed past the fencing deadline", LeaseLeftMS: 1500},
		TypeFailoverStarted: FailoverStarted{
			FailedPrimary: "db-node-1", Candidate: "db-node-2", Reason: "leader key expired",
		},
		TypeSwitchover:    SwitchoverCompleted{From: "db-node-1", To: "db-node-2", DurationMS: 2100},
		TypeHandlerResult: HandlerResult{Handler: "health", Status: HandlerTimedOut, ExitCode: -1, DurationMS: 5000},
		TypeMemberSummary: MemberSummary{IntervalMS: 10000, Role: RolePrimary, State: StateRunning, Healthy: true, Writable: true,
			SyncStandbys: []string{"db-node-1"},
			Filesystems:  []FilesystemUsage{{Kind: FilesystemData, Path: "/var/lib/postgresql/15/main", SizeBytes: 100 << 30, UsedBytes: 40 << 30, UsedPct: 40}},
			Backups:      []BackupJobStatus{{Job: "nightly", Schedule: "0 2 * * *"}}},
	}
}

func mustEnvelope(t *testing.T, typ string, term uint64) Envelope {
	t.Helper()
	e, err := NewEnvelope(typ, testSource(), testHeader(term), samples()[typ])
	if err != nil {
		t.Fatalf("NewEnvelope(%s): %v", typ, err)
	}
	return e
}

// asMap returns the wire form of e as a generic JSON object.
func asMap(t *testing.T, e Envelope) map[string]any {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return m
}

func dataOf(m map[string]any) map[string]any { return m["data"].(map[string]any) }

func TestDecodeEnvelope(t *testing.T) {
	type mutate func(m map[string]any)
	tests := []struct {
		name  string
		typ   string
		term  uint64
		edit  mutate
		raw   func(b []byte) []byte // applied after edit, on the encoded bytes
		wantF []string              // fields the error must name; nil = valid
	}{
		{name: "valid primary_changed", typ: TypePrimaryChanged, term: 7},
		{name: "valid member state", typ: TypeMemberState, term: 7},
		{name: "valid member state at term 0", typ: TypeMemberState, term: 0},
		{name: "valid fenced", typ: TypeFenced, term: 7},
		{name: "valid failover_started", typ: TypeFailoverStarted, term: 7},
		{name: "valid switchover", typ: TypeSwitchover, term: 7},
		{name: "valid handler result at term 0", typ: TypeHandlerResult, term: 0},
		{name: "valid with Dapr's extension attributes", typ: TypePrimaryChanged, term: 7, edit: func(m map[string]any) {
			m["topic"], m["pubsubname"], m["traceid"], m["traceparent"], m["tracestate"] = "dbpilot-events", "pubsub", "00-abc-01", "00-abc-01", ""
		}},
		{name: "valid bootstrap without previous primary", typ: TypePrimaryChanged, term: 1, edit: func(m map[string]any) {
			d := dataOf(m)
			d["reason"] = ReasonBootstrap
			delete(d, "previous_primary")
		}},

		{name: "missing id", typ: TypeFenced, term: 7, edit: func(m map[string]any) { delete(m, "id") }, wantF: []string{"id"}},
		{name: "empty id", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["id"] = "" }, wantF: []string{"id"}},
		{name: "id not a string", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["id"] = 12 }, wantF: []string{"id"}},
		{name: "missing type", typ: TypeFenced, term: 7, edit: func(m map[string]any) { delete(m, "type") }, wantF: []string{"type"}},
		{name: "unknown type", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["type"] = "io.dbpilot.member.fenced.v9" }, wantF: []string{"type"}},
		{name: "missing source", typ: TypeFenced, term: 7, edit: func(m map[string]any) { delete(m, "source") }, wantF: []string{"source"}},
		{name: "source of another node", typ: TypeFenced, term: 7, edit: func(m map[string]any) {
			m["source"] = AgentSource("production", "mybillingapp", "db-node-1")
		}, wantF: []string{"source"}},
		{name: "missing specversion", typ: TypeFenced, term: 7, edit: func(m map[string]any) { delete(m, "specversion") }, wantF: []string{"specversion"}},
		{name: "specversion 0.3", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["specversion"] = "0.3" }, wantF: []string{"specversion"}},
		{name: "datacontenttype text/plain", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["datacontenttype"] = "text/plain" }, wantF: []string{"datacontenttype"}},
		{name: "missing time", typ: TypeFenced, term: 7, edit: func(m map[string]any) { delete(m, "time") }, wantF: []string{"time"}},
		{name: "time not RFC 3339", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["time"] = "Thu Oct 5 08:30:55 2023" }, wantF: []string{"time"}},
		{name: "time disagrees with timestamp_ms", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["time"] = "2023-10-05T08:31:55.123Z" }, wantF: []string{"time"}},
		{name: "term as a JSON number", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["dbpilotterm"] = 7 }, wantF: []string{"dbpilotterm"}},
		{name: "term not decimal", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["dbpilotterm"] = "-7" }, wantF: []string{"dbpilotterm"}},
		{name: "term overflows uint64", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["dbpilotterm"] = "18446744073709551616" }, wantF: []string{"dbpilotterm"}},
		{name: "zero term where required", typ: TypePrimaryChanged, term: 7, edit: func(m map[string]any) {
			m["dbpilotterm"] = "0"
			dataOf(m)["term"] = 0
		}, wantF: []string{"dbpilotterm"}},
		{name: "missing term where required", typ: TypeSwitchover, term: 7, edit: func(m map[string]any) {
			delete(m, "dbpilotterm")
			dataOf(m)["term"] = 0
		}, wantF: []string{"dbpilotterm"}},
		{name: "revision not decimal", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["dbpilotrevision"] = "4e2" }, wantF: []string{"dbpilotrevision"}},
		{name: "data term disagrees", typ: TypeFenced, term: 7, edit: func(m map[string]any) { dataOf(m)["term"] = 6 }, wantF: []string{"data.term"}},
		{name: "data revision disagrees", typ: TypeFenced, term: 7, edit: func(m map[string]any) { dataOf(m)["revision"] = 41 }, wantF: []string{"data.revision"}},
		{name: "data missing", typ: TypeFenced, term: 7, edit: func(m map[string]any) { delete(m, "data") }, wantF: []string{"data"}},
		{name: "data null", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["data"] = nil }, wantF: []string{"data"}},
		{name: "data an array", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["data"] = []any{1} }, wantF: []string{"data"}},
		{name: "data_base64", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["data_base64"] = "e30=" }, wantF: []string{"data_base64"}},
		{name: "data unknown field", typ: TypeFenced, term: 7, edit: func(m map[string]any) { dataOf(m)["lease_left_s"] = 1 }, wantF: []string{"data.lease_left_s"}},
		{name: "data field in another case", typ: TypePrimaryChanged, term: 7, edit: func(m map[string]any) {
			d := dataOf(m)
			d["Primary"] = d["primary"]
			delete(d, "primary")
		}, wantF: []string{"data.Primary"}},
		{name: "data field of the wrong type", typ: TypePrimaryChanged, term: 7, edit: func(m map[string]any) { dataOf(m)["timeline"] = "3" }, wantF: []string{"data.timeline"}},
		{name: "data of another type", typ: TypePrimaryChanged, term: 7, edit: func(m map[string]any) { m["type"] = TypeSwitchover }, wantF: []string{"data.primary"}},
		{name: "missing namespace", typ: TypeFenced, term: 7, edit: func(m map[string]any) { delete(dataOf(m), "namespace") }, wantF: []string{"data.namespace"}},
		{name: "node with a slash", typ: TypeFenced, term: 7, edit: func(m map[string]any) { dataOf(m)["node"] = "a/b" }, wantF: []string{"data.node"}},
		{name: "missing timestamp_ms", typ: TypeFenced, term: 7, edit: func(m map[string]any) { delete(dataOf(m), "timestamp_ms") }, wantF: []string{"data.timestamp_ms"}},
		{name: "missing primary", typ: TypePrimaryChanged, term: 7, edit: func(m map[string]any) { delete(dataOf(m), "primary") }, wantF: []string{"data.primary"}},
		{name: "unknown reason", typ: TypePrimaryChanged, term: 7, edit: func(m map[string]any) { dataOf(m)["reason"] = "magic" }, wantF: []string{"data.reason"}},
		{name: "bad lsn", typ: TypePrimaryChanged, term: 7, edit: func(m map[string]any) { dataOf(m)["lsn"] = "3000148" }, wantF: []string{"data.lsn"}},
		{name: "negative duration", typ: TypePrimaryChanged, term: 7, edit: func(m map[string]any) { dataOf(m)["duration_ms"] = -1 }, wantF: []string{"data.duration_ms"}},
		{name: "unknown role", typ: TypeMemberState, term: 7, edit: func(m map[string]any) { dataOf(m)["role"] = "leader" }, wantF: []string{"data.role"}},
		{name: "unknown state", typ: TypeMemberState, term: 7, edit: func(m map[string]any) { dataOf(m)["state"] = "zombie" }, wantF: []string{"data.state"}},
		{name: "lag below -1", typ: TypeMemberState, term: 7, edit: func(m map[string]any) { dataOf(m)["lag_bytes"] = -2 }, wantF: []string{"data.lag_bytes"}},
		{name: "summary interval too short", typ: TypeMemberSummary, term: 7, edit: func(m map[string]any) { dataOf(m)["interval_ms"] = 10 }, wantF: []string{"data.interval_ms"}},
		{name: "summary filesystem above 100 %", typ: TypeMemberSummary, term: 0, edit: func(m map[string]any) {
			dataOf(m)["filesystems"].([]any)[0].(map[string]any)["used_pct"] = 140
		}, wantF: []string{"data.filesystems[0]"}},
		{name: "summary backup without job", typ: TypeMemberSummary, term: 7, edit: func(m map[string]any) {
			dataOf(m)["backups"].([]any)[0].(map[string]any)["job"] = ""
		}, wantF: []string{"data.backups[0].job"}},
		{name: "fenced without reason", typ: TypeFenced, term: 7, edit: func(m map[string]any) { delete(dataOf(m), "reason") }, wantF: []string{"data.reason"}},
		{name: "failover without candidate", typ: TypeFailoverStarted, term: 7, edit: func(m map[string]any) { delete(dataOf(m), "candidate") }, wantF: []string{"data.candidate"}},
		{name: "switchover to itself", typ: TypeSwitchover, term: 7, edit: func(m map[string]any) { dataOf(m)["to"] = "db-node-1" }, wantF: []string{"data.to"}},
		{name: "handler status ok", typ: TypeHandlerResult, term: 7, edit: func(m map[string]any) { dataOf(m)["status"] = "ok" }, wantF: []string{"data.status"}},
		{name: "attribute name not lowercase", typ: TypeFenced, term: 7, edit: func(m map[string]any) { m["Term"] = "7" }, wantF: []string{"Term"}},
		{name: "several problems at once", typ: TypeFenced, term: 7, edit: func(m map[string]any) {
			delete(m, "id")
			m["specversion"] = "2.0"
			dataOf(m)["term"] = 1
		}, wantF: []string{"specversion", "id", "data.term"}},

		{name: "duplicate attribute", typ: TypeFenced, term: 7, raw: func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"id":`, `"id":"dup","id":`, 1))
		}, wantF: []string{"event"}},
		{name: "trailing data", typ: TypeFenced, term: 7, raw: func(b []byte) []byte { return append(b, []byte(` {}`)...) }, wantF: []string{"event"}},
		{name: "not JSON", typ: TypeFenced, term: 7, raw: func([]byte) []byte { return []byte(`specversion=1.0`) }, wantF: []string{"event"}},
		{name: "a JSON array", typ: TypeFenced, term: 7, raw: func([]byte) []byte { return []byte(`[]`) }, wantF: []string{"event"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := asMap(t, mustEnvelope(t, tc.typ, tc.term))
			if tc.edit != nil {
				tc.edit(m)
			}
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			if tc.raw != nil {
				b = tc.raw(b)
			}
			e, err := DecodeEnvelope(b)
			if tc.wantF == nil {
				if err != nil {
					t.Fatalf("DecodeEnvelope: %v\n%s", err, b)
				}
				if e.Type != tc.typ || e.Term != tc.term {
					t.Fatalf("decoded type %q term %d, want %q %d", e.Type, e.Term, tc.typ, tc.term)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("DecodeEnvelope error = %v, want a *ValidationError naming %v\n%s", err, tc.wantF, b)
			}
			for _, f := range tc.wantF {
				if !slices.Contains(ve.Fields(), f) {
					t.Errorf("error names %v, want it to name %q: %v", ve.Fields(), f, err)
				}
				if !strings.Contains(err.Error(), f+": ") {
					t.Errorf("error text %q does not name %q", err, f)
				}
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	for typ, data := range samples() {
		t.Run(typ, func(t *testing.T) {
			e := mustEnvelope(t, typ, 7)
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			got, err := DecodeEnvelope(b)
			if err != nil {
				t.Fatalf("DecodeEnvelope: %v\n%s", err, b)
			}
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("round trip changed the envelope:\n got  %+v\n want %+v", got, e)
			}
			b2, err := json.Marshal(got)
			if err != nil {
				t.Fatalf("marshal again: %v", err)
			}
			if string(b2) != string(b) {
				t.Fatalf("re-encoding differs:\n%s\n%s", b2, b)
			}
			p, err := got.Payload()
			if err != nil {
				t.Fatalf("Payload: %v", err)
			}
			// The payload is the sample with its header filled from the header.
			want := reflect.New(reflect.TypeOf(data)).Elem()
			want.Set(reflect.ValueOf(data))
			want.FieldByName("Header").Set(reflect.ValueOf(testHeader(7)))
			if !reflect.DeepEqual(p, want.Interface()) {
				t.Fatalf("Payload = %+v, want %+v", p, want.Interface())
			}
		})
	}
}

func TestWireForm(t *testing.T) {
	e := mustEnvelope(t, TypePrimaryChanged, 18446744073709551615)
	m := asMap(t, e)
	for k, want := range map[string]any{
		"specversion":     "1.0",
		"type":            TypePrimaryChanged,
		"source":          "dbpilot-agent/production/mybillingapp/db-node-2",
		"datacontenttype": "application/json",
		"time":            "2023-10-05T08:30:55.123Z",
		"dbpilotterm":     "18446744073709551615",
		"dbpilotrevision": "42",
	} {
		if m[k] != want {
			t.Errorf("%s = %#v, want %#v", k, m[k], want)
		}
	}
	d := dataOf(m)
	if d["primary"] != "db-node-2" || d["cluster"] != "mybillingapp" || d["project"] != "bluebird" || d["timestamp_ms"] != float64(testTS) {
		t.Errorf("data = %v, want the header inlined next to the payload fields", d)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(e.ID) {
		t.Errorf("id %q is not a version 4 UUID", e.ID)
	}
}

func TestNewEnvelope(t *testing.T) {
	h := testHeader(7)
	t.Run("fresh ids", func(t *testing.T) {
		seen := make(map[string]bool)
		for range 1000 {
			e := mustEnvelope(t, TypeFenced, 7)
			if seen[e.ID] {
				t.Fatalf("id %s repeated", e.ID)
			}
			seen[e.ID] = true
		}
	})
	t.Run("pointer data with the same header", func(t *testing.T) {
		p := &Fenced{Header: h, Reason: "x"}
		if _, err := NewEnvelope(TypeFenced, testSource(), h, p); err != nil {
			t.Fatalf("NewEnvelope: %v", err)
		}
	})
	bad := []struct {
		name string
		typ  string
		data any
		h    Header
		want string
	}{
		{"unknown type", "io.dbpilot.nope.v1", Fenced{Reason: "x"}, h, "unknown event type"},
		{"data of another type", TypeFenced, PrimaryChanged{Primary: "a", Reason: ReasonBootstrap}, h, "data is proto.PrimaryChanged, want proto.Fenced"},
		{"nil data", TypeFenced, nil, h, "data is nil"},
		{"nil pointer", TypeFenced, (*Fenced)(nil), h, "data is a nil pointer"},
		{"conflicting header", TypeFenced, Fenced{Header: testHeader(6), Reason: "x"}, h, "differs from header"},
		{"invalid payload", TypeFenced, Fenced{}, h, "data.reason: required"},
		{"zero term", TypeFenced, Fenced{Reason: "x"}, testHeader(0), "dbpilotterm: must be > 0"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewEnvelope(tc.typ, testSource(), tc.h, tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewEnvelope error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestBefore(t *testing.T) {
	at := func(term uint64, rev int64) Envelope { return Envelope{Term: term, Revision: rev} }
	tests := []struct {
		a, b Envelope
		want bool
	}{
		{at(1, 100), at(2, 5), true},  // lower term loses whatever its revision
		{at(2, 5), at(1, 100), false}, // higher term wins
		{at(2, 5), at(2, 6), true},    // same term: revision decides
		{at(2, 6), at(2, 5), false},   // same term, newer revision
		{at(2, 6), at(2, 6), false},   // same position is not stale
		{at(0, 999), at(1, 1), true},  // any term beats no term
		{at(1, 0), at(1, 1), true},    // revision 0 (not from etcd) is oldest in its term
	}
	for _, tc := range tests {
		if got := tc.a.Before(tc.b); got != tc.want {
			t.Errorf("(%d,%d).Before(%d,%d) = %v, want %v", tc.a.Term, tc.a.Revision, tc.b.Term, tc.b.Revision, got, tc.want)
		}
	}
}

// DecodeEvent returns the same payload Payload decodes, for every type.
func TestDecodeEventPayload(t *testing.T) {
	for typ := range samples() {
		e := mustEnvelope(t, typ, 3)
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		got, payload, err := DecodeEvent(b)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		want, err := got.Payload()
		if err != nil || !reflect.DeepEqual(payload, want) {
			t.Fatalf("%s: DecodeEvent payload %#v, Payload %#v (%v)", typ, payload, want, err)
		}
	}
	if _, p, err := DecodeEvent([]byte(`{"specversion":"1.0"}`)); err == nil || p != nil {
		t.Fatalf("invalid event: payload %v, err %v", p, err)
	}
}

// BenchmarkDecodeEvent measures the consumers' hot path: strict parse,
// validation and payload decoding of one member_state event.
func BenchmarkDecodeEvent(b *testing.B) {
	e, err := NewEnvelope(TypeMemberState, testSource(), testHeader(7), samples()[TypeMemberState])
	if err != nil {
		b.Fatal(err)
	}
	raw, err := json.Marshal(e)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, _, err := DecodeEvent(raw); err != nil {
			b.Fatal(err)
		}
	}
}
