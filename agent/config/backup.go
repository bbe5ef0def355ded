package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Backup defaults.
const (
	DefaultBackupRunOn        = "prefer-replica"
	DefaultPreferReplicaGrace = 15 * time.Second
	DefaultBackupWindow       = time.Hour
	DefaultBackupUser         = "dbpilot_backup"
	// EnvBackupPassword supplies the backup role's password (sealed into the
	// local store at start-up; systemd: use an environment credential).
	EnvBackupPassword = "DBPILOT_BACKUP_PASSWORD"
	// EnvBackupSecretPrefix + the upper-cased secret name (non-alphanumerics
	// as '_') supplies a repository secret, sealed into the store at start.
	EnvBackupSecretPrefix = "DBPILOT_BACKUP_SECRET_"
)

// Backup configures agent-side backups (docs/backups.md). Absent: no
// backups, no WAL archiving.
type Backup struct {
	// KeyFile is the AES-256 host key sealing secrets at rest; created 0600
	// on first start. Default: state_dir/backup.key. DBPILOT_BACKUP_KEY or
	// the systemd credential dbpilot-backup-key take precedence.
	KeyFile string `yaml:"key_file"`
	// RunOn picks who runs a scheduled occurrence: prefer-replica (default:
	// a healthy replica; the primary after prefer_replica_grace if none
	// did), replica, primary or any.
	RunOn string `yaml:"run_on"`
	// PreferReplicaGrace is how long the primary leaves an occurrence to the
	// replicas under prefer-replica. Default 15s.
	PreferReplicaGrace time.Duration `yaml:"prefer_replica_grace"`
	// User is the dedicated backup role.
	User BackupUser `yaml:"user"`
	// WALArchive names the repository for continuous WAL archiving ("":
	// no archiving, no point-in-time recovery).
	WALArchive string `yaml:"wal_archive"`
	// ArchiveSocket is the Unix socket wal-push/wal-fetch reach the agent
	// on. Default: <parent of postgres.data_dir>/dbpilot-archive.sock.
	ArchiveSocket string `yaml:"archive_socket"`
	// ScratchDir holds restore-drill data directories. Default:
	// <parent of postgres.data_dir>.
	ScratchDir   string             `yaml:"scratch_dir"`
	Repositories []BackupRepository `yaml:"repositories"`
	Jobs         []BackupJob        `yaml:"jobs"`
	// BootstrapFrom restores a new cluster's first primary from the newest
	// physical backup of a (possibly other) cluster instead of running
	// initdb; nil: initdb.
	BootstrapFrom *BootstrapSource `yaml:"bootstrap_from"`
	// ReplicaFromBackup builds new replicas from the newest backup in this
	// repository plus archived WAL, instead of pg_basebackup from the
	// primary ("" = clone from the primary).
	ReplicaFromBackup string `yaml:"replica_from_backup"`
}

// BootstrapSource names the backups a new cluster starts from.
type BootstrapSource struct {
	// Repository holds the source cluster's base backups.
	Repository string `yaml:"repository"`
	// WALRepository holds the source cluster's WAL archive (default:
	// Repository).
	WALRepository string `yaml:"wal_repository"`
	// Cluster is the source "namespace/project/name" (default: this
	// cluster, e.g. rebuilding a lost cluster under the same name).
	Cluster string `yaml:"cluster"`
	// BackupID selects the backup ("": the newest physical one); a named
	// backup that is missing fails the bootstrap instead of running initdb.
	BackupID string `yaml:"backup_id"`
	// TargetTime, when set, recovers to this instant (point-in-time
	// recovery) instead of replaying all archived WAL.
	TargetTime *time.Time `yaml:"target_time"`
}

// BackupUser is the role backups connect as: LOGIN REPLICATION with
// pg_read_all_data, created by the primary. Its password comes from
// DBPILOT_BACKUP_PASSWORD (sealed into the store) or the sealed secret
// "backup-user"; with neither, backups use the replication role.
type BackupUser struct {
	Username string `yaml:"username"`
}

// BackupRepository is where backups are stored.
type BackupRepository struct {
	Name string `yaml:"name"`
	// Type is filesystem or s3.
	Type string `yaml:"type"`
	// Path is the filesystem repository's root (must exist: it is never
	// created, so an unmounted NFS mount point fails loudly).
	Path string `yaml:"path"`
	// S3: Endpoint is host[:port]; Insecure uses plain HTTP.
	Endpoint    string `yaml:"endpoint"`
	Bucket      string `yaml:"bucket"`
	Prefix      string `yaml:"prefix"`
	Region      string `yaml:"region"`
	AccessKeyID string `yaml:"access_key_id"`
	Insecure    bool   `yaml:"insecure"`
	// SecretAccessKeySecret names the sealed secret holding the S3 secret
	// key (set with `dbpilot-agent backup secret set NAME`, or
	// DBPILOT_BACKUP_SECRET_<NAME>). Default: "<repository name>-secret-key".
	SecretAccessKeySecret string `yaml:"secret_access_key_secret"`
}

