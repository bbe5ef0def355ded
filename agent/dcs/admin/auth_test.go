package admin_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/internal/embedetcd"
	"github.com/dbpilot/dbpilot/proto/keyspace"
)

var (
	keysA   = keyspace.NewKeys("acme", "default", "billing")
	prefixA = keysA.Prefix()
	// keysB shares keysA's prefix text up to the cluster name: a role on
	// "…/billing" without the trailing "/" would cover it.
	keysB   = keyspace.NewKeys("acme", "default", "billing2")
	prefixB = keysB.Prefix()
)

// startAuthEtcd runs a real embedded etcd with authentication on and
// returns its URL and a root client.
func startAuthEtcd(t *testing.T) (string, *admin.Admin, string) {
	t.Helper()
	dir := t.TempDir()
	e, u, err := embedetcd.Start(filepath.Join(dir, "etcd"), "default", 0, zap.NewNop(), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	pwFile := filepath.Join(dir, "root.password")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pw, err := embedetcd.EnableAuth(ctx, u, pwFile, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(pwFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("root password file: %v %v, want mode 0600", fi, err)
	}
	// A second call (a restarted server) keeps the password and auth on.
	if pw2, err := embedetcd.EnableAuth(ctx, u, pwFile, zaptest.NewLogger(t)); err != nil || pw2 != pw {
		t.Fatalf("EnableAuth again: %v (password kept: %v)", err, pw2 == pw)
	}
	return u, admin.Wrap(login(t, u, embedetcd.RootUser, pw), zaptest.NewLogger(t)), pw
}

func login(t *testing.T, u, user, pw string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{u}, DialTimeout: 5 * time.Second, Username: user, Password: pw, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// denied: etcd refused the request for lack of permission (a cancelled
// watch reports it only as text: its cancel reason).
func denied(err error) bool {
	return errors.Is(rpctypes.Error(err), rpctypes.ErrPermissionDenied) || errors.Is(rpctypes.Error(err), rpctypes.ErrUserEmpty) ||
		(err != nil && strings.Contains(err.Error(), "etcdserver: permission denied"))
}

// TestClusterUserIsConfinedToItsCluster: with authentication on, a cluster's
// user reads and writes its own prefix and nothing else: not a sibling
// cluster whose name extends its own, not the whole keyspace, not keys of
// the control plane, not users or roles, and it cannot turn auth off; an
// anonymous client reads nothing.
func TestClusterUserIsConfinedToItsCluster(t *testing.T) {
	u, root, _ := startAuthEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := root.EnsureClusterUser(ctx, "agent-a", "pw-a", keysA); err != nil {
		t.Fatal(err)
	}
	if err := root.EnsureClusterUser(ctx, "agent-b", "pw-b", keysB); err != nil {
		t.Fatal(err)
	}
	// Idempotent: a retried provisioning step changes nothing.
	if err := root.EnsureClusterUser(ctx, "agent-a", "pw-a", keysA); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{prefixA + "leader", "a"}, {prefixB + "leader", "b"}, {"/dbpilot/control/secret", "cp"}} {
		if _, err := root.Raw().Put(ctx, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	a := login(t, u, "agent-a", "pw-a")

	// Its own prefix: read, write, delete, range.
	if _, err := a.Put(ctx, prefixA+"members/node1", "x"); err != nil {
		t.Fatalf("own put: %v", err)
	}
	if r, err := a.Get(ctx, prefixA, clientv3.WithPrefix()); err != nil || len(r.Kvs) != 2 {
		t.Fatalf("own range: %v %v", r, err)
	}
	if _, err := a.Delete(ctx, prefixA+"members/node1"); err != nil {
		t.Fatalf("own delete: %v", err)
	}

	// Everything else: refused.
	for name, op := range map[string]func() error{
		"get other cluster key": func() error { _, err := a.Get(ctx, prefixB+"leader"); return err },
		"range other cluster":   func() error { _, err := a.Get(ctx, prefixB, clientv3.WithPrefix()); return err },
		"put other cluster":     func() error { _, err := a.Put(ctx, prefixB+"leader", "evil"); return err },
		"delete other cluster":  func() error { _, err := a.Delete(ctx, prefixB, clientv3.WithPrefix()); return err },
		"range the namespace":   func() error { _, err := a.Get(ctx, "/dbpilot/v1/clusters/acme/", clientv3.WithPrefix()); return err },
		"range everything":      func() error { _, err := a.Get(ctx, "", clientv3.WithFromKey()); return err },
		"get control plane key": func() error { _, err := a.Get(ctx, "/dbpilot/control/secret"); return err },
		"put outside":           func() error { _, err := a.Put(ctx, "/dbpilot/v1/clusters/acme/default/billing", "x"); return err },
		"txn touching other": func() error {
			_, err := a.Txn(ctx).Then(clientv3.OpPut(prefixA+"x", "1"), clientv3.OpPut(prefixB+"x", "1")).Commit()
			return err
		},
		"list users": func() error { _, err := a.UserList(ctx); return err },
		"add user":   func() error { _, err := a.UserAdd(ctx, "mallory", "x"); return err },
		"grant itself more": func() error {
			_, err := a.RoleGrantPermission(ctx, "agent-a", "", "\x00", clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		"disable auth":        func() error { _, err := a.AuthDisable(ctx); return err },
		"watch other cluster": func() error { return watchErr(ctx, a, prefixB) },
		"compare on other cluster": func() error {
			_, err := a.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(prefixB+"leader"), "=", 0)).Commit()
			return err
		},
	} {
		if err := op(); !denied(err) {
			t.Errorf("%s as agent-a: err %v, want permission denied", name, err)
		}
	}
	if r, err := root.Raw().Get(ctx, prefixB+"leader"); err != nil || string(r.Kvs[0].Value) != "b" {
		t.Fatalf("other cluster's leader changed: %v %v", r, err)
	}

	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{u}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.Get(ctx, prefixA+"leader"); !denied(err) {
		t.Errorf("anonymous get: %v, want refused", err)
	}
	if _, err := clientv3.New(clientv3.Config{Endpoints: []string{u}, DialTimeout: 5 * time.Second, Username: "agent-a", Password: "pw-b", Logger: zap.NewNop()}); err == nil {
		t.Errorf("agent-a logged in with agent-b's password")
	}
}

// watchErr opens a watch on prefix and returns its first error (nil if it
// opened).
func watchErr(ctx context.Context, cli *clientv3.Client, prefix string) error {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for resp := range cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify()) {
		return resp.Err()
	}
	return wctx.Err()
}

// TestEnsureClusterUserRevokesStrayGrants: a role widened by hand (or by
// an older version) is narrowed back to the cluster prefix, and a stray
// role of the user is taken away.
func TestEnsureClusterUserRevokesStrayGrants(t *testing.T) {
	u, root, _ := startAuthEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := root.EnsureClusterUser(ctx, "agent-a", "pw-a", keysA); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Raw().RoleGrantPermission(ctx, "agent-a", "/", "0", clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Raw().RoleAdd(ctx, "wide"); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Raw().RoleGrantPermission(ctx, "wide", "/", "0", clientv3.PermissionType(clientv3.PermRead)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Raw().UserGrantRole(ctx, "agent-a", "wide"); err != nil {
		t.Fatal(err)
	}
	a := login(t, u, "agent-a", "pw-a")
	if _, err := a.Get(ctx, prefixB+"leader"); err != nil {
		t.Fatalf("widened role does not read the other cluster (test setup): %v", err)
	}
	if err := root.EnsureClusterUser(ctx, "agent-a", "pw-a", keysA); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(ctx, prefixB+"leader"); !denied(err) {
		t.Fatalf("after EnsureClusterUser: %v, want permission denied", err)
	}
	if _, err := a.Put(ctx, prefixA+"term", "1"); err != nil {
		t.Fatalf("own prefix after EnsureClusterUser: %v", err)
	}
}

// TestDeleteClusterUser: deleting a cluster's user removes the user and its
// role, its credentials stop working at once, the other cluster's user is
// untouched, and a repeated delete succeeds. root cannot be deleted.
func TestDeleteClusterUser(t *testing.T) {
	u, root, _ := startAuthEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, x := range []struct {
		user, pw string
		keys     keyspace.Keys
	}{{"agent-a", "pw-a", keysA}, {"agent-b", "pw-b", keysB}} {
		if err := root.EnsureClusterUser(ctx, x.user, x.pw, x.keys); err != nil {
			t.Fatal(err)
		}
	}
	a := login(t, u, "agent-a", "pw-a")
	if _, err := a.Put(ctx, prefixA+"term", "1"); err != nil {
		t.Fatal(err)
	}
	if err := root.DeleteClusterUser(ctx, "agent-a"); err != nil {
		t.Fatal(err)
	}
	for _, exists := range []func(context.Context, string) (bool, error){root.UserExists, root.RoleExists} {
		if ok, err := exists(ctx, "agent-a"); err != nil || ok {
			t.Fatalf("agent-a still exists (%v, %v)", ok, err)
		}
		if ok, err := exists(ctx, "agent-b"); err != nil || !ok {
			t.Fatalf("agent-b gone (%v, %v)", ok, err)
		}
	}
	if _, err := a.Put(ctx, prefixA+"term", "2"); err == nil {
		t.Fatal("a deleted user's open session still writes")
	}
	if _, err := clientv3.New(clientv3.Config{Endpoints: []string{u}, DialTimeout: 5 * time.Second, Username: "agent-a", Password: "pw-a", Logger: zap.NewNop()}); err == nil {
		t.Fatal("a deleted user logs in")
	}
	if err := root.DeleteClusterUser(ctx, "agent-a"); err != nil {
		t.Fatalf("repeated delete: %v", err)
	}
	if err := root.DeleteClusterUser(ctx, admin.RootUser); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("delete root: %v", err)
	}
}
