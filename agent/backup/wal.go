package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// ErrWALConflict is returned by WALArchive.Push when the archive already
// holds a different file under the same name: never overwrite archived WAL.
var ErrWALConflict = errors.New("archive holds a different file with the same name")

// WALArchive is the continuous WAL archive of one cluster in a repository:
// objects "<prefix>wal/<file name>.zst", zstd-compressed.
type WALArchive struct {
	Repo   Repository
	Prefix string // the cluster's prefix in the repository, ending in "/"
}

func (a WALArchive) key(name string) string { return a.Prefix + "wal/" + name + ".zst" }

var (
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	zdec, _ = zstd.NewReader(nil)
)

// validWALName accepts segment, history, backup-label and partial file names.
func validWALName(name string) bool {
	if name == "" || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") || len(name) > 64 {
		return false
	}
	return true
}

// Push archives the WAL file at path (archive_command %p, made absolute).
// It is idempotent: if the archive already has the same name with the same
// content it succeeds without writing; with different content it fails with
// ErrWALConflict (PostgreSQL then retries and reports it, and nothing is
// overwritten). The object is durable when Push returns nil.
func (a WALArchive) Push(ctx context.Context, path string) error {
	name := filepath.Base(path)
	if !validWALName(name) {
		return fmt.Errorf("wal-push %q: invalid WAL file name", name)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("wal-push %s: %w", name, err)
	}
	key := a.key(name)
	if _, err := a.Repo.Stat(ctx, key); err == nil {
		existing, err := a.read(ctx, key)
		if err != nil {
			return fmt.Errorf("wal-push %s: compare with archived copy: %w", name, err)
		}
		if sha256.Sum256(existing) == sha256.Sum256(data) {
			return nil
		}
		return fmt.Errorf("wal-push %s: %w", name, ErrWALConflict)
	} else if !errors.Is(err, ErrObjectNotFound) {
		return fmt.Errorf("wal-push %s: %w", name, err)
	}
	if _, err := a.Repo.Put(ctx, key, bytes.NewReader(zenc.EncodeAll(data, nil))); err != nil {
		return fmt.Errorf("wal-push %s: %w", name, err)
	}
	return nil
}

func (a WALArchive) read(ctx context.Context, key string) ([]byte, error) {
	rc, err := a.Repo.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	comp, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	return zdec.DecodeAll(comp, nil)
}

// Fetch restores archived WAL file name (restore_command %f) to dest (%p),
// written through a temporary file and a rename; chown, if not nil, is
// applied to it before the rename. Errors: ErrObjectNotFound when the
// archive does not have it (normal at the end of the archive).
func (a WALArchive) Fetch(ctx context.Context, name, dest string, chown func(string) error) error {
	if !validWALName(name) {
		return fmt.Errorf("wal-fetch %q: invalid WAL file name", name)
	}
	data, err := a.read(ctx, a.key(name))
	if err != nil {
		return fmt.Errorf("wal-fetch %s: %w", name, err)
	}
	tmp := dest + ".dbpilot-tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("wal-fetch %s: %w", name, err)
	}
	if chown != nil {
		if err := chown(tmp); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("wal-fetch %s: %w", name, err)
		}
	}
	if err := os.Rename(tmp, dest); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("wal-fetch %s: %w", name, err)
	}
	return nil
}

// List returns the archived WAL file names (without ".zst"), sorted.
func (a WALArchive) List(ctx context.Context) ([]string, error) {
	objs, err := a.Repo.List(ctx, a.Prefix+"wal/")
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(o.Key, a.Prefix+"wal/"), ".zst"))
	}
	return out, nil
}
