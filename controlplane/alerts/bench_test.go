package alerts_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/controlplane/alerts"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// BenchmarkTick: one evaluation of 500 Ready clusters of 3 members each,
// all reporting, on SQLite (the engine's cost per alerts.interval).
func BenchmarkTick(b *testing.B) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(b.TempDir(), "dbpilot.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreateNamespace(ctx, "ns"); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	eng := alerts.NewEngine(st, alerts.Config{}, zap.NewNop())
	for i := range 500 {
		id, name := fmt.Sprintf("c-%03d", i), fmt.Sprintf("db%d", i)
		if err := st.CreateCluster(ctx, store.Cluster{ID: id, Namespace: "ns", Project: "default", Name: name, Template: "postgres-15", Phase: store.PhaseReady,
			CreatedAt: now, UpdatedAt: now}, store.Operation{ID: "op-" + id, Namespace: "ns", ClusterID: id, Kind: "create", State: store.OpSucceeded,
			CreatedAt: now, UpdatedAt: now}); err != nil {
			b.Fatal(err)
		}
		for j, role := range []string{proto.RolePrimary, proto.RoleReplica, proto.RoleReplica} {
			n := fmt.Sprintf("node%d", j)
			if err := st.UpsertNode(ctx, store.Node{ClusterID: id, Name: n, State: store.NodeCreated}); err != nil {
				b.Fatal(err)
			}
			s := proto.MemberSummary{Header: proto.Header{ClusterRef: proto.ClusterRef{Namespace: "ns", Project: "default", Cluster: name}, Node: n},
				IntervalMS: 3000, Role: role, State: proto.StateRunning, Healthy: true, Writable: role == proto.RolePrimary}
			eng.Summary(ctx, id, s)
		}
	}
	b.ResetTimer()
	for range b.N {
		if err := eng.Tick(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