// SecretName returns the sealed-secret name of an S3 repository's key.
func (r BackupRepository) SecretName() string {
	if r.SecretAccessKeySecret != "" {
		return r.SecretAccessKeySecret
	}
	return r.Name + "-secret-key"
}

// SecretEnv returns the environment variable that may supply a secret.
func SecretEnv(secret string) string {
	return EnvBackupSecretPrefix + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, secret)
}

// BackupJob is the whitepaper's backup job schema.
type BackupJob struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Schedule is a cron expression (minute hour day-of-month month
	// day-of-week) or a descriptor (@daily, @hourly, @every 6h).
	Schedule string `yaml:"schedule"`
	// TimeZone the schedule is evaluated in (IANA name). Default UTC.
	TimeZone string `yaml:"time_zone"`
	// Window is how long after its scheduled time an occurrence may start
	// (catch-up after downtime). Default 1h.
	Window    time.Duration   `yaml:"window"`
	Retention BackupRetention `yaml:"retention"`
	// Method is physical, logical or verify.
	Method string `yaml:"method"`
	// Repository names one of backup.repositories.
	Repository string `yaml:"repository"`
	// Verifies names the job whose backups a verify job restores ("" = the
	// newest physical backup of any job).
	Verifies string `yaml:"verifies"`
	// MaxRate throttles physical backups (pg_basebackup --max-rate: bytes
	// per second with an optional k or M suffix, 32k..1024M).
	MaxRate string `yaml:"max_rate"`
	// Compression of physical backups: s2 (default, fastest), zstd
	// (smallest) or none.
	Compression string `yaml:"compression"`
}

// BackupRetention keeps the newest Count good backups and those younger
// than Age; 0 disables a rule; both 0 keeps everything. The newest good
// backup is never deleted.
type BackupRetention struct {
	Count int           `yaml:"count"`
	Age   time.Duration `yaml:"age"`
}

// CronParser parses job schedules: five fields or descriptors.
var CronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func (b *Backup) applyDefaults(c *Config, baseDir string) {
	if b.KeyFile == "" && c.StateDir != "" {
		b.KeyFile = filepath.Join(c.StateDir, "backup.key")
	}
	b.KeyFile = abs(baseDir, b.KeyFile)
	if b.RunOn == "" {
		b.RunOn = DefaultBackupRunOn
	}
	if b.PreferReplicaGrace == 0 {
		b.PreferReplicaGrace = DefaultPreferReplicaGrace
	}
	if b.User.Username == "" {
		b.User.Username = DefaultBackupUser
	}
	if c.Postgres.DataDir != "" {
		parent := filepath.Dir(c.Postgres.DataDir)
		if b.ArchiveSocket == "" {
			b.ArchiveSocket = filepath.Join(parent, "dbpilot-archive.sock")
		}
		if b.ScratchDir == "" {
			b.ScratchDir = parent
		}
	}
	b.ArchiveSocket = abs(baseDir, b.ArchiveSocket)
	b.ScratchDir = abs(baseDir, b.ScratchDir)
	for i := range b.Repositories {
		b.Repositories[i].Path = abs(baseDir, b.Repositories[i].Path)
	}
	for i := range b.Jobs {
		j := &b.Jobs[i]
		if j.TimeZone == "" {
			j.TimeZone = "UTC"
		}
		if j.Window == 0 {
			j.Window = DefaultBackupWindow
		}
	}
}

var maxRateRE = regexp.MustCompile(`^[0-9]+[kM]?$`)

var jobNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

