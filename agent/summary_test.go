package agent

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/agent/backup"
	"github.com/dbpilot/dbpilot/agent/httpapi"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/proto"
)

func TestBuildSummary(t *testing.T) {
	ptr := func(b bool) *bool { return &b }
	arch := &proto.ArchiveStatus{ArchivedCount: 3}
	fs := []proto.FilesystemUsage{{Kind: proto.FilesystemData, Path: "/d", SizeBytes: 100, UsedBytes: 40, UsedPct: 40}}
	replicas := []postgres.ReplicaStat{
		{Name: "n3", State: "streaming", SyncState: "quorum"},
		{Name: "n2", State: "streaming", SyncState: "sync"},
		{Name: "n4", State: "streaming", SyncState: "async"},
		{Name: "n5", State: "catchup", SyncState: "sync"},
	}
	primary := httpapi.NodeState{Role: "primary", State: "running", Healthy: true, Writable: true, HoldsLease: true, LagBytes: 0, Term: 4}
	for _, tc := range []struct {
		name string
		in   summaryInput
		want proto.MemberSummary
	}{
		{"writable primary", summaryInput{interval: 3 * time.Second, state: primary, syncMode: true, replicas: replicas, filesystems: fs, archive: arch},
			proto.MemberSummary{IntervalMS: 3000, Role: "primary", State: "running", Healthy: true, Writable: true, SynchronousMode: true,
				SyncStandbys: []string{"n2", "n3"}, Filesystems: fs, Archive: arch}},
		{"primary without a provable lease is not writable", summaryInput{interval: time.Second, state: func() httpapi.NodeState { s := primary; s.HoldsLease = false; return s }(), replicas: replicas, archive: arch},
			proto.MemberSummary{IntervalMS: 1000, Role: "primary", State: "running", Healthy: true}},
		{"streaming replica", summaryInput{interval: 3 * time.Second, state: httpapi.NodeState{Role: "replica", State: "running", Healthy: true, Streaming: true, LagBytes: 4096}, replicas: replicas},
			proto.MemberSummary{IntervalMS: 3000, Role: "replica", State: "running", Healthy: true, Streaming: ptr(true), LagBytes: 4096}},
		{"replica not streaming, lag unknown", summaryInput{interval: 3 * time.Second, state: httpapi.NodeState{Role: "replica", State: "unhealthy", LagBytes: -1}},
			proto.MemberSummary{IntervalMS: 3000, Role: "replica", State: "unhealthy", Streaming: ptr(false), LagBytes: -1}},
		{"before the first cycle", summaryInput{interval: 3 * time.Second, state: httpapi.NodeState{Role: "unknown", LagBytes: -1}},
			proto.MemberSummary{IntervalMS: 3000, Role: "unknown", State: "starting", LagBytes: -1}},
		{"fenced primary", summaryInput{interval: 3 * time.Second, state: httpapi.NodeState{Role: "unknown", State: "fenced", LagBytes: 0}},
			proto.MemberSummary{IntervalMS: 3000, Role: "unknown", State: "fenced", LagBytes: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := buildSummary(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("buildSummary:\n got %+v\nwant %+v", got, tc.want)
			}
			// Every summary built must pass the wire validation.
			if _, err := proto.NewEnvelope(proto.TypeMemberSummary, proto.AgentSource("ns", "c", "n1"),
				proto.Header{ClusterRef: proto.ClusterRef{Namespace: "ns", Cluster: "c"}, Node: "n1", TimestampMS: 1}, got); err != nil {
				t.Errorf("summary does not validate: %v", err)
			}
		})
	}
}

func TestFilesystemsOfDataDir(t *testing.T) {
	dir := t.TempDir()
	fs := filesystems(dir) // pg_wal does not exist: left out
	if len(fs) != 1 || fs[0].Kind != proto.FilesystemData || fs[0].Path != dir || fs[0].SizeBytes <= 0 ||
		fs[0].UsedPct < 0 || fs[0].UsedPct > 100 || fs[0].UsedBytes > fs[0].SizeBytes {
		t.Fatalf("filesystems(%s) = %+v", dir, fs)
	}
	if fs := filesystems(filepath.Join(dir, "missing")); len(fs) != 0 {
		t.Errorf("filesystems of a missing dir = %+v, want none", fs)
	}
}

