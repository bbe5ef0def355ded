package agent_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/agent/backup"
	"github.com/dbpilot/dbpilot/agent/localcluster"
	"github.com/dbpilot/dbpilot/internal/testutil"
	"github.com/dbpilot/dbpilot/proto"
)

// receiver is a control-plane stand-in: it accepts CloudEvents over HTTP
// and counts deliveries per event id.
type receiver struct {
	mu    sync.Mutex
	seen  map[string]int
	types map[string]string
	srv   *http.Server
	// summaries are the newest member summary per node.
	summaries map[string]proto.MemberSummary
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	e, err := proto.DecodeEnvelope(b)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.seen[e.ID]++
	r.types[e.ID] = e.Type
	if p, err := e.Payload(); err == nil && e.Type == proto.TypeMemberSummary {
		if r.summaries == nil {
			r.summaries = map[string]proto.MemberSummary{}
		}
		sum := p.(proto.MemberSummary)
		r.summaries[sum.Node] = sum
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) backupEvents() (byType map[string]int, dups []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	byType = map[string]int{}
	for id, n := range r.seen {
		if strings.Contains(r.types[id], ".backup.") {
			byType[r.types[id]]++
			if n > 1 {
				dups = append(dups, id)
			}
		}
	}
	return byType, dups
}

func openStore(t *testing.T, n *localcluster.Node) *backup.Store {
	t.Helper()
	s, err := backup.OpenStore(context.Background(), filepath.Join(n.Dir, "state", backup.StoreFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, d, 200*time.Millisecond, what, cond)
}

// TestScheduledBackupsInCluster runs three agents with an hourly backup job
// and no control plane: the missed occurrence runs once at start-up on
// exactly one node (a replica), its record is in that node's SQLite, and
// the outbox delivers every backup event once the receiver comes up, with
// no duplicates. Then a replica is rebuilt from the backup plus archived
// WAL and streams; an agent killed with SIGKILL mid-backup leaves no listed
// partial backup, the run is marked failed at its restart, and the next
// run succeeds.
func TestScheduledBackupsInCluster(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	os.Chmod(root, 0o755)
	repoDir := filepath.Join(root, "repo")
	if err := os.MkdirAll(repoDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	recvAddr := ln.Addr().String()
	ln.Close() // the control plane is down at first
	c := startCluster(t, localcluster.Options{
		Nodes:  3,
		Env:    []string{"DBPILOT_BACKUP_PASSWORD=bk'pw:1"},
		Events: map[string]any{"http": map[string]any{"url": "http://" + recvAddr + "/events", "timeout": "1s"}},
		Backup: map[string]any{
			"wal_archive":          "fs",
			"replica_from_backup":  "fs",
			"prefer_replica_grace": "60s",
			"repositories":         []any{map[string]any{"name": "fs", "type": "filesystem", "path": repoDir}},
			"jobs": []any{
				map[string]any{"name": "full", "schedule": "@hourly", "window": "2h", "method": "physical", "repository": "fs", "retention": map[string]any{"count": 5}},
				map[string]any{"name": "slow", "schedule": "@hourly", "window": "2h", "method": "physical", "repository": "fs", "max_rate": "1M"},
			},
		},
	})
	s := waitFor(t, c, 90*time.Second, "one primary, two streaming replicas", healthy(c, false))
	stores := make([]*backup.Store, len(c.Nodes))
	for i, n := range c.Nodes {
		stores[i] = openStore(t, n)
	}

	// Exactly one node runs the missed hourly occurrence of "full", a replica.
	var ranOn []int
	var full backup.Run
	poll(t, 90*time.Second, "the full backup to succeed on some node", func() bool {
		ranOn = ranOn[:0]
		for i, st := range stores {
			runs, _ := st.Runs(ctx, "full", 0)
			for _, r := range runs {
				ranOn = append(ranOn, i)
				if r.Status == backup.StatusSucceeded {
					full = r
				}
			}
		}
		return full.ID != ""
	})
	if len(ranOn) != 1 {
		t.Fatalf("occurrence of full ran %d times (nodes %v), want exactly once", len(ranOn), ranOn)
	}
	if c.Nodes[ranOn[0]].Name == s.Leader {
		t.Fatalf("full ran on the primary %s; prefer-replica wants a replica", s.Leader)
	}
	if full.Occurrence.IsZero() || full.SizeBytes <= 0 || full.StopLSN == "" {
		t.Fatalf("record of the scheduled run: %+v", full)
	}

	// The slow job: SIGKILL the agent running it; no partial backup is listed.
	var slowNode int
	var slowRun backup.Run
	poll(t, 90*time.Second, "the slow backup to be running", func() bool {
		for i, st := range stores {
			runs, _ := st.RunningRuns(ctx)
			for _, r := range runs {
				if r.Job == "slow" {
					slowNode, slowRun = i, r
					return true
				}
			}
		}
		return false
	})
	time.Sleep(2 * time.Second) // let it write part of the tar (not an assertion)
	if err := c.Kill(slowNode); err != nil {
		t.Fatal(err)
	}
	if err := c.StartNode(slowNode); err != nil {
		t.Fatal(err)
	}
	poll(t, 60*time.Second, "the interrupted run to be marked failed", func() bool {
		r, err := stores[slowNode].Run(ctx, slowRun.ID)
		return err == nil && r.Status == backup.StatusFailed && strings.Contains(r.Error, "interrupted")
	})
	leftovers, _ := filepath.Glob(filepath.Join(repoDir, "*", "*", "*", "base", slowRun.ID, "*"))
	if len(leftovers) != 0 {
		t.Fatalf("partial files of the killed run remain: %v", leftovers)
	}
	s = waitFor(t, c, 90*time.Second, "healthy again after the kill", healthy(c, false))
	cfgPath := c.Nodes[slowNode].ConfigPath
	out, err := exec.Command(agentBin, "backup", "list", "--config", cfgPath).CombinedOutput()
	listed, _, _ := strings.Cut(string(out), "recent runs")
	if err != nil || strings.Contains(listed, slowRun.ID) || !strings.Contains(listed, full.ID) {
		t.Fatalf("backup list must show %s and not the killed %s: %v\n%s", full.ID, slowRun.ID, err, out)
	}
	out, err = exec.Command(agentBin, "backup", "run", "--job", "full", "--config", cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "succeeded") {
		t.Fatalf("next run after the kill: %v\n%s", err, out)
	}

	// The control plane comes back: every backup event arrives, once.
	rcv := &receiver{seen: map[string]int{}, types: map[string]string{}}
	l2, err := net.Listen("tcp", recvAddr)
	if err != nil {
		t.Fatal(err)
	}
	rcv.srv = &http.Server{Handler: rcv}
	go rcv.srv.Serve(l2)
	t.Cleanup(func() { rcv.srv.Close() })
	poll(t, 60*time.Second, "every outbox event delivered", func() bool {
		pending := 0
		for _, st := range stores {
			ev, _ := st.PendingEvents(ctx, 1000)
			pending += len(ev)
		}
		return pending == 0
	})
	byType, dups := rcv.backupEvents()
	if len(dups) > 0 {
		t.Fatalf("duplicate deliveries: %v", dups)
	}
	if byType[proto.TypeBackupCompleted] < 2 || byType[proto.TypeBackupFailed] < 1 || byType[proto.TypeBackupStarted] < 3 {
		t.Fatalf("events at the receiver: %v", byType)
	}

	// Member summaries: the primary reports its WAL archiver, the nodes
	// that ran the jobs their last success and failure.
	poll(t, 30*time.Second, "summaries with the archiver and the backup jobs", func() bool {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		p := rcv.summaries[s.Leader]
		if !p.Writable || p.Archive == nil || p.Archive.ArchivedCount == 0 || p.Archive.LastArchivedAt == nil {
			return false
		}
		job := func(node, name string) proto.BackupJobStatus {
			for _, b := range rcv.summaries[node].Backups {
				if b.Job == name {
					return b
				}
			}
			return proto.BackupJobStatus{}
		}
		full := job(c.Nodes[ranOn[0]].Name, "full")
		slow := job(c.Nodes[slowNode].Name, "slow")
		return full.LastSuccessAt != nil && full.NextDueAt != nil && full.Schedule == "@hourly" && slow.LastFailureAt != nil
	})
	rcv.mu.Lock()
	for node, sum := range rcv.summaries {
		if node != s.Leader && sum.Archive != nil {
			t.Errorf("replica %s reports an archiver: %+v", node, sum.Archive)
		}
	}
	rcv.mu.Unlock()

	// A replica rebuilt from the backup plus archived WAL streams from the primary.
	rebuild := -1
	for i, n := range c.Nodes {
		if n.Name != s.Leader && i != slowNode {
			rebuild = i
		}
	}
	if rebuild < 0 {
		rebuild = slowNode
	}
	if err := c.Stop(rebuild, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	n := c.Nodes[rebuild]
	os.RemoveAll(filepath.Join(n.Dir, "data"))
	if err := c.StartNode(rebuild); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, 120*time.Second, n.Name+" streaming again", func(st localcluster.Status) bool {
		for _, m := range st.Streaming() {
			if m == n.Name {
				return true
			}
		}
		return false
	})
	if !logContains(t, n, "replica data directory restored from backup") {
		t.Fatalf("%s was not rebuilt from the backup", n.Name)
	}
	// Data committed after the backup reaches a restore through the WAL archive.
	pc, err := c.Connect(ctx, c.Index(s.Leader))
	if err != nil {
		t.Fatal(err)
	}
	var seg string
	if _, err := pc.Exec(ctx, "CREATE TABLE after_backup AS SELECT g AS id FROM generate_series(1, 777) g"); err != nil {
		t.Fatal(err)
	}
	if err := pc.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&seg); err != nil {
		t.Fatal(err)
	}
	poll(t, 60*time.Second, "segment "+seg+" archived", func() bool {
		var last *string
		return pc.QueryRow(ctx, "SELECT last_archived_wal FROM pg_stat_archiver").Scan(&last) == nil && last != nil && *last >= seg
	})
	pc.Close(ctx)

	// The CLI restores locally, without a control plane.
	restoreDir := filepath.Join(root, "cli-restore")
	out, err = exec.Command(agentBin, "backup", "restore", "--config", c.Nodes[0].ConfigPath, "--repository", "fs", "--data-dir", restoreDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "recovered and promoted") {
		t.Fatalf("backup restore: %v\n%s", err, out)
	}

	// A new cluster bootstraps from this cluster's backup and archived WAL.
	nc := startCluster(t, localcluster.Options{Nodes: 1, Cluster: "restored", Backup: map[string]any{
		"wal_archive":    "fs",
		"bootstrap_from": map[string]any{"repository": "fs", "cluster": "demo/default/local"},
		"repositories":   []any{map[string]any{"name": "fs", "type": "filesystem", "path": repoDir}},
	}})
	t.Cleanup(func() {
		if t.Failed() { // the restore's server log
			b, _ := os.ReadFile(filepath.Join(nc.Nodes[0].Dir, "data.log"))
			t.Logf("==== restored cluster data.log\n%s", tail(string(b), 40))
		}
	})
	waitFor(t, nc, 90*time.Second, "the restored cluster's primary", func(st localcluster.Status) bool {
		return st.Leader != "" && len(st.Primaries()) == 1
	})
	rc, err := nc.Connect(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := rc.QueryRow(ctx, "SELECT count(*) FROM after_backup").Scan(&rows); err != nil || rows != 777 {
		t.Fatalf("restored cluster: %d rows (%v), want 777", rows, err)
	}
	rc.Close(ctx)
	if !logContains(t, nc.Nodes[0], "bootstrapped from backup") {
		t.Fatal("the new cluster did not bootstrap from the backup")
	}

	// Still exactly one scheduled run of that occurrence of full.
	count := 0
	for _, st := range stores {
		runs, _ := st.Runs(ctx, "full", 0)
		for _, r := range runs {
			if r.Occurrence.Equal(full.Occurrence) {
				count++
			}
		}
	}
	if count != 1 {
		t.Fatalf("occurrence %s of full ran %d times, want 1", full.Occurrence, count)
	}
}
