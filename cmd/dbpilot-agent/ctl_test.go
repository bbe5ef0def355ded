package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/internal/embedetcd"
	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// TestClusterCmd runs `dbpilot-agent cluster list|switchover` against a
// real embedded etcd with authentication, logged in as the cluster's own
// user: the table lists the members, a malformed member key is reported,
// the switchover request is written once (compare-and-swap) and a second
// one is refused; bad flags exit 2 naming the flag.
func TestClusterCmd(t *testing.T) {
	dir := t.TempDir()
	e, u, err := embedetcd.Start(filepath.Join(dir, "etcd"), "default", 0, zap.NewNop(), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rootPW, err := embedetcd.EnableAuth(ctx, u, filepath.Join(dir, "root.password"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	root, err := admin.Dial(dcs.Options{Endpoints: []string{u}, Username: embedetcd.RootUser, Password: rootPW}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	k := keyspace.NewKeys("prod", "blue", "billing")
	if err := root.EnsureClusterUser(ctx, "agent-billing", "pw-billing", k); err != nil {
		t.Fatal(err)
	}
	for key, v := range map[string]string{
		k.Term():        "3",
		k.Leader():      keyspace.Encode(keyspace.LeaderRecord{Node: "db1", Term: 3}),
		k.Member("db1"): keyspace.Encode(keyspace.Member{Node: "db1", Role: "primary", State: "running", LSN: 1 << 32}),
		k.Member("db2"): keyspace.Encode(keyspace.Member{Node: "db2", Role: "replica", State: "running", Streaming: true}),
		k.Member("db3"): `{"node":"db3",`,
	} {
		if _, err := root.Raw().Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}
	pwFile := filepath.Join(dir, "agent.password")
	if err := os.WriteFile(pwFile, []byte("pw-billing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		cmd := newRootCmd(&out, &errb)
		cmd.SetArgs(append([]string{"cluster"}, args...))
		err := cmd.ExecuteContext(ctx)
		return out.String(), errb.String(), err
	}
	login := []string{"--etcd", u, "--cluster", "prod/blue/billing", "--user", "agent-billing", "--password-file", pwFile}

	out, errOut, err := run(append([]string{"list"}, login...)...)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if !strings.Contains(out, `leader "db1"`) || !strings.Contains(out, "db2") || !strings.Contains(out, "1/0") || strings.Contains(out, "db3  ") {
		t.Errorf("list output:\n%s", out)
	}
	if !strings.Contains(errOut, "malformed") || !strings.Contains(errOut, k.Member("db3")) {
		t.Errorf("list did not report the malformed member key; stderr:\n%s", errOut)
	}

	if out, _, err := run(append([]string{"switchover", "--to", "db2", "--reason", "patching"}, login...)...); err != nil || !strings.Contains(out, "switchover from db1 requested") {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	s, err := root.Read(ctx, k)
	if err != nil || s.Switchover == nil || s.Switchover.From != "db1" || s.Switchover.To != "db2" || s.Switchover.Reason != "patching" {
		t.Fatalf("switchover key: %+v %v", s.Switchover, err)
	}
	if _, _, err := run(append([]string{"switchover"}, login...)...); err == nil || !strings.Contains(err.Error(), "already pending") {
		t.Errorf("second switchover: %v, want refused as already pending", err)
	}

	// Without the login, etcd refuses.
	if _, _, err := run("list", "--etcd", u, "--cluster", "prod/blue/billing", "--dial-timeout", "2s"); err == nil {
		t.Error("list without a login succeeded")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "--cluster", "prod/billing"}, "--cluster"},
		{[]string{"list", "--cert", "c.pem"}, "--cert and --key"},
		{[]string{"list", "--password-file", pwFile}, "--password-file"},
	} {
		_, _, err := run(tc.args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want exit 2 naming %s", tc.args, err, tc.want)
		}
	}
}
