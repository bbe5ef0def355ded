package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBackupSection(t *testing.T) {
	y, dir := validYAML(t)
	good := y + `
backup:
  wal_archive: fs
  repositories:
    - {name: fs, type: filesystem, path: /srv/backups}
    - {name: s3, type: s3, endpoint: "127.0.0.1:9000", bucket: b, access_key_id: k, insecure: true}
  jobs:
    - {name: nightly, schedule: "0 2 * * *", time_zone: Europe/Paris, retention: {count: 7}, method: physical, repository: fs}
    - {name: drill, schedule: "@weekly", method: verify, repository: fs, verifies: nightly}
`
	c, err := Parse([]byte(good), dir)
	if err != nil {
		t.Fatalf("valid backup section rejected: %v", err)
	}
	b := c.Backup
	if b.RunOn != "prefer-replica" || b.KeyFile != filepath.Join(dir, "state", "backup.key") || b.Jobs[1].TimeZone != "UTC" || b.Jobs[0].Window != time.Hour ||
		b.ArchiveSocket != filepath.Join(dir, "dbpilot-archive.sock") || b.User.Username != DefaultBackupUser {
		t.Fatalf("defaults: %+v", b)
	}
	if _, err := Parse([]byte(strings.Replace(good, "  data_dir: data\n", "  data_dir: data\n  parameters: {archive_command: 'cp %p /x'}\n", 1)), dir); err == nil ||
		!strings.Contains(err.Error(), "postgres.parameters.archive_command: is managed by the agent") {
		t.Fatalf("archive_command in parameters: %v", err)
	}
	if got := SecretEnv("s3-secret-key"); got != "DBPILOT_BACKUP_SECRET_S3_SECRET_KEY" {
		t.Fatalf("SecretEnv: %s", got)
	}

	bad := y + `
backup:
  run_on: sometimes
  wal_archive: nope
  bootstrap_from: {repository: fs, cluster: "only/two"}
  repositories:
    - {name: fs, type: filesystem}
    - {name: s3, type: s3, endpoint: "http://x", bucket: "", access_key_id: k}
    - {name: ftp, type: ftp}
  jobs:
    - {name: a, schedule: "61 * * * *", time_zone: Mars/Base, method: snapshot, repository: missing, window: 1s}
    - {name: a, schedule: "@daily", method: physical, repository: fs, verifies: ghost}
`
	_, err = Parse([]byte(bad), dir)
	if err == nil {
		t.Fatal("invalid backup section accepted")
	}
	for _, want := range []string{
		"backup.run_on: must be", "backup.wal_archive: unknown repository \"nope\"",
		"backup.repositories[0].path: required", "backup.repositories[1].endpoint", "backup.repositories[1].bucket",
		"backup.repositories[2].type", "backup.jobs[0].schedule: invalid cron", "backup.jobs[0].time_zone: unknown time zone",
		"backup.jobs[0].method", "backup.jobs[0].repository: unknown repository", "backup.jobs[0].window",
		"backup.jobs[1].name: duplicate", "backup.jobs[1].verifies: unknown job",
		"backup.bootstrap_from.cluster: must be namespace/project/name",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
