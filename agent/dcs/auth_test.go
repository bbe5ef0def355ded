package dcs

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/internal/embedetcd"
	"github.com/dbpilot/dbpilot/internal/localhost"
	"github.com/dbpilot/dbpilot/internal/testutil"
)

// startAuthEtcd runs a real embedded etcd with authentication on, with one
// restricted user per given cluster (password "pw-"+cluster) whose role
// covers only that cluster's prefix, and returns its URL and a root client.
func startAuthEtcd(t *testing.T, clusters ...string) (string, *clientv3.Client) {
	t.Helper()
	e, u, root := startAuthEtcdAt(t, t.TempDir(), 0, clusters...)
	t.Cleanup(e.Close)
	t.Cleanup(func() { root.Close() })
	return u, root
}

// startAuthEtcdAt is startAuthEtcd on data directory dir and client port
// (0: a free one), leaving the server and the root client to the caller.
func startAuthEtcdAt(t *testing.T, dir string, port int, clusters ...string) (*embed.Etcd, string, *clientv3.Client) {
	t.Helper()
	e, u, err := embedetcd.Start(filepath.Join(dir, "etcd"), "default", port, zap.NewNop(), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pw, err := embedetcd.EnableAuth(ctx, u, filepath.Join(dir, "root.password"), zap.NewNop())
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{u}, DialTimeout: 5 * time.Second, Username: embedetcd.RootUser, Password: pw, Logger: zap.NewNop()})
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	for _, c := range clusters {
		addClusterUser(ctx, t, root, c)
	}
	return e, u, root
}

