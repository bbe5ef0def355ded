package keyspace

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

var testKeys = NewKeys("prod", "blue", "billing")

// TestKeysRoundTrip builds every key kind and parses it back.
func TestKeysRoundTrip(t *testing.T) {
	k := testKeys
	if got, want := k.Prefix(), "/dbpilot/v1/clusters/prod/blue/billing/"; got != want {
		t.Fatalf("Prefix() = %q, want %q", got, want)
	}
	cases := []struct {
		key  string
		kind Kind
		arg  string
	}{
		{k.Initialize(), KindInitialize, ""},
		{k.Term(), KindTerm, ""},
		{k.Leader(), KindLeader, ""},
		{k.Optime(), KindOptime, ""},
		{k.Member("node2"), KindMember, "node2"},
		{k.State(), KindState, ""},
		{k.Sync(), KindSync, ""},
		{k.Switchover(), KindSwitchover, ""},
		{k.Spec(), KindSpec, ""},
		{k.History(7), KindHistory, "00000000000000000007"},
		{k.BootstrapLock(), KindBootstrapLock, ""},
		{k.BootstrapLock() + "/694d8a1b2c3d4e5f", KindBootstrapLock, "694d8a1b2c3d4e5f"},
		{k.FailoverLock(), KindFailoverLock, ""},
		{k.FailoverLock() + "/694d8a1b2c3d4e60", KindFailoverLock, "694d8a1b2c3d4e60"},
		{k.BackupClaim("daily", 1696494655), KindBackupClaim, "daily/1696494655"},
		{k.BackupRequest("op-42"), KindBackupRequest, "op-42"},
		{k.BackupRequestClaim("op-42"), KindBackupRequestClaim, "op-42"},
	}
	seen := map[Kind]bool{}
	for _, c := range cases {
		kind, arg := k.ParseKey(c.key)
		if kind != c.kind || arg != c.arg {
			t.Errorf("ParseKey(%q) = %v %q, want %v %q", c.key, kind, arg, c.kind, c.arg)
		}
		if !strings.HasSuffix(c.key, strings.NewReplacer("{node}", "node2", "{term}", "00000000000000000007",
			"{job}/{occurrence}", "daily/1696494655", "{id}", "op-42").Replace(kind.String())) && !strings.Contains(c.key, "/locks/") {
			t.Errorf("key %q does not end in its kind's pattern %q", c.key, kind)
		}
		seen[kind] = true
	}
	for _, kind := range Kinds {
		if !seen[kind] {
			t.Errorf("kind %v has no round-trip case", kind)
		}
	}
	if got := k.History(7); got != k.HistoryPrefix()+"00000000000000000007" {
		t.Errorf("History(7) = %q", got)
	}
	if n := k.MemberName(k.Member("db-1")); n != "db-1" {
		t.Errorf("MemberName = %q", n)
	}
	for _, bad := range []string{
		"/dbpilot/v1/clusters/prod/blue/other/leader", // another cluster
		k.Prefix() + "leaderx",
		k.Prefix() + "members/",
		k.Prefix() + "members/a/b",
		k.Prefix() + "history/seven",
		k.Prefix() + "locks/backup/daily/noon",
		k.Prefix() + "locks/backup/daily",
		k.Prefix() + "backup/requests/",
	} {
		if kind, arg := k.ParseKey(bad); kind != KindUnknown || arg != "" {
			t.Errorf("ParseKey(%q) = %v %q, want unknown", bad, kind, arg)
		}
		if k.MemberName(bad) != "" {
			t.Errorf("MemberName(%q) = %q, want empty", bad, k.MemberName(bad))
		}
	}
	if _, err := ParseClusterID("prod/blue"); err == nil || !strings.Contains(err.Error(), "namespace/project/cluster") {
		t.Errorf("ParseClusterID(prod/blue) error %v, want one naming the form", err)
	}
	if got, err := ParseClusterID("prod/blue/billing"); err != nil || got != k {
		t.Errorf("ParseClusterID = %v %v", got, err)
	}
}

