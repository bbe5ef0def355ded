package backup

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func openTestStore(t *testing.T) *Store {
	t.Helper()
	dir := t.TempDir()
	sealer, err := LoadKey(filepath.Join(dir, "backup.key"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(context.Background(), filepath.Join(dir, StoreFile), sealer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStoreMigratesAndKeepsRunsAndOutbox(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	j := Job{Name: "nightly", Schedule: "0 2 * * *", TimeZone: "Europe/Paris", Window: 2 * time.Hour, RetentionCount: 3,
		SourceType: "postgresql", SourceLocation: "127.0.0.1:5432", Method: "physical", Repository: "fs"}
	if err := s.PutJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	got, err := s.Job(ctx, "nightly")
	if err != nil || got != j {
		t.Fatalf("job round trip: %+v %v", got, err)
	}
	occ := time.Unix(1_700_000_000, 0)
	r := Run{Job: "nightly", Occurrence: occ, Node: "n1", Method: "physical", Repository: "fs"}
	if err := s.StartRun(ctx, &r, "t.started", map[string]string{"a": "b"}); err != nil {
		t.Fatal(err)
	}
	r2 := Run{Job: "nightly", Occurrence: occ, Node: "n1", Method: "physical", Repository: "fs"}
	if err := s.StartRun(ctx, &r2, "t.started", nil); !errors.Is(err, ErrOccurrenceTaken) {
		t.Fatalf("second run of one occurrence: want ErrOccurrenceTaken, got %v", err)
	}
	running, err := s.RunningRuns(ctx)
	if err != nil || len(running) != 1 || running[0].ID != r.ID {
		t.Fatalf("running runs: %+v %v", running, err)
	}
	r.Status, r.SizeBytes, r.StopLSN = StatusSucceeded, 42, "0/3000100"
	if err := s.FinishRun(ctx, &r, "t.completed", map[string]int{"size": 42}); err != nil {
		t.Fatal(err)
	}
	back, err := s.Run(ctx, r.ID)
	if err != nil || back.Status != StatusSucceeded || back.SizeBytes != 42 || back.StopLSN != "0/3000100" || !back.Occurrence.Equal(occ) {
		t.Fatalf("run round trip: %+v %v", back, err)
	}
	ev, err := s.PendingEvents(ctx, 10)
	if err != nil || len(ev) != 2 || ev[0].Type != "t.started" || ev[1].Type != "t.completed" {
		t.Fatalf("outbox: %+v %v", ev, err)
	}
	if err := s.MarkDelivered(ctx, ev[0].ID); err != nil {
		t.Fatal(err)
	}
	ev, _ = s.PendingEvents(ctx, 10)
	if len(ev) != 1 || ev[0].Type != "t.completed" {
		t.Fatalf("outbox after delivery: %+v", ev)
	}
	if err := s.DeleteJobsExcept(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := s.Jobs(ctx); len(jobs) != 0 {
		t.Fatalf("jobs not deleted: %+v", jobs)
	}
}

func TestSecretsSealedAtRest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "backup.key")
	sealer, err := LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(keyFile)
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() != KeySize {
		t.Fatalf("key file: %v %v", st, err)
	}
	path := filepath.Join(dir, StoreFile)
	s, err := OpenStore(ctx, path, sealer)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	secret := []byte("s3-secret-value-XYZ")
	if err := s.PutSecret(ctx, "s3", secret); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Secret(ctx, "s3"); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("secret round trip: %q %v", got, err)
	}
	sealed, _ := s.SealedSecret(ctx, "s3")
	if bytes.Contains(sealed, secret) {
		t.Fatal("secret stored in clear")
	}
	for _, f := range []string{path, path + "-wal"} {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, secret) {
			t.Fatalf("%s contains the secret in clear", f)
		}
	}
	// Another key cannot open it, and the error does not leak the value.
	t.Setenv(EnvKey, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	other, err := LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s2 := &Store{db: s.db, sealer: other}
	_, err = s2.Secret(ctx, "s3")
	if !errors.Is(err, ErrKeyMismatch) || bytes.Contains([]byte(err.Error()), secret) {
		t.Fatalf("wrong key: %v", err)
	}
	// A key file readable by others is refused.
	t.Setenv(EnvKey, "")
	os.Chmod(keyFile, 0o644)
	if _, err := LoadKey(keyFile); err == nil {
		t.Fatal("world-readable key file accepted")
	}
}
