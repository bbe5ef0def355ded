package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/localcluster"
)

// TestHAClusterEtcdAuth: real agents whose etcd user may only touch their
// cluster's prefix (localcluster.Options.EtcdAuth, as the control plane
// provisions them) bootstrap a two-node cluster with a streaming replica,
// and fail over when the primary's host dies: lease, locks, claims and
// watch all work under the restricted user. The same credentials cannot
// read another cluster's keys.
func TestHAClusterEtcdAuth(t *testing.T) {
	c := startCluster(t, localcluster.Options{Nodes: 2, EtcdAuth: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if c.EtcdUser == "" || c.EtcdPassword == "" {
		t.Fatal("EtcdAuth cluster without an agent etcd user")
	}
	s := waitFor(t, c, 90*time.Second, "one primary, one streaming replica", healthy(c, false))
	old, term := s.Leader, s.Term

	if err := c.Kill(c.Index(old)); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, c, 60*time.Second, "a new primary after SIGKILL of the primary host", func(s localcluster.Status) bool {
		return s.Leader != "" && s.Leader != old && len(s.Primaries()) == 1
	})
	if s.Term != term+1 || s.History[len(s.History)-1].Reason != "failover" {
		t.Fatalf("term %d (want %d), history %+v", s.Term, term+1, s.History[len(s.History)-1])
	}

	// The agents' credentials are confined to the cluster's prefix.
	if _, err := c.Admin.Raw().Put(ctx, "/dbpilot/v1/clusters/demo/default/other/leader", "x"); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.URL}, DialTimeout: 10 * time.Second, Username: c.EtcdUser, Password: c.EtcdPassword, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Get(ctx, c.Keys.Leader()); err != nil {
		t.Fatalf("own leader key: %v", err)
	}
	if _, err := cli.Get(ctx, "/dbpilot/v1/clusters/demo/default/other/leader"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("another cluster's key with the agents' credentials: %v, want permission denied", err)
	}
}