func (b *Backup) validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	switch b.RunOn {
	case "prefer-replica", "replica", "primary", "any":
	default:
		add("backup.run_on", "must be prefer-replica, replica, primary or any (got %q)", b.RunOn)
	}
	if b.PreferReplicaGrace < 0 {
		add("backup.prefer_replica_grace", "must be >= 0 (got %q)", b.PreferReplicaGrace)
	}
	switch {
	case len(b.ArchiveSocket) > 100:
		add("backup.archive_socket", "must be at most 100 bytes, a Unix socket path limit (got %d); set a shorter path", len(b.ArchiveSocket))
	case hasControl(b.ArchiveSocket):
		add("backup.archive_socket", "must not contain control characters (got %q); it is rendered into archive_command", b.ArchiveSocket)
	}
	repos := map[string]bool{}
	for i, r := range b.Repositories {
		p := fmt.Sprintf("backup.repositories[%d]", i)
		switch {
		case !jobNameRE.MatchString(r.Name):
			add(p+".name", "must match %s (got %q)", jobNameRE, r.Name)
		case repos[r.Name]:
			add(p+".name", "duplicate repository name %q", r.Name)
		}
		repos[r.Name] = true
		switch r.Type {
		case "filesystem":
			if r.Path == "" {
				add(p+".path", "required for a filesystem repository; set an existing directory (local disk or NFS mount)")
			}
		case "s3":
			if r.Endpoint == "" || strings.Contains(r.Endpoint, "/") {
				add(p+".endpoint", "required: host[:port] without scheme, e.g. s3.eu-west-1.amazonaws.com (got %q)", r.Endpoint)
			}
			if r.Bucket == "" {
				add(p+".bucket", "required for an s3 repository")
			}
			if r.AccessKeyID == "" {
				add(p+".access_key_id", "required for an s3 repository")
			}
		default:
			add(p+".type", "must be filesystem or s3 (got %q)", r.Type)
		}
	}
	checkRepo := func(path, name string, required bool) {
		if name == "" {
			if required {
				add(path, "required; name one of backup.repositories")
			}
			return
		}
		if !repos[name] {
			add(path, "unknown repository %q; define it under backup.repositories", name)
		}
	}
	checkRepo("backup.wal_archive", b.WALArchive, false)
	if bf := b.BootstrapFrom; bf != nil {
		checkRepo("backup.bootstrap_from.repository", bf.Repository, true)
		checkRepo("backup.bootstrap_from.wal_repository", bf.WALRepository, false)
		if bf.Cluster != "" && strings.Count(bf.Cluster, "/") != 2 {
			add("backup.bootstrap_from.cluster", "must be namespace/project/name (got %q)", bf.Cluster)
		}
	}
	checkRepo("backup.replica_from_backup", b.ReplicaFromBackup, false)
	if b.ReplicaFromBackup != "" && b.WALArchive == "" {
		add("backup.wal_archive", "required when replica_from_backup is set: the replica replays archived WAL")
	}
	jobs := map[string]bool{}
	for i, j := range b.Jobs {
		p := fmt.Sprintf("backup.jobs[%d]", i)
		switch {
		case !jobNameRE.MatchString(j.Name):
			add(p+".name", "must match %s (got %q)", jobNameRE, j.Name)
		case jobs[j.Name]:
			add(p+".name", "duplicate job name %q", j.Name)
		}
		jobs[j.Name] = true
		if _, err := CronParser.Parse(j.Schedule); err != nil {
			add(p+".schedule", "invalid cron expression %q: %v; use e.g. \"0 2 * * *\" or @daily", j.Schedule, err)
		}
		if _, err := time.LoadLocation(j.TimeZone); err != nil {
			add(p+".time_zone", "unknown time zone %q; use an IANA name such as UTC or Europe/Paris", j.TimeZone)
		}
		if j.Window < time.Minute {
			add(p+".window", "must be at least 1m (got %q)", j.Window)
		}
		if j.Retention.Count < 0 || j.Retention.Age < 0 {
			add(p+".retention", "count and age must be >= 0")
		}
		switch j.Method {
		case "physical", "logical", "verify":
		default:
			add(p+".method", "must be physical, logical or verify (got %q)", j.Method)
		}
		checkRepo(p+".repository", j.Repository, true)
		switch j.Compression {
		case "", "zstd", "s2", "none":
		default:
			add(p+".compression", "must be zstd, s2 or none (got %q)", j.Compression)
		}
		if j.MaxRate != "" && !maxRateRE.MatchString(j.MaxRate) {
			add(p+".max_rate", "must be a number of bytes per second with an optional k or M suffix, e.g. 50M (got %q)", j.MaxRate)
		}
	}
	for i, j := range b.Jobs {
		if j.Verifies != "" && !jobs[j.Verifies] {
			add(fmt.Sprintf("backup.jobs[%d].verifies", i), "unknown job %q", j.Verifies)
		}
		if j.Verifies != "" && j.Method != "verify" {
			add(fmt.Sprintf("backup.jobs[%d].verifies", i), "only verify jobs verify other jobs")
		}
	}
	if b.KeyFile != "" {
		if st, err := os.Stat(b.KeyFile); err == nil && st.Mode().Perm()&0o077 != 0 {
			add("backup.key_file", "%q has mode %04o; it is the key to every stored secret: chmod 600 it", b.KeyFile, st.Mode().Perm())
		}
	}
	return errs
}