// addClusterUser creates user and role "agent-"+cluster (password
// "pw-"+cluster) whose permission covers only the cluster's prefix: what
// admin.EnsureClusterUser does (admin imports this package, so this
// package's tests cannot use it).
func addClusterUser(ctx context.Context, t *testing.T, root *clientv3.Client, cluster string) {
	t.Helper()
	name, p := "agent-"+cluster, NewKeys("ns", "proj", cluster).Prefix()
	if _, err := root.RoleAdd(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := root.RoleGrantPermission(ctx, name, p, clientv3.GetPrefixRangeEnd(p), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.UserAdd(ctx, name, "pw-"+cluster); err != nil {
		t.Fatal(err)
	}
	if _, err := root.UserGrantRole(ctx, name, name); err != nil {
		t.Fatal(err)
	}
}

func dialAs(t *testing.T, ep, cluster, user, password string) *Client {
	t.Helper()
	c, err := Dial(Options{Endpoints: []string{ep}, DialTimeout: 2 * time.Second, RequestTimeout: 2 * time.Second, TTL: 5 * time.Second,
		Username: user, Password: password}, NewKeys("ns", "proj", cluster), zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// TestRestrictedUserRunsTheHAPath: an agent whose etcd user's role covers
// only its cluster's prefix can do everything the agent does (docs/
// keyspace.md): grant and renew its lease, take the bootstrap and failover
// mutexes (concurrency.Mutex), run the Bootstrap, UpdateLeader,
// PutIfLeader, ReleaseLeader and ClaimLeader transactions, put its member
// key, read its snapshot, watch its prefix, claim and complete a backup
// occurrence, read and delete backup requests, request a switchover, and
// revoke its lease at shutdown. Another cluster's agent cannot read or
// write any of it, nor revoke its lease.
func TestRestrictedUserRunsTheHAPath(t *testing.T) {
	ep, root := startAuthEtcd(t, "c1", "c2")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := dialAs(t, ep, "c1", "agent-c1", "pw-c1")
	b := dialAs(t, ep, "c1", "agent-c1", "pw-c1")
	k := a.Keys()

	watched := make(chan string, 64)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	sig := a.Watch(wctx, func(e Event) bool {
		select {
		case watched <- e.Key:
		default:
		}
		return true
	})
	go func() {
		for range sig {
		}
	}()

	// Leases: grant (Session), keepalive (Renew).
	for _, c := range []*Client{a, b} {
		if _, _, err := c.Session(ctx); err != nil {
			t.Fatalf("session: %v", err)
		}
		if err := c.Renew(ctx); err != nil {
			t.Fatalf("renew: %v", err)
		}
		if c.LeaseLeft(time.Now()) <= 0 {
			t.Fatal("no proven lease after renew")
		}
	}
	// Member keys on the lease.
	if err := a.PutMember(ctx, Member{Node: "n1", Role: "replica"}); err != nil {
		t.Fatalf("put member: %v", err)
	}
	// Bootstrap mutex: a holds it, b finds it taken.
	unlock, err := a.TryLock(ctx, k.BootstrapLock())
	if err != nil {
		t.Fatalf("bootstrap lock: %v", err)
	}
	if _, err := b.TryLock(ctx, k.BootstrapLock()); !errors.Is(err, ErrLocked) {
		t.Fatalf("second bootstrap lock: %v, want ErrLocked", err)
	}
	rev, ok, err := a.Bootstrap(ctx, "sysid", LeaderRecord{Node: "n1"}, ClusterDocument{Leader: "n1"})
	if err != nil || !ok {
		t.Fatalf("bootstrap txn: %v %v", ok, err)
	}
	unlock()
	if _, ok, err := b.Bootstrap(ctx, "sysid2", LeaderRecord{Node: "n2"}, ClusterDocument{Leader: "n2"}); err != nil || ok {
		t.Fatalf("second bootstrap: %v %v, want lost", ok, err)
	}
	if ok, err := a.UpdateLeader(ctx, LeaderRecord{Node: "n1", Term: 1, LSN: 42}, rev); err != nil || !ok {
		t.Fatalf("update leader: %v %v", ok, err)
	}
	if ok, err := a.PutIfLeader(ctx, rev, k.Sync(), SyncState{}); err != nil || !ok {
		t.Fatalf("put if leader: %v %v", ok, err)
	}
	snap, err := b.Snapshot(ctx)
	if err != nil || snap.Leader == nil || snap.Leader.Node != "n1" || snap.Term != 1 || snap.OptimeLSN != 42 {
		t.Fatalf("snapshot: %+v %v", snap, err)
	}
	if _, err := b.Raw().Put(ctx, k.Switchover(), `{"from":"n1","to":"n2","state":"requested"}`); err != nil {
		t.Fatalf("request switchover: %v", err)
	}
	if ok, err := a.ReleaseLeader(ctx, rev, OpDelete(k.Switchover())); err != nil || !ok {
		t.Fatalf("release leader: %v %v", ok, err)
	}
	// Failover mutex and a claim by the other agent.
	unlock, err = b.TryLock(ctx, k.FailoverLock())
	if err != nil {
		t.Fatalf("failover lock: %v", err)
	}
	snap, err = b.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.ClaimLeader(ctx, LeaderRecord{Node: "n2"}, snap.Term, snap.TermRev, HistoryRecord{Reason: "failover"}); err != nil || !ok {
		t.Fatalf("claim leader: %v %v", ok, err)
	}
	unlock()
	// Backup claims and on-demand requests.
	if ok, err := a.Claim(ctx, k.BackupClaim("daily", 1700000000), "n1"); err != nil || !ok {
		t.Fatalf("backup claim: %v %v", ok, err)
	}
	if ok, err := b.Claim(ctx, k.BackupClaim("daily", 1700000000), "n2"); err != nil || ok {
		t.Fatalf("second backup claim: %v %v, want lost", ok, err)
	}
	if err := a.CompleteClaim(ctx, k.BackupClaim("daily", 1700000000), "n1 succeeded", time.Hour); err != nil {
		t.Fatalf("complete claim: %v", err)
	}
	if _, err := root.Put(ctx, k.BackupRequests()+"op-1", `{"action":"backup"}`); err != nil {
		t.Fatal(err)
	}
	if reqs, err := a.BackupRequests(ctx); err != nil || len(reqs) != 1 {
		t.Fatalf("backup requests: %v %v", reqs, err)
	}
	if ok, err := a.Claim(ctx, k.BackupRequestClaim("op-1"), "n1"); err != nil || !ok {
		t.Fatalf("request claim: %v %v", ok, err)
	}
	if err := a.DeleteBackupRequest(ctx, "op-1"); err != nil {
		t.Fatalf("delete backup request: %v", err)
	}
	// The watch saw the prefix's changes.
	deadline := time.After(10 * time.Second)
	for seen := map[string]bool{}; !seen["leader"] || !seen["term"]; {
		select {
		case key := <-watched:
			seen[key] = true
		case <-deadline:
			t.Fatalf("watch: saw %v, want leader and term", seen)
		}
	}

	// Another cluster's agent: nothing of c1 is readable or writable, and
	// it cannot revoke c1's lease.
	other := dialAs(t, ep, "c2", "agent-c2", "pw-c2")
	if _, _, err := other.Session(ctx); err != nil {
		t.Fatalf("c2 session: %v", err)
	}
	raw := other.Raw()
	for name, op := range map[string]func() error{
		"read c1 leader":  func() error { _, err := raw.Get(ctx, k.Leader()); return err },
		"range c1":        func() error { _, err := raw.Get(ctx, k.Prefix(), clientv3.WithPrefix()); return err },
		"delete c1 key":   func() error { _, err := raw.Delete(ctx, k.Leader()); return err },
		"write c1 term":   func() error { _, err := raw.Put(ctx, k.Term(), "99"); return err },
		"revoke c1 lease": func() error { _, err := raw.Revoke(ctx, b.Lease()); return err },
		"lock in c1": func() error {
			_, err := raw.Txn(ctx).Then(clientv3.OpPut(k.FailoverLock()+"/x", "")).Commit()
			return err
		},
	} {
		if err := op(); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s as c2's agent: %v, want permission denied", name, err)
		}
	}
	if r, err := root.Get(ctx, k.Leader()); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("c1 leader after c2's attempts: %v %v", r, err)
	}

	// Shutdown revokes the lease: its member key goes at once.
	if err := a.Close(ctx); err != nil {
		t.Fatalf("close (revoke): %v", err)
	}
	if r, err := root.Get(ctx, k.Member("n1")); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("member key after revoke: %v %v", r, err)
	}
}

// TestLoginWhenEtcdComesBack: an agent with a login started while etcd is
// down must start and retry like one without a login (clientv3.New
// authenticates at once and fails then): Dial succeeds, Session fails
// while etcd is down and logs in once it is back; then the HA path works.
// A wrong password with etcd up stays a Dial error.
func TestLoginWhenEtcdComesBack(t *testing.T) {
	dir := t.TempDir()
	port, err := localhost.FreePort("")
	if err != nil {
		t.Fatal(err)
	}
	e, u, root := startAuthEtcdAt(t, dir, port, "late")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := Dial(Options{Endpoints: []string{u}, DialTimeout: 2 * time.Second, RequestTimeout: 2 * time.Second, TTL: 5 * time.Second,
		Username: "agent-late", Password: "wrong"}, NewKeys("ns", "proj", "late"), zap.NewNop()); err == nil {
		t.Fatal("Dial with a wrong password and etcd up succeeded")
	}
	root.Close()
	e.Close() // etcd down; its data (users, roles, auth on) stays in dir

	c := dialAs(t, u, "late", "agent-late", "pw-late")
	if _, _, err := c.Session(ctx); err == nil {
		t.Fatal("Session succeeded with etcd down")
	}
	e, _, err = embedetcd.Start(filepath.Join(dir, "etcd"), "default", port, zap.NewNop(), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	testutil.Eventually(t, 20*time.Second, 200*time.Millisecond, "login once etcd is back", func() error {
		_, _, err := c.Session(ctx)
		return err
	})
	if err := c.PutMember(ctx, Member{Node: "n1", Role: "replica"}); err != nil {
		t.Fatalf("member key after the late login: %v", err)
	}
	snap, err := c.Snapshot(ctx)
	if err != nil || snap.Members["n1"].Role != "replica" {
		t.Fatalf("snapshot after the late login: %+v, %v", snap.Members, err)
	}
}
