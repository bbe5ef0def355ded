package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/controlplane/server"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/internal/testutil"
	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// TestUpdateSynchronousMode: PATCH …/clusters/{c} validates strictly (400
// naming the field), writes the spec key the agents act on, records the
// mode, and its operation succeeds only once the primary's member key
// reports the mode in effect (played here by the test: the agents' side
// runs in agent.TestSpecSynchronousModeAndNodes and, end to end, in
// TestProvisionSwitchoverDelete). A second change while one runs is 409;
// every PATCH is audited.
func TestUpdateSynchronousMode(t *testing.T) {
	dir := testDir(t)
	s, admin := startServer(t, dir)
	defer s.Close()
	ctx := context.Background()
	seedCluster(t, s.Store, "c-sync", "acme", "ledger")
	if err := s.Store.UpsertNode(ctx, store.Node{ClusterID: "c-sync", Name: "node2", State: "created"}); err != nil {
		t.Fatal(err)
	}
	const path = "/v1/namespaces/acme/clusters/ledger"
	for _, tc := range []struct{ name, body, code, field string }{
		{"empty body", ``, "invalid_argument", ""},
		{"malformed", `{"synchronous_mode":`, "malformed_json", ""},
		{"nothing to change", `{}`, "invalid_argument", "synchronous_mode"},
		{"unknown field", `{"synchronous_mode":"on","replicas":3}`, "unknown_field", "replicas"},
		{"wrong type", `{"synchronous_mode":true}`, "invalid_argument", "synchronous_mode"},
		{"bad value", `{"synchronous_mode":"maybe"}`, "invalid_argument", "synchronous_mode"},
		{"null", `{"synchronous_mode":null}`, "invalid_argument", "synchronous_mode"},
		{"trailing", `{"synchronous_mode":"on"} {}`, "malformed_json", ""},
	} {
		var e apiErr
		code := admin.do("PATCH", path, bodyOf(tc.body), &e)
		if code != 400 || e.Code != tc.code || e.Field != tc.field || (tc.field != "" && !strings.HasPrefix(e.Message, tc.field+":")) {
			t.Errorf("%s: %d %+v, want 400 %s naming %q", tc.name, code, e, tc.code, tc.field)
		}
	}
	if code := admin.do("PATCH", "/v1/namespaces/acme/clusters/nope", `{"synchronous_mode":"on"}`, nil); code != 404 {
		t.Errorf("unknown cluster: %d, want 404", code)
	}
	if sp := readSpec(t, s); sp != nil {
		t.Fatalf("validation errors wrote a spec: %+v", sp)
	}

	var o op
	if code := admin.do("PATCH", path, `{"synchronous_mode":"on"}`, &o); code != 202 || o.ID == "" || o.ClusterID != "c-sync" {
		t.Fatalf("PATCH on: %d %+v", code, o)
	}
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "the spec key says synchronous_mode on for node1, node2", func() error {
		sp := readSpec(t, s)
		if sp == nil || sp.SynchronousMode != "on" || !slices.Equal(sp.Nodes, []string{"node1", "node2"}) || sp.Replicas != 2 || sp.Engine != "postgres" {
			return fmt.Errorf("spec %+v", sp)
		}
		return nil
	})
	// The primary acts under "on" but node2 streams and nothing waits for
	// it yet: the operation keeps waiting and says why. (The leader key
	// goes last: the operation may read etcd between any two writes.)
	putJSON(t, s, "members/node2", map[string]any{"node": "node2", "role": "replica", "healthy": true, "streaming": true, "synchronous_mode": "on", "priority": 100})
	putJSON(t, s, "members/node1", map[string]any{"node": "node1", "role": "primary", "healthy": true, "synchronous_mode": "on", "synchronous": false, "priority": 100})
	putJSON(t, s, "leader", map[string]any{"node": "node1", "term": 1})
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "the operation waits for a synchronous standby", func() error {
		var cur op
		admin.do("GET", "/v1/namespaces/acme/operations/"+o.ID, nil, &cur)
		if cur.State != store.OpRunning || cur.Step != "wait" || !strings.Contains(cur.Progress, "does not wait for a synchronous standby yet (node2 streams)") {
			return fmt.Errorf("operation %+v", cur)
		}
		return nil
	})
	var e apiErr
	if code := admin.do("PATCH", path, `{"synchronous_mode":"off"}`, &e); code != 409 {
		t.Fatalf("PATCH while an update runs: %d %+v, want 409", code, e)
	}
	putJSON(t, s, "members/node1", map[string]any{"node": "node1", "role": "primary", "healthy": true, "synchronous_mode": "on", "synchronous": true, "priority": 100})
	if done := admin.waitOp("acme", o.ID, 30*time.Second); done.State != store.OpSucceeded || !strings.Contains(done.Progress, "in effect on the primary node1") {
		t.Fatalf("update on: %+v", done)
	}
	var cl struct {
		SynchronousMode string `json:"synchronous_mode"`
		Phase           string `json:"phase"`
	}
	if admin.do("GET", path, nil, &cl); cl.SynchronousMode != "on" || cl.Phase != store.PhaseReady {
		t.Fatalf("cluster after update on: %+v", cl)
	}

	// Off: done once the primary reports "off" and waits for no standby.
	if code := admin.do("PATCH", path, map[string]string{"synchronous_mode": "off"}, &o); code != 202 {
		t.Fatalf("PATCH off: %d", code)
	}
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "the spec key says synchronous_mode off", func() error {
		if sp := readSpec(t, s); sp == nil || sp.SynchronousMode != "off" {
			return fmt.Errorf("spec %+v", sp)
		}
		return nil
	})
	putJSON(t, s, "members/node1", map[string]any{"node": "node1", "role": "primary", "healthy": true, "synchronous_mode": "off", "synchronous": false, "priority": 100})
	if done := admin.waitOp("acme", o.ID, 30*time.Second); done.State != store.OpSucceeded {
		t.Fatalf("update off: %+v", done)
	}
	if admin.do("GET", path, nil, &cl); cl.SynchronousMode != "off" {
		t.Fatalf("cluster after update off: %+v", cl)
	}

	// Every PATCH, refused ones included, is in the audit log.
	var audit struct {
		Items []struct {
			Action string `json:"action"`
			Status int    `json:"status"`
		} `json:"items"`
	}
	admin.do("GET", "/v1/namespaces/acme/audit?limit=1000", nil, &audit)
	statuses := map[int]int{}
	for _, a := range audit.Items {
		if strings.HasPrefix(a.Action, "PATCH ") && strings.HasSuffix(a.Action, "/v1/namespaces/{ns}/clusters/{cluster}") {
			statuses[a.Status]++
		}
	}
	if statuses[400] != 8 || statuses[404] != 1 || statuses[409] != 1 || statuses[202] != 2 {
		t.Fatalf("audited PATCH statuses %v, want 8×400, 1×404, 1×409, 2×202", statuses)
	}
}

// ledgerPrefix is the seeded cluster's etcd prefix (docs/keyspace.md).
const ledgerPrefix = "/dbpilot/v1/clusters/acme/default/ledger/"

// readSpec reads ledger's spec key (nil if absent).
func readSpec(t *testing.T, s *server.Server) *keyspace.Spec {
	t.Helper()
	resp, err := s.Etcd.Raw().Get(context.Background(), ledgerPrefix+"spec")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	var d keyspace.Spec
	if err := json.Unmarshal(resp.Kvs[0].Value, &d); err != nil {
		t.Fatalf("spec key %q: %v", resp.Kvs[0].Value, err)
	}
	return &d
}

// putJSON writes ledger's key rel as an agent would.
func putJSON(t *testing.T, s *server.Server, rel string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if _, err := s.Etcd.Raw().Put(context.Background(), ledgerPrefix+rel, string(b)); err != nil {
		t.Fatal(err)
	}
}
