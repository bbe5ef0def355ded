package backup

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/internal/localhost"
	"github.com/dbpilot/dbpilot/internal/testutil"
	"github.com/dbpilot/dbpilot/proto"
)

var agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dbpilot-backup-test-bin")
	if err != nil {
		panic(err)
	}
	os.Chmod(dir, 0o755) // PostgreSQL's OS user runs wal-push / wal-fetch from here
	agentBin = filepath.Join(dir, "dbpilot-agent")
	out, err := exec.Command("go", "build", "-o", agentBin, "github.com/dbpilot/dbpilot/cmd/dbpilot-agent").CombinedOutput()
	if err != nil {
		fmt.Printf("building dbpilot-agent: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// traversableDir returns a fresh directory PostgreSQL's OS user can
// traverse (t.TempDir is 0700), removed at cleanup.
func traversableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dbpilot-bk-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func binDir(t *testing.T) string {
	t.Helper()
	b := ""
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres"); len(m) > 0 {
		b = filepath.Dir(m[len(m)-1])
	}
	if b == "" {
		t.Fatal("PostgreSQL server binaries not found: run deploy/dev/install-deps.sh (make test does)")
	}
	return b
}

const testPassword = `s3cr'et:pw`

// pgEnv is one running PostgreSQL primary with WAL archiving to a
// filesystem repository through the agent's archive socket.
type pgEnv struct {
	dir  string
	cfg  postgres.Config
	pg   *postgres.Instance
	svc  *Service
	repo *FSRepository
	log  *zap.Logger
}

func startPG(t *testing.T, extraRepos ...Repository) *pgEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := traversableDir(t)
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	port, err := localhost.FreePort("")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "archive.sock")
	cfg := postgres.Config{
		NodeName: "n1", BinDir: binDir(t), DataDir: filepath.Join(dir, "data"), ListenAddress: "127.0.0.1", Port: port,
		OSUser:         "postgres",
		Superuser:      postgres.Credentials{Username: "postgres", Password: testPassword},
		Replication:    postgres.Credentials{Username: "postgres", Password: testPassword},
		Parameters:     map[string]string{"track_commit_timestamp": "on", "fsync": "off", "max_wal_size": "256MB"},
		InitdbArgs:     []string{"--no-sync"},
		ArchiveCommand: ArchiveCommand(agentBin, sock),
	}
	if os.Geteuid() != 0 {
		cfg.OSUser = ""
	}
	pg, err := postgres.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Initdb(ctx); err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(dir, "repo")
	if err := os.Mkdir(repoDir, 0o700); err != nil {
		t.Fatal(err)
	}
	repo, _ := NewFSRepository("fs", repoDir)
	sealer, err := LoadKey(filepath.Join(dir, "state", "backup.key"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := OpenStore(ctx, filepath.Join(dir, "state", StoreFile), sealer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	repos := map[string]Repository{"fs": repo}
	for _, r := range extraRepos {
		repos[r.Name()] = r
	}
	svc := &Service{Node: "n1", Cluster: proto.ClusterRef{Namespace: "test", Project: "default", Cluster: "c1"}, Store: store, PG: pg,
		Login: cfg.Superuser, Superuser: cfg.Superuser, Repos: repos, ArchiveRepo: "fs", AgentBin: agentBin, ScratchDir: dir, Log: log}
	arch, _ := svc.Archive()
	uid, gid, chown := pg.Owner()
	srv := &ArchiveServer{Archive: arch, DataDir: cfg.DataDir, Chown: pg.Chown, Log: log}
	stopSrv, err := srv.Serve(context.Background(), sock, uid, gid, chown)
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Start(ctx, postgres.RolePrimary, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = pg.Stop(context.Background(), postgres.StopImmediate)
		stopSrv()
	})
	return &pgEnv{dir: dir, cfg: cfg, pg: pg, svc: svc, repo: repo, log: log}
}

func (e *pgEnv) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := e.pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// switchAndWaitArchived forces a WAL switch and waits until the switched
// segment is archived.
func (e *pgEnv) switchAndWaitArchived(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	conn, err := e.pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var seg string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&seg); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, 100*time.Millisecond, "segment "+seg+" to be archived", func() error {
		var last *string
		if err := conn.QueryRow(ctx, "SELECT last_archived_wal FROM pg_stat_archiver").Scan(&last); err != nil {
			t.Fatal(err)
		}
		if last != nil && *last >= seg {
			return nil
		}
		return fmt.Errorf("last archived %v", last)
	})
}

// startMinIO starts a real MinIO server (built from its Go module by
// deploy/dev/install-deps.sh) and returns its endpoint and root
// credentials.
func startMinIO(t *testing.T) (endpoint, user, password string) {
	t.Helper()
	bin := os.Getenv("DBPILOT_MINIO")
	if bin == "" {
		home, _ := os.UserHomeDir()
		bin = filepath.Join(home, ".cache", "dbpilot", "minio")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("MinIO binary %s not found: run deploy/dev/install-deps.sh (make test does)", bin)
	}
	port, err := localhost.FreePort("")
	if err != nil {
		t.Fatal(err)
	}
	endpoint, user, password = fmt.Sprintf("127.0.0.1:%d", port), "dbpilot", "dbpilot-secret-123"
	cmd := exec.Command(bin, "server", "--quiet", "--address", endpoint, "--console-address", "127.0.0.1:0", t.TempDir())
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+user, "MINIO_ROOT_PASSWORD="+password, "MINIO_BROWSER=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// /minio/health/live answers before the object layer is initialised;
	// /minio/health/ready only once requests can be served.
	testutil.Eventually(t, 60*time.Second, 100*time.Millisecond, "MinIO to be ready", func() error {
		resp, err := http.Get("http://" + endpoint + "/minio/health/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("/minio/health/ready: %s", resp.Status)
		}
		return nil
	})
	return endpoint, user, password
}
