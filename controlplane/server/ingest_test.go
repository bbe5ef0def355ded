package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// memberState builds a member_state event of cluster ns/name at revision rev.
func memberState(t *testing.T, ns, name, node string, rev int64) proto.Envelope {
	t.Helper()
	h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: ns, Project: "default", Cluster: name}, Node: node,
		Term: 1, Revision: rev, TimestampMS: time.Now().UnixMilli()}
	e, err := proto.NewEnvelope(proto.TypeMemberState, proto.AgentSource(ns, name, node), h,
		proto.MemberState{Role: proto.RoleReplica, State: proto.StateRunning, Healthy: true, LagBytes: rev})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestIngestBatch posts event batches to a real server's ingest endpoint,
// as agents' HTTP transports do: the events are stored in order in one
// request, a foreign or malformed event is refused alone (named by its
// position), a re-sent batch is de-duplicated, and bad batches get 400/401.
func TestIngestBatch(t *testing.T) {
	dir := testDir(t)
	s, _ := startServer(t, dir)
	defer s.Close()
	ctx := context.Background()
	seedCluster(t, s.Store, "c-own", "acme", "own")
	seedCluster(t, s.Store, "c-other", "acme", "other")
	secret, err := os.ReadFile(filepath.Join(dir, "ingest.key"))
	if err != nil {
		t.Fatal(err)
	}
	post := func(user, key, contentType string, body []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/ingest/events", bytes.NewReader(body))
		req.SetBasicAuth(user, key)
		req.Header.Set("Content-Type", contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	key := controlplane.IngestKey(secret, "c-own")

	var batch []json.RawMessage
	var want []string
	for rev := int64(1); rev <= 5; rev++ {
		e := memberState(t, "acme", "own", "node1", rev)
		b, _ := json.Marshal(e)
		batch = append(batch, b)
		want = append(want, e.ID)
	}
	foreign, _ := json.Marshal(memberState(t, "acme", "other", "node1", 9))
	malformed := []byte(`{"specversion":"1.0","id":"x1","source":"dbpilot-agent/acme/own/node1","type":"io.dbpilot.member.state_changed.v1"}`)
	batch = slices.Insert(batch, 2, json.RawMessage(foreign))
	batch = slices.Insert(batch, 4, json.RawMessage(malformed))
	body, _ := json.Marshal(batch)

	code, answer := post("c-own", key, proto.BatchMediaType, body)
	if code != http.StatusAccepted {
		t.Fatalf("batch: %d %s, want 202", code, answer)
	}
	var res proto.BatchResult
	if err := json.Unmarshal([]byte(answer), &res); err != nil {
		t.Fatalf("batch answer %q: %v", answer, err)
	}
	if res.Accepted != 5 || len(res.Rejected) != 2 || res.Rejected[0].Index != 2 || res.Rejected[1].Index != 4 ||
		!strings.Contains(res.Rejected[0].Error, "not for cluster") || !strings.Contains(res.Rejected[1].Error, "data") {
		t.Fatalf("batch answer %+v, want 5 accepted and events 2 (foreign) and 4 (malformed: no data) rejected", res)
	}
	stored := func() []string {
		evs, err := s.Store.ListEvents(ctx, store.EventFilter{Namespace: "acme", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range evs {
			ids = append(ids, e.ID)
		}
		return ids
	}
	if got := stored(); !slices.Equal(got, want) {
		t.Fatalf("stored events %v, want %v in batch order (nothing of the other cluster)", got, want)
	}
	nodes, err := s.Store.ListNodes(ctx, "c-own")
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(nodes, func(n store.Node) bool { return n.Name == "node1" }); i < 0 || nodes[i].Revision != 5 {
		t.Errorf("node1 projection %+v, want revision 5 (the batch's last)", nodes)
	}

	// Re-sent (the agent's retry after a lost answer): de-duplicated.
	if code, answer := post("c-own", key, proto.BatchMediaType, body); code != http.StatusAccepted {
		t.Fatalf("re-sent batch: %d %s", code, answer)
	}
	if got := stored(); len(got) != 5 {
		t.Errorf("after the re-sent batch %d events stored, want still 5", len(got))
	}

	for _, tc := range []struct {
		name, user, key, body string
		want                  int
	}{
		{"wrong key", "c-own", "nope", string(body), 401},
		{"not an array", "c-own", key, `{"a":1}`, 400},
		{"empty", "c-own", key, `[]`, 400},
		{"element not an object", "c-own", key, `[1]`, 400},
		{"trailing data", "c-own", key, `[{}] x`, 400},
		{"too many", "c-own", key, "[" + strings.TrimSuffix(strings.Repeat("{},", 1001), ",") + "]", 400},
	} {
		if code, answer := post(tc.user, tc.key, proto.BatchMediaType, []byte(tc.body)); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, answer, tc.want)
		} else if code == 400 && !strings.Contains(answer, "body") {
			t.Errorf("%s: %s does not name the body", tc.name, answer)
		}
	}
}
