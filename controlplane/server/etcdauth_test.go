package server_test

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
	"gopkg.in/yaml.v3"

	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/server"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/internal/embedetcd"
	"github.com/dbpilot/dbpilot/internal/testutil"
)

// agentEtcd is the etcd section of a node's rendered agent config.
type agentEtcd struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// nodeEtcdLogin reads the etcd user and password a process node's agent
// runs with, from its agent.yaml and password file (which must be 0600).
func nodeEtcdLogin(t *testing.T, s *server.Server, clusterID, node string) (user, password string) {
	t.Helper()
	h := handlesOf(t, s, clusterID)[node]
	b, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Etcd agentEtcd `yaml:"etcd"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Etcd.Username == "" || cfg.Etcd.PasswordFile == "" {
		t.Fatalf("%s/%s agent config has no etcd credentials:\n%s", clusterID, node, b)
	}
	fi, err := os.Stat(cfg.Etcd.PasswordFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("etcd password file %s: %v %v, want mode 0600", cfg.Etcd.PasswordFile, fi, err)
	}
	pw, err := os.ReadFile(cfg.Etcd.PasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Etcd.Username, strings.TrimSpace(string(pw))
}

func etcdLogin(url, user, password string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, Username: user, Password: password, Logger: zap.NewNop()})
}

func permissionDenied(err error) bool {
	return errors.Is(rpctypes.Error(err), rpctypes.ErrPermissionDenied) || errors.Is(rpctypes.Error(err), rpctypes.ErrUserEmpty)
}

// TestClusterEtcdCredentials: the dev default runs etcd with
// authentication (root password 0600 in the data folder; anonymous clients
// read nothing; a restarted server logs in again), every cluster's agents
// run with their own etcd user (a real two-node cluster bootstraps and
// replicates with it), one cluster's credentials cannot read or write
// another cluster's keys, cloud-init carries the cluster's credentials and
// not root's, and deleting a cluster deletes its user and role and
// nothing of the other cluster.
func TestClusterEtcdCredentials(t *testing.T) {
	dir := testDir(t)
	s, c := startServer(t, dir)
	defer func() { s.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	rootFile := filepath.Join(dir, server.EtcdRootPasswordFile)
	rootPW, err := os.ReadFile(rootFile)
	if fi, serr := os.Stat(rootFile); err != nil || serr != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("root password file %s: %v %v, want mode 0600", rootFile, fi, err)
	}
	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{s.EtcdURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.Get(ctx, "/dbpilot/", clientv3.WithPrefix()); !permissionDenied(err) {
		t.Fatalf("anonymous read of the dev etcd: %v, want refused", err)
	}

	ids := map[string]string{}
	for name, replicas := range map[string]int{"ledger": 2, "ledger2": 1} {
		var o op
		if code := c.do("POST", "/v1/namespaces/acme/clusters", map[string]any{"name": name, "replicas": replicas, "plan": "small"}, &o); code != 202 {
			t.Fatalf("create %s: %d %+v", name, code, o)
		}
		ids[name] = o.ClusterID
		if done := c.waitOp("acme", o.ID, 4*time.Minute); done.State != store.OpSucceeded {
			t.Fatalf("create %s failed: %+v", name, done)
		}
	}
	// Both are Ready: the agents bootstrapped, and ledger's replica
	// streams, through their restricted users.
	var cl clusterOut
	if code := c.do("GET", "/v1/namespaces/acme/clusters/ledger", nil, &cl); code != 200 || cl.Phase != store.PhaseReady || cl.Primary == "" {
		t.Fatalf("ledger: %d %+v", code, cl)
	}
	testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, "ledger's primary reports 1 streaming replica", func() error {
		return primaryStreaming(t, s.Process, cl, handlesOf(t, s, ids["ledger"]), 1)
	})

	user, pw := nodeEtcdLogin(t, s, ids["ledger"], "node1")
	if user != controlplane.AgentEtcdUser(ids["ledger"]) {
		t.Fatalf("ledger's agents log in as %q, want %q", user, controlplane.AgentEtcdUser(ids["ledger"]))
	}
	if u2, _ := nodeEtcdLogin(t, s, ids["ledger"], "node2"); u2 != user {
		t.Fatalf("ledger's nodes use different users: %s, %s", user, u2)
	}
	if u2, _ := nodeEtcdLogin(t, s, ids["ledger2"], "node1"); u2 == user {
		t.Fatalf("two clusters share the etcd user %s", user)
	}
	if pw == strings.TrimSpace(string(rootPW)) {
		t.Fatal("an agent got the root password")
	}
	led, err := etcdLogin(s.EtcdURL, user, pw)
	if err != nil {
		t.Fatalf("login as ledger's agents: %v", err)
	}
	defer led.Close()
	own := "/dbpilot/v1/clusters/acme/default/ledger/"
	other := "/dbpilot/v1/clusters/acme/default/ledger2/"
	if r, err := led.Get(ctx, own+"leader"); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("ledger's user reads its leader: %v %v", r, err)
	}
	for what, op := range map[string]func() error{
		"read ledger2's leader": func() error { _, err := led.Get(ctx, other+"leader"); return err },
		"range ledger2":         func() error { _, err := led.Get(ctx, other, clientv3.WithPrefix()); return err },
		"write ledger2's spec":  func() error { _, err := led.Put(ctx, other+"spec", "{}"); return err },
		"delete ledger2":        func() error { _, err := led.Delete(ctx, other, clientv3.WithPrefix()); return err },
		"range the namespace":   func() error { _, err := led.Get(ctx, "/dbpilot/v1/clusters/acme/", clientv3.WithPrefix()); return err },
		"list etcd users":       func() error { _, err := led.UserList(ctx); return err },
	} {
		if err := op(); !permissionDenied(err) {
			t.Errorf("%s with ledger's credentials: %v, want permission denied", what, err)
		}
	}

	// cloud-init carries the cluster's own etcd user, never root's password.
	var ci struct {
		UserData string `json:"user_data"`
	}
	if code := c.do("GET", "/v1/namespaces/acme/clusters/ledger/nodes/node1/cloud-init", nil, &ci); code != 200 {
		t.Fatalf("cloud-init: %d", code)
	}
	if !strings.Contains(ci.UserData, "username: "+user) || !strings.Contains(ci.UserData, "/etc/dbpilot/etcd-password") ||
		!strings.Contains(ci.UserData, pw) || strings.Contains(ci.UserData, strings.TrimSpace(string(rootPW))) {
		t.Fatalf("cloud-init user-data lacks the cluster's etcd credentials or has root's:\n%s", ci.UserData)
	}

	// A restarted dev server logs in to its etcd again (auth stays on).
	s.Close()
	s, c = startServer(t, dir)

	// Deleting ledger deletes its user and role, not ledger2's.
	var o op
	if code := c.do("DELETE", "/v1/namespaces/acme/clusters/ledger", nil, &o); code != 202 {
		t.Fatalf("delete: %d", code)
	}
	if done := c.waitOp("acme", o.ID, 2*time.Minute); done.State != store.OpSucceeded {
		t.Fatalf("delete failed: %+v", done)
	}
	for _, exists := range []func(context.Context, string) (bool, error){s.Etcd.UserExists, s.Etcd.RoleExists} {
		if ok, err := exists(ctx, user); err != nil || ok {
			t.Fatalf("ledger's etcd user/role after delete: exists=%v err=%v", ok, err)
		}
		if ok, err := exists(ctx, controlplane.AgentEtcdUser(ids["ledger2"])); err != nil || !ok {
			t.Fatalf("ledger2's etcd user/role after ledger's delete: exists=%v err=%v", ok, err)
		}
	}
	if cli, err := etcdLogin(s.EtcdURL, user, pw); err == nil {
		cli.Close()
		t.Fatal("a deleted cluster's etcd credentials still log in")
	}
	if code := c.do("GET", "/v1/namespaces/acme/clusters/ledger2", nil, &cl); code != 200 || cl.Phase != store.PhaseReady {
		t.Fatalf("ledger2 after ledger's delete: %d %+v", code, cl)
	}
	if on, err := s.Etcd.AuthEnabled(ctx); err != nil || !on {
		t.Fatalf("etcd auth status after restart: %v %v", on, err)
	}
}

// TestEmbeddedEtcdFromBeforeAuthStaysOpen: an embedded etcd an older
// server created without authentication (its agents have no etcd
// credentials) is not secured behind their back; a new one is.
func TestEmbeddedEtcdFromBeforeAuthStaysOpen(t *testing.T) {
	dir := testDir(t)
	e, _, err := embedetcd.Start(filepath.Join(dir, "etcd"), "dbpilot-server", 0, zap.NewNop(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	s, _ := startServer(t, dir)
	defer s.Close()
	if _, err := os.Stat(filepath.Join(dir, server.EtcdRootPasswordFile)); !os.IsNotExist(err) {
		t.Fatalf("root password file of a pre-auth etcd: %v, want none", err)
	}
	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{s.EtcdURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := anon.Get(ctx, "/dbpilot/", clientv3.WithPrefix()); err != nil {
		t.Fatalf("pre-auth etcd refuses an anonymous read: %v", err)
	}
}

// TestLoadConfigEtcdAuth: the etcd login keys are checked together.
func TestLoadConfigEtcdAuth(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"ok", "data_dir: /tmp/x\netcd_endpoints: [https://e:2379]\netcd_username: root\netcd_password_file: /p\netcd_tls: {ca_file: /ca}\n", ""},
		{"user without password", "data_dir: /tmp/x\netcd_endpoints: [http://e:2379]\netcd_username: root\n", "etcd_username and etcd_password_file go together"},
		{"user on embedded", "data_dir: /tmp/x\netcd_username: root\netcd_password_file: /p\n", "only with etcd_endpoints"},
		{"cert without key", "data_dir: /tmp/x\netcd_endpoints: [https://e:2379]\netcd_tls: {cert_file: /c}\n", "cert_file and key_file go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "server.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := server.LoadConfig(p)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("LoadConfig: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("LoadConfig error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