// fullDocuments returns one value of every document type with every field set.
func fullDocuments() []Document {
	return []Document{
		LeaderRecord{Node: "n1", Term: 3, Host: "10.0.0.1", Port: 5432, APIURL: "http://10.0.0.1:8008", LSN: 50331744, Timeline: 2, Since: 1696494062088},
		Member{Node: "n2", Role: "replica", State: "running", Healthy: true, Running: true, Streaming: true, Host: "10.0.0.2", Port: 5432,
			APIURL: "http://10.0.0.2:8008", LSN: 50331744, Timeline: 2, LagBytes: 16, LagSeconds: 0.25, NoFailover: true, Priority: 100,
			Upstream: "n1", SynchronousMode: "on", Synchronous: true, FailsafeFor: "n1", FailsafeUntilMS: 1696494099000, UpdatedMS: 1696494095929},
		ClusterDocument{Namespace: "prod", Project: "blue", ClusterName: "billing", Term: 3, Leader: "n1", LastUpdated: 1696494063, TTLSeconds: 5,
			Nodes: []DocumentNode{{Name: "n1", Status: "Online", IPAddress: "10.0.0.1", Port: 5432, Role: "Primary"}}},
		SyncState{Leader: "n1", Term: 3, Standbys: []string{"n2"}},
		Switchover{From: "n1", To: "n2", State: SwitchoverHandover, Reason: "kernel upgrade", FinalLSN: 50331745, RequestedMS: 1696494655123, HandoverMS: 1696494656000},
		Spec{Replicas: 3, SynchronousMode: "on", Engine: "postgres", Version: "16", Template: "postgres-16", Plan: "small", Nodes: []string{"n1", "n2", "n3"}, UpdatedMS: 1696494655123},
		HistoryRecord{Term: 3, Node: "n1", Previous: "n2", Reason: ReasonFailover, LSN: 50331744, Timeline: 2, AtMS: 1696494062088, Abandoned: "promotion failed"},
		BackupRequest{Action: ActionBackup, Job: "daily", RequestedMS: 1696494655123, ExpiresMS: 1696494835123},
	}
}

// decodeAs decodes text with the decode function of kind.
func decodeAs(kind Kind, key string, text []byte) (Document, error) {
	switch kind {
	case KindLeader:
		return DecodeLeader(key, text)
	case KindMember:
		return DecodeMember(key, text)
	case KindState:
		return DecodeDocument(key, text)
	case KindSync:
		return DecodeSync(key, text)
	case KindSwitchover:
		return DecodeSwitchover(key, text)
	case KindSpec:
		return DecodeSpec(key, text)
	case KindHistory:
		return DecodeHistory(key, text)
	case KindBackupRequest:
		return DecodeBackupRequest(key, text)
	}
	return nil, errors.New("no decoder for " + kind.String())
}

// TestDocumentsRoundTrip encodes every document with every field set and
// decodes it back; a malformed value gives a DecodeError naming the key.
func TestDocumentsRoundTrip(t *testing.T) {
	docs := fullDocuments()
	if len(docs) != len(Documents()) {
		t.Fatalf("fullDocuments has %d types, Documents %d", len(docs), len(Documents()))
	}
	for _, d := range docs {
		// Every exported field is set, so a field the encoding loses fails.
		v := reflect.ValueOf(d)
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.Tag.Get("json") != "-" && v.Field(i).IsZero() {
				t.Errorf("%T.%s is zero in the test value", d, f.Name)
			}
		}
		key := testKeys.Prefix() + "x"
		got, err := decodeAs(d.Kind(), key, []byte(Encode(d)))
		if err != nil {
			t.Fatalf("%T: %v", d, err)
		}
		if !reflect.DeepEqual(got, d) {
			t.Errorf("%T round trip:\n got %+v\nwant %+v", d, got, d)
		}
		_, err = decodeAs(d.Kind(), key, []byte(`{"node":`))
		var de *DecodeError
		if !errors.As(err, &de) || de.Key != key || !strings.Contains(err.Error(), key) {
			t.Errorf("%T: malformed value gave %v, want a DecodeError naming %s", d, err, key)
		}
	}
	if _, err := DecodeSpec("k", []byte(`{"synchronous_mode":"yes"}`)); err == nil || !strings.Contains(err.Error(), "synchronous_mode") {
		t.Errorf("DecodeSpec(yes) = %v, want an error naming synchronous_mode", err)
	}
	for _, c := range []BackupClaim{{Node: "n2"}, {Node: "n2", Status: "succeeded"}} {
		if got, err := DecodeBackupClaim("k", []byte(c.String())); err != nil || got != c {
			t.Errorf("claim %+v round trip: %+v %v", c, got, err)
		}
	}
	if _, err := DecodeBackupClaim("k", []byte("a b c")); err == nil {
		t.Error("DecodeBackupClaim(a b c) succeeded")
	}
	for _, v := range []uint64{0, 1, 50331744, 1<<64 - 1} {
		if got, err := DecodeTerm("k", []byte(EncodeUint(v))); err != nil || got != v {
			t.Errorf("term %d round trip: %d %v", v, got, err)
		}
		if got, err := DecodeOptime("k", []byte(EncodeUint(v))); err != nil || got != v {
			t.Errorf("optime %d round trip: %d %v", v, got, err)
		}
	}
	if _, err := DecodeOptime("k", []byte("x")); err == nil {
		t.Error("DecodeOptime(x) succeeded")
	}
}

