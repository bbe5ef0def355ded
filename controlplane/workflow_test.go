package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// TestEngineHandleRequests: through the embedded bus, a request is
// counted once however often it is delivered, and every kind of malformed
// control-plane event is dropped (ErrMalformed) and counted.
func TestEngineHandleRequests(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng := NewEngine(EngineConfig{Instance: "test"}, st, nil, nil, zaptest.NewLogger(t))
	bus := NewEmbeddedBus()
	bus.Subscribe(TopicControlPlane, eng.Handle)

	req := func(r OperationRequested) []byte {
		b, err := NewOperationRequested("test", r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := req(OperationRequested{OperationID: "op-1", Kind: KindRestart, Namespace: "ns", ClusterID: "c1"})
	for range 3 {
		if err := bus.Publish(ctx, TopicControlPlane, good); err != nil {
			t.Fatal(err)
		}
	}
	if err := bus.Publish(ctx, TopicControlPlane, req(OperationRequested{OperationID: "op-2", Kind: KindRepair, Namespace: "ns", ClusterID: "c1"})); err != nil {
		t.Fatal(err)
	}

	var extra map[string]any
	_ = json.Unmarshal(good, &extra)
	extra["id"] = "ev-extra"
	extra["data"].(map[string]any)["extra"] = 1
	withExtra, _ := json.Marshal(extra)
	h := proto.Header{ClusterRef: proto.ClusterRef{Namespace: "ns", Cluster: "db"}, Node: "node1", TimestampMS: 1}
	agentEvent, err := proto.NewEnvelope(proto.TypeMemberState, proto.AgentSource("ns", "db", "node1"), h,
		proto.MemberState{Role: proto.RoleReplica, State: proto.StateRunning, LagBytes: 0})
	if err != nil {
		t.Fatal(err)
	}
	wrongType, _ := json.Marshal(agentEvent)
	for name, raw := range map[string][]byte{
		"not json":            []byte("{"),
		"an agent event":      wrongType,
		"unknown data field":  withExtra,
		"no operation_id":     req(OperationRequested{Kind: KindRestart, Namespace: "ns", ClusterID: "c1"}),
		"unknown kind":        req(OperationRequested{OperationID: "op-3", Kind: "reboot", Namespace: "ns", ClusterID: "c1"}),
		"no cluster_id":       req(OperationRequested{OperationID: "op-3", Kind: KindDelete, Namespace: "ns"}),
		"no namespace either": req(OperationRequested{OperationID: "op-3", Kind: KindDelete}),
	} {
		if err := bus.Publish(ctx, TopicControlPlane, raw); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if s := eng.Stats(); s.Requested != 2 || s.Duplicate != 2 || s.Malformed != 7 {
		t.Fatalf("stats %+v, want 2 requested, 2 duplicates, 7 malformed", s)
	}
}
