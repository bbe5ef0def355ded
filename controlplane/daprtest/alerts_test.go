//go:build dapr

package daprtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/server"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/internal/testutil"
	"github.com/dbpilot/dbpilot/proto"
)

// TestDaprBindingChannel: a dapr_binding notification channel over the
// server's real daprd sidecar. The sidecar's bindings.http output
// binding posts to a test receiver; a seeded Ready cluster whose node
// never reports pages agent_silent, and the notification arrives through
// the binding with its delivery id, the delivery log says delivered.
func TestDaprBindingChannel(t *testing.T) {
	daprdBin := daprdPath(t)
	dir := t.TempDir()
	var mu sync.Mutex
	var got []proto.AlertNotification
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var n proto.AlertNotification
		if err := json.Unmarshal(b, &n); err != nil {
			t.Errorf("binding body %q: %v", b, err)
		}
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	}))
	defer recv.Close()

	resources := filepath.Join(dir, "components")
	if err := os.MkdirAll(resources, 0o755); err != nil {
		t.Fatal(err)
	}
	components := fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: %s
spec:
  type: pubsub.in-memory
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pager
spec:
  type: bindings.http
  version: v1
  metadata:
    - name: url
      value: "%s/hook"
`, pubsubName, recv.URL)
	if err := os.WriteFile(filepath.Join(resources, "components.yaml"), []byte(components), 0o644); err != nil {
		t.Fatal(err)
	}
	appPort := freePort(t)
	_, grpcAddr, _ := daprd(t, daprdBin, "dbpilot-server", resources, appPort)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	repairOff := time.Duration(0)
	srv, err := server.Start(ctx, server.Config{DataDir: filepath.Join(dir, "server"), Listen: "127.0.0.1:0", RepairInterval: &repairOff,
		Bus: server.BusConfig{Kind: server.BusDapr, Dapr: server.DaprConfig{GRPCAddress: grpcAddr, PubSub: pubsubName,
			AppListen: "127.0.0.1:" + strconv.Itoa(appPort)}}}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := srv.Store.CreateNamespace(ctx, "ns"); err != nil {
		t.Fatal(err)
	}
	token, err := srv.CreateToken(ctx, "dapr-alerts", store.Grant{Namespace: "*", Role: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(proto.NotificationChannel{Name: "pager", Kind: proto.ChannelDaprBinding, Binding: "pager", Operation: "post"})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/namespaces/ns/notification-channels", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create dapr_binding channel: %d", resp.StatusCode)
	}

	now := time.Now()
	if err := srv.Store.CreateCluster(ctx, store.Cluster{ID: "c-b", Namespace: "ns", Project: "default", Name: "db", Engine: "postgres", Version: "15",
		Template: "postgres-15", Plan: "small", Provider: "process", Replicas: 1, Phase: store.PhaseReady, CreatedAt: now, UpdatedAt: now},
		store.Operation{ID: "op-c-b", Namespace: "ns", ClusterID: "c-b", Kind: controlplane.KindCreate, State: store.OpSucceeded, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Store.UpsertNode(ctx, store.Node{ClusterID: "c-b", Name: "node1", State: store.NodeCreated}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, 250*time.Millisecond, "agent_silent delivered through the Dapr binding", func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range got {
			if n.Alert.Rule == "agent_silent" && n.Alert.Node == "node1" && n.Transition == proto.TransitionFiring {
				return nil
			}
		}
		return fmt.Errorf("received %+v", got)
	})
	testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, "the delivery log says delivered", func() error {
		ds, err := srv.Store.ListDeliveries(ctx, "ns", "pager", 0)
		if err != nil || len(ds) == 0 || ds[0].Status != proto.DeliveryDelivered {
			return fmt.Errorf("deliveries %+v %v", ds, err)
		}
		return nil
	})
}