func TestBackupStatuses(t *testing.T) {
	ctx := context.Background()
	st, err := backup.OpenStore(ctx, filepath.Join(t.TempDir(), "backup.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, j := range []backup.Job{
		{Name: "nightly", Schedule: "0 3 * * *", TimeZone: "UTC", Method: "physical", Repository: "r"},
		{Name: "drill", Schedule: "@every 1h", TimeZone: "UTC", Method: "verify", Repository: "r"},
	} {
		if err := st.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	run := func(job, method string, start time.Time, ok bool) *backup.Run {
		r := &backup.Run{ID: backup.NewID(), Job: job, Node: "n1", Method: method, Repository: "r", StartedAt: start}
		if err := st.StartRun(ctx, r, "", nil); err != nil {
			t.Fatal(err)
		}
		r.FinishedAt, r.Status, r.RepositoryPath = start.Add(time.Minute), backup.StatusSucceeded, "p/"+r.ID
		if !ok {
			r.Status, r.Error = backup.StatusFailed, "boom"
		}
		if err := st.FinishRun(ctx, r, "", nil); err != nil {
			t.Fatal(err)
		}
		return r
	}
	good := run("nightly", "physical", t0, true)
	run("nightly", "physical", t0.Add(24*time.Hour), false)
	run("drill", "verify", t0.Add(2*time.Hour), true)
	if err := st.MarkVerified(ctx, good.RepositoryPath, t0.Add(2*time.Hour+time.Minute), "", "", nil); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(25 * time.Hour)
	got, err := backupStatuses(ctx, st, now)
	if err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) *time.Time { x := t0.Add(d); return &x }
	want := map[string]proto.BackupJobStatus{
		"nightly": {Job: "nightly", Schedule: "0 3 * * *", LastSuccessAt: at(time.Minute), LastFailureAt: at(24*time.Hour + time.Minute),
			NextDueAt: at(48 * time.Hour), LastDrillAt: at(2*time.Hour + time.Minute)},
		"drill": {Job: "drill", Schedule: "@every 1h", LastSuccessAt: at(2*time.Hour + time.Minute), LastDrillAt: at(2*time.Hour + time.Minute),
			NextDueAt: func() *time.Time { x := now.Add(time.Hour); return &x }()},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d jobs, want %d: %+v", len(got), len(want), got)
	}
	for _, b := range got {
		w := want[b.Job]
		for _, f := range []struct {
			name      string
			got, want *time.Time
		}{{"last_success_at", b.LastSuccessAt, w.LastSuccessAt}, {"last_failure_at", b.LastFailureAt, w.LastFailureAt},
			{"next_due_at", b.NextDueAt, w.NextDueAt}, {"last_drill_at", b.LastDrillAt, w.LastDrillAt}} {
			if (f.got == nil) != (f.want == nil) || f.got != nil && !f.got.Equal(*f.want) {
				t.Errorf("job %s %s = %v, want %v", b.Job, f.name, f.got, f.want)
			}
		}
		if b.Schedule != w.Schedule {
			t.Errorf("job %s schedule %q, want %q", b.Job, b.Schedule, w.Schedule)
		}
	}
}

func TestArchiveFailing(t *testing.T) {
	t1, t2 := time.Unix(100, 0), time.Unix(200, 0)
	for _, tc := range []struct {
		archived, failed *time.Time
		want             bool
	}{{nil, nil, false}, {&t1, nil, false}, {nil, &t1, true}, {&t1, &t2, true}, {&t2, &t1, false}} {
		if got := archiveFailing(tc.archived, tc.failed); got != tc.want {
			t.Errorf("archiveFailing(%v, %v) = %v, want %v", tc.archived, tc.failed, got, tc.want)
		}
	}
}
