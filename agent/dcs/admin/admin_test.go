package admin_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/internal/embedetcd"
	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// startAdmin runs a real embedded etcd (no authentication) and dials it.
func startAdmin(t *testing.T) *admin.Admin {
	t.Helper()
	e, u, err := embedetcd.Start(filepath.Join(t.TempDir(), "etcd"), "default", 0, zap.NewNop(), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	a, err := admin.Dial(dcs.Options{Endpoints: []string{u}}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// TestDialErrors: bad input names the option to fix.
func TestDialErrors(t *testing.T) {
	if _, err := admin.Dial(dcs.Options{}, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "endpoints") {
		t.Errorf("no endpoints: %v, want an error naming the endpoints", err)
	}
	missing := filepath.Join(t.TempDir(), "ca.pem")
	if _, err := admin.Dial(dcs.Options{Endpoints: []string{"https://127.0.0.1:1"}, CAFile: missing}, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Errorf("missing CA file: %v, want an error naming ca_file", err)
	}
}

// TestReadReportsMalformed: Read decodes the documents of a cluster and
// reports every malformed value with its key; other clusters are not read.
func TestReadReportsMalformed(t *testing.T) {
	a := startAdmin(t)
	ctx := context.Background()
	k := keyspace.NewKeys("acme", "default", "billing")
	other := keyspace.NewKeys("acme", "default", "billing2")
	raw := a.Raw()
	for key, v := range map[string]string{
		k.Term():              "4",
		k.Leader():            keyspace.Encode(keyspace.LeaderRecord{Node: "n1", Term: 4}),
		k.Member("n1"):        keyspace.Encode(keyspace.Member{Node: "n1", Role: "primary"}),
		k.Member("n2"):        `{"node":"n2","role":`,
		k.History(4):          `["not","a","record"]`,
		other.Leader():        keyspace.Encode(keyspace.LeaderRecord{Node: "x9", Term: 1}),
		k.BackupRequest("r1"): keyspace.Encode(keyspace.BackupRequest{Action: keyspace.ActionBackup}),
	} {
		if _, err := raw.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}
	s, err := a.Read(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if s.Term != 4 || s.Leader == nil || s.Leader.Node != "n1" || s.Members["n1"].Role != "primary" || s.Members["n1"].Revision == 0 {
		t.Errorf("snapshot %+v", s)
	}
	if _, ok := s.BackupRequests["r1"]; !ok {
		t.Errorf("backup requests %v", s.BackupRequests)
	}
	if len(s.Errors) != 2 || s.Err(k.Member("n2")) == nil || s.Err(k.History(4)) == nil {
		t.Fatalf("errors %v, want member n2 and history 4", s.Errors)
	}
	for _, err := range s.Errors {
		var de *keyspace.DecodeError
		if !errors.As(err, &de) || !strings.HasPrefix(de.Key, k.Prefix()) {
			t.Errorf("error %v does not name a key of the cluster", err)
		}
	}
}

// TestRequestSwitchoverIsGuarded: a request is written only when there is
// no switchover key; a hand-over in progress is never overwritten, and a
// replacement needs the revision of the record it replaces.
func TestRequestSwitchoverIsGuarded(t *testing.T) {
	a := startAdmin(t)
	ctx := context.Background()
	k := keyspace.NewKeys("acme", "default", "billing")
	if ok, err := a.RequestSwitchover(ctx, k, "n1", "n2", "kernel upgrade"); err != nil || !ok {
		t.Fatalf("first request: %v %v", ok, err)
	}
	s, err := a.Read(ctx, k)
	if err != nil || s.Switchover == nil || s.Switchover.From != "n1" || s.Switchover.To != "n2" || s.Switchover.State != keyspace.SwitchoverRequested ||
		s.Switchover.Reason != "kernel upgrade" || s.Switchover.RequestedMS == 0 {
		t.Fatalf("request as read: %+v %v", s.Switchover, err)
	}
	// The old primary hands over: its record must survive a new request.
	ho := keyspace.Switchover{From: "n1", To: "n2", State: keyspace.SwitchoverHandover, FinalLSN: 99, HandoverMS: time.Now().UnixMilli()}
	if _, err := a.Raw().Put(ctx, k.Switchover(), keyspace.Encode(ho)); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.RequestSwitchover(ctx, k, "n1", "n3", "again"); err != nil || ok {
		t.Fatalf("request over a hand-over: %v %v, want not written", ok, err)
	}
	if ok, err := a.ReplaceSwitchover(ctx, k, s.SwitchRev, "n1", "n3", "stale revision"); err != nil || ok {
		t.Fatalf("replace at a stale revision: %v %v, want not written", ok, err)
	}
	s, _ = a.Read(ctx, k)
	if s.Switchover == nil || s.Switchover.State != keyspace.SwitchoverHandover || s.Switchover.FinalLSN != 99 {
		t.Fatalf("hand-over overwritten: %+v", s.Switchover)
	}
	if ok, err := a.ReplaceSwitchover(ctx, k, s.SwitchRev, "", "n3", "expired"); err != nil || !ok {
		t.Fatalf("replace at the record's revision: %v %v", ok, err)
	}
	if _, err := a.ReplaceSwitchover(ctx, k, 0, "", "", ""); err == nil {
		t.Error("ReplaceSwitchover with revision 0 succeeded")
	}
}

// TestSpecBackupAndDeletes: the other writes of the admin side.
func TestSpecBackupAndDeletes(t *testing.T) {
	a := startAdmin(t)
	ctx := context.Background()
	k := keyspace.NewKeys("acme", "default", "billing")
	if err := a.PutSpec(ctx, k, keyspace.Spec{SynchronousMode: "sometimes"}); err == nil || !strings.Contains(err.Error(), "synchronous_mode") {
		t.Errorf("invalid spec: %v, want an error naming synchronous_mode", err)
	}
	if err := a.PutSpec(ctx, k, keyspace.Spec{Replicas: 2, SynchronousMode: "on", Nodes: []string{"node1", "node2"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.RequestBackup(ctx, k, "op-1", keyspace.BackupRequest{Action: "shred"}); err == nil || !strings.Contains(err.Error(), "action") {
		t.Errorf("unknown action: %v, want an error naming the action", err)
	}
	if err := a.RequestBackup(ctx, k, "op-1", keyspace.BackupRequest{Action: keyspace.ActionBackup, Job: "daily"}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := a.BackupRequestClaim(ctx, k, "op-1"); err != nil || ok {
		t.Fatalf("claim before any agent: %v %v", ok, err)
	}
	if _, err := a.Raw().Put(ctx, k.BackupRequestClaim("op-1"), "node2 succeeded"); err != nil {
		t.Fatal(err)
	}
	if c, ok, err := a.BackupRequestClaim(ctx, k, "op-1"); err != nil || !ok || c.Node != "node2" || c.Status != "succeeded" {
		t.Fatalf("claim: %+v %v %v", c, ok, err)
	}
	if _, err := a.Raw().Put(ctx, k.Member("node3"), keyspace.Encode(keyspace.Member{Node: "node3"})); err != nil {
		t.Fatal(err)
	}
	s, err := a.Read(ctx, k)
	if err != nil || s.Spec == nil || s.Spec.SynchronousMode != "on" || s.Spec.UpdatedMS == 0 || s.BackupRequests["op-1"].Job != "daily" ||
		s.BackupRequests["op-1"].RequestedMS == 0 || len(s.Members) != 1 {
		t.Fatalf("after writes: %+v %v", s, err)
	}
	if err := a.DeleteBackupRequest(ctx, k, "op-1"); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteMember(ctx, k, "node3"); err != nil {
		t.Fatal(err)
	}
	if s, _ := a.Read(ctx, k); len(s.BackupRequests) != 0 || len(s.Members) != 0 || s.Spec == nil {
		t.Fatalf("after deletes: %+v", s)
	}
	if err := a.DeleteCluster(ctx, k); err != nil {
		t.Fatal(err)
	}
	if s, _ := a.Read(ctx, k); s.Spec != nil {
		t.Fatalf("after DeleteCluster: %+v", s)
	}
}

// TestWaitWakesOnWatch: Wait returns soon after the change that satisfies
// its condition, well before its poll interval, and returns ctx's error
// with the last snapshot when the condition never holds.
func TestWaitWakesOnWatch(t *testing.T) {
	a := startAdmin(t)
	ctx := context.Background()
	k := keyspace.NewKeys("acme", "default", "billing")
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, _ = a.Raw().Put(ctx, k.Leader(), keyspace.Encode(keyspace.LeaderRecord{Node: "n2", Term: 2}))
	}()
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	s, err := a.Wait(wctx, k, time.Minute, func(s keyspace.Snapshot) bool { return s.Leader != nil })
	if err != nil || s.Leader == nil || s.Leader.Node != "n2" {
		t.Fatalf("wait: %+v %v", s.Leader, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Wait took %s: the watch did not wake it (poll interval 1 min)", d)
	}
	sctx, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer scancel()
	s, err = a.Wait(sctx, k, 100*time.Millisecond, func(keyspace.Snapshot) bool { return false })
	if !errors.Is(err, context.DeadlineExceeded) || s.Leader == nil {
		t.Fatalf("never: %+v %v, want the last snapshot and the deadline", s.Leader, err)
	}
}