// TestParse decodes a whole prefix, reporting each malformed value with
// its key and keeping the rest.
func TestParse(t *testing.T) {
	k := testKeys
	docs := fullDocuments()
	kvs := []KV{
		{Key: k.Initialize(), Value: []byte("7710720687261459858")},
		{Key: k.Term(), Value: []byte("3"), ModRevision: 40},
		{Key: k.Leader(), Value: []byte(Encode(docs[0])), CreateRevision: 41, Lease: 77},
		{Key: k.Optime(), Value: []byte("50331744")},
		{Key: k.Member("n2"), Value: []byte(Encode(docs[1])), ModRevision: 45},
		{Key: k.Member("n3"), Value: []byte("{not json"), ModRevision: 46},
		{Key: k.State(), Value: []byte(Encode(docs[2])), ModRevision: 42},
		{Key: k.Sync(), Value: []byte(Encode(docs[3])), ModRevision: 43},
		{Key: k.Switchover(), Value: []byte(Encode(docs[4])), ModRevision: 44},
		{Key: k.Spec(), Value: []byte(`{"synchronous_mode":"sometimes"}`), ModRevision: 47},
		{Key: k.History(4), Value: []byte(Encode(HistoryRecord{Term: 4, Node: "n2", Reason: ReasonSwitchover}))},
		{Key: k.History(3), Value: []byte(Encode(docs[6]))},
		{Key: k.BackupRequest("op-1"), Value: []byte(Encode(docs[7]))},
		{Key: k.FailoverLock() + "/abc", Value: nil, Lease: 9},
		{Key: k.BackupRequestClaim("op-1"), Value: []byte("n2 succeeded")},
	}
	s := Parse(k, 50, kvs)
	if s.Revision != 50 || !s.Initialized || s.SystemID != "7710720687261459858" || s.Term != 3 || s.TermRev != 40 || s.OptimeLSN != 50331744 {
		t.Errorf("scalars: %+v", s)
	}
	if s.Leader == nil || s.Leader.Node != "n1" || s.LeaderRev != 41 || s.LeaderLease != 77 {
		t.Errorf("leader %+v rev %d lease %d", s.Leader, s.LeaderRev, s.LeaderLease)
	}
	if m, ok := s.Members["n2"]; !ok || m.Revision != 45 || m.Upstream != "n1" {
		t.Errorf("member n2 = %+v", m)
	}
	if _, ok := s.Members["n3"]; !ok {
		t.Error("malformed member n3 dropped from Members; the agent counts its key")
	}
	if s.Sync == nil || s.Sync.Revision != 43 || !s.Sync.Has("n2") || s.Switchover == nil || s.SwitchRev != 44 || s.Document == nil || s.DocRev != 42 {
		t.Errorf("sync %+v switchover %+v document %+v", s.Sync, s.Switchover, s.Document)
	}
	if s.Spec != nil || s.SpecRev != 47 || s.SpecErr == nil {
		t.Errorf("spec %+v rev %d err %v, want nil, 47, an error", s.Spec, s.SpecRev, s.SpecErr)
	}
	if len(s.History) != 2 || s.History[0].Term != 3 || s.History[1].Term != 4 {
		t.Errorf("history %+v, want terms 3, 4", s.History)
	}
	if r, ok := s.BackupRequests["op-1"]; !ok || r.Job != "daily" {
		t.Errorf("backup requests %+v", s.BackupRequests)
	}
	if c := s.RequestClaims["op-1"]; c.Node != "n2" || c.Status != "succeeded" {
		t.Errorf("request claims %+v", s.RequestClaims)
	}
	ha := ParseHA(k, 50, append(kvs, KV{Key: k.History(5), Value: []byte("{")}))
	if len(ha.History) != 0 || len(ha.BackupRequests) != 0 || len(ha.RequestClaims) != 0 || len(ha.Errors) != 2 || ha.Leader == nil || len(ha.Members) != 2 {
		t.Errorf("ParseHA: history %v requests %v errors %v, want none, none, the member and the spec", ha.History, ha.BackupRequests, ha.Errors)
	}
	if len(s.Errors) != 2 || s.Err(k.Member("n3")) == nil || s.Err(k.Spec()) == nil || s.Err(k.Leader()) != nil {
		t.Errorf("errors %v, want the member n3 and the spec", s.Errors)
	}
	for _, err := range s.Errors {
		if !strings.Contains(err.Error(), k.Prefix()) {
			t.Errorf("error %q does not name its key", err)
		}
	}
}

// TestDocsKeyspace checks docs/keyspace.md against the package: every key
// kind appears as a path, every document type by its Go name and every
// JSON field of it in backquotes.
func TestDocsKeyspace(t *testing.T) {
	b, err := os.ReadFile("../../docs/keyspace.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, kind := range Kinds {
		if !strings.Contains(doc, "`"+kind.String()) {
			t.Errorf("docs/keyspace.md does not describe the key `%s`", kind)
		}
	}
	for _, d := range Documents() {
		typ := reflect.TypeOf(d)
		if !strings.Contains(doc, "`keyspace."+typ.Name()+"`") {
			t.Errorf("docs/keyspace.md does not name the document type `keyspace.%s`", typ.Name())
		}
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("docs/keyspace.md does not describe field `%s` of %s", name, typ.Name())
			}
		}
	}
	if !strings.Contains(doc, "`"+Root) {
		t.Errorf("docs/keyspace.md does not give the root %s", Root)
	}
}
