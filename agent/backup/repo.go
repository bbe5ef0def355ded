package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ErrObjectNotFound is returned by Repository.Get and Stat for a missing key.
var ErrObjectNotFound = errors.New("object not found in repository")

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key  string // slash-separated, relative to the repository root
	Size int64  // bytes
}

// Repository stores backup files. Keys are slash-separated paths. Put is
// atomic: until it returns nil, neither Get, Stat nor List sees the object
// (a filesystem repository writes a hidden temporary file and renames it;
// S3 completes a multipart upload), so a half-written backup is never
// listed. Implementations are safe for concurrent use.
type Repository interface {
	// Name is the repository's configured name.
	Name() string
	// Put stores everything read from r under key, replacing any object
	// there, and returns the number of bytes stored. The data is durable
	// (fsync'd, or acknowledged by the object store) when Put returns nil.
	Put(ctx context.Context, key string, r io.Reader) (int64, error)
	// Get opens the object at key. Errors: ErrObjectNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat returns the object's info. Errors: ErrObjectNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List returns the complete objects whose keys start with prefix,
	// sorted by key.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Delete removes the object at key; a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// RemovePartial removes leftovers of interrupted Puts under prefix
	// (temporary files, incomplete multipart uploads).
	RemovePartial(ctx context.Context, prefix string) error
}

// FSRepository is a Repository in a local or NFS-mounted directory.
type FSRepository struct {
	name string
	root string
}

// tmpPrefix starts the names of files being written.
const tmpPrefix = ".tmp-"

// NewFSRepository returns a repository rooted at root (an absolute path).
// The root is never created: every operation fails with a clear error while
// it does not exist, so an unmounted NFS mount point fails loudly instead
// of filling the local disk.
func NewFSRepository(name, root string) (*FSRepository, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("repository %s: path %q must be absolute", name, root)
	}
	return &FSRepository{name: name, root: filepath.Clean(root)}, nil
}

// Name implements Repository.
func (r *FSRepository) Name() string { return r.name }

func (r *FSRepository) path(key string) (string, error) {
	clean := path.Clean("/" + key)
	if key == "" || clean == "/" || strings.Contains(key, "..") {
		return "", fmt.Errorf("repository %s: invalid key %q", r.name, key)
	}
	return filepath.Join(r.root, filepath.FromSlash(clean)), nil
}

// Put implements Repository: write to a hidden temporary file in the target
// directory, fsync it, rename it into place and fsync the directory.
func (r *FSRepository) Put(ctx context.Context, key string, src io.Reader) (int64, error) {
	p, err := r.path(key)
	if err != nil {
		return 0, err
	}
	if st, err := os.Stat(r.root); err != nil || !st.IsDir() {
		return 0, fmt.Errorf("repository %s: put %s: root %q is not an existing directory (is it mounted?): %v", r.name, key, r.root, err)
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("repository %s: put %s: %w", r.name, key, err)
	}
	f, err := os.CreateTemp(dir, tmpPrefix+filepath.Base(p)+"-*")
	if err != nil {
		return 0, fmt.Errorf("repository %s: put %s: %w", r.name, key, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, ctxReader{ctx, src})
	if err != nil {
		return n, fmt.Errorf("repository %s: put %s: %w", r.name, key, err)
	}
	if err := f.Sync(); err != nil {
		return n, fmt.Errorf("repository %s: put %s: fsync: %w", r.name, key, err)
	}
	if err := f.Close(); err != nil {
		return n, fmt.Errorf("repository %s: put %s: %w", r.name, key, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return n, fmt.Errorf("repository %s: put %s: %w", r.name, key, err)
	}
	ok = true
	if err := syncDir(dir); err != nil {
		return n, fmt.Errorf("repository %s: put %s: fsync dir: %w", r.name, key, err)
	}
	return n, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ctxReader stops a copy when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Get implements Repository.
func (r *FSRepository) Get(_ context.Context, key string) (io.ReadCloser, error) {
	p, err := r.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("repository %s: get %s: %w", r.name, key, ErrObjectNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: get %s: %w", r.name, key, err)
	}
	return f, nil
}

// Stat implements Repository.
func (r *FSRepository) Stat(_ context.Context, key string) (ObjectInfo, error) {
	p, err := r.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return ObjectInfo{}, fmt.Errorf("repository %s: stat %s: %w", r.name, key, ErrObjectNotFound)
	}
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("repository %s: stat %s: %w", r.name, key, err)
	}
	return ObjectInfo{Key: key, Size: st.Size()}, nil
}

// List implements Repository; temporary files are not listed.
func (r *FSRepository) List(_ context.Context, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	err := filepath.WalkDir(r.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), tmpPrefix) {
			return nil
		}
		rel, err := filepath.Rel(r.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		out = append(out, ObjectInfo{Key: key, Size: info.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("repository %s: list %s: %w", r.name, prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Repository.
func (r *FSRepository) Delete(_ context.Context, key string) error {
	p, err := r.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("repository %s: delete %s: %w", r.name, key, err)
	}
	// Remove directories left empty, up to the root (best effort).
	for dir := filepath.Dir(p); dir != r.root && strings.HasPrefix(dir, r.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

// RemovePartial implements Repository: removes temporary files under prefix.
func (r *FSRepository) RemovePartial(_ context.Context, prefix string) error {
	var errs []error
	_ = filepath.WalkDir(r.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(d.Name(), tmpPrefix) {
			return nil
		}
		rel, _ := filepath.Rel(r.root, p)
		if strings.HasPrefix(filepath.ToSlash(rel), prefix) {
			if err := os.Remove(p); err != nil {
				errs = append(errs, err)
			}
		}
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("repository %s: remove partial %s: %w", r.name, prefix, err)
	}
	return nil
}

// S3Options configure an S3-compatible repository.
type S3Options struct {
	Endpoint        string // host[:port], e.g. "s3.amazonaws.com" or "127.0.0.1:9000"
	Bucket          string
	Prefix          string // key prefix inside the bucket ("" or ending without "/")
	Region          string
	AccessKeyID     string
	SecretAccessKey string // never logged
	Insecure        bool   // plain HTTP
}

// S3Repository is a Repository in an S3-compatible bucket (minio-go).
// Objects appear only when their (multipart) upload completes.
type S3Repository struct {
	name   string
	cli    *minio.Client
	bucket string
	prefix string
}

// partSize is the multipart part size: a 1 GiB backup is 64 parts.
const partSize = 16 << 20

// NewS3Repository returns an S3 repository. It makes no request.
func NewS3Repository(name string, o S3Options) (*S3Repository, error) {
	cli, err := minio.New(o.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(o.AccessKeyID, o.SecretAccessKey, ""),
		Secure: !o.Insecure,
		Region: o.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("repository %s: s3 client for %s: %w", name, o.Endpoint, err)
	}
	p := strings.Trim(o.Prefix, "/")
	if p != "" {
		p += "/"
	}
	return &S3Repository{name: name, cli: cli, bucket: o.Bucket, prefix: p}, nil
}

// Name implements Repository.
func (r *S3Repository) Name() string { return r.name }

func (r *S3Repository) s3err(op, key string, err error) error {
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "NoSuchKey":
		return fmt.Errorf("repository %s: %s %s: %w", r.name, op, key, ErrObjectNotFound)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch":
		return fmt.Errorf("repository %s: %s %s: access denied (%s): check the access key and secret", r.name, op, key, resp.Code)
	case "NoSuchBucket":
		return fmt.Errorf("repository %s: %s %s: bucket %q does not exist", r.name, op, key, r.bucket)
	}
	return fmt.Errorf("repository %s: %s %s: %w", r.name, op, key, err)
}

// Put implements Repository with a (multipart) PutObject of unknown size.
func (r *S3Repository) Put(ctx context.Context, key string, src io.Reader) (int64, error) {
	info, err := r.cli.PutObject(ctx, r.bucket, r.prefix+key, src, -1, minio.PutObjectOptions{PartSize: partSize, ContentType: "application/octet-stream"})
	if err != nil {
		return 0, r.s3err("put", key, err)
	}
	return info.Size, nil
}

// Get implements Repository.
func (r *S3Repository) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if _, err := r.Stat(ctx, key); err != nil {
		return nil, err
	}
	obj, err := r.cli.GetObject(ctx, r.bucket, r.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, r.s3err("get", key, err)
	}
	return obj, nil
}

// Stat implements Repository.
func (r *S3Repository) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	st, err := r.cli.StatObject(ctx, r.bucket, r.prefix+key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, r.s3err("stat", key, err)
	}
	return ObjectInfo{Key: key, Size: st.Size}, nil
}

// List implements Repository.
func (r *S3Repository) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	for o := range r.cli.ListObjects(ctx, r.bucket, minio.ListObjectsOptions{Prefix: r.prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, r.s3err("list", prefix, o.Err)
		}
		out = append(out, ObjectInfo{Key: strings.TrimPrefix(o.Key, r.prefix), Size: o.Size})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Repository.
func (r *S3Repository) Delete(ctx context.Context, key string) error {
	if err := r.cli.RemoveObject(ctx, r.bucket, r.prefix+key, minio.RemoveObjectOptions{}); err != nil {
		return r.s3err("delete", key, err)
	}
	return nil
}

// RemovePartial implements Repository: aborts incomplete multipart uploads
// under prefix.
func (r *S3Repository) RemovePartial(ctx context.Context, prefix string) error {
	var errs []error
	for u := range r.cli.ListIncompleteUploads(ctx, r.bucket, r.prefix+prefix, true) {
		if u.Err != nil {
			return r.s3err("list incomplete uploads", prefix, u.Err)
		}
		if err := r.cli.RemoveIncompleteUpload(ctx, r.bucket, u.Key); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return r.s3err("remove partial", prefix, err)
	}
	return nil
}

// EnsureBucket creates the bucket if it does not exist (tests, first
// set-up).
func (r *S3Repository) EnsureBucket(ctx context.Context) error {
	ok, err := r.cli.BucketExists(ctx, r.bucket)
	if err != nil {
		return r.s3err("bucket exists", r.bucket, err)
	}
	if ok {
		return nil
	}
	if err := r.cli.MakeBucket(ctx, r.bucket, minio.MakeBucketOptions{}); err != nil {
		return r.s3err("make bucket", r.bucket, err)
	}
	return nil
}

// BrokenRepository returns a Repository whose every operation fails with
// err: a repository that could not be set up (missing secret, say) makes
// each run that uses it fail with a clear record instead of stopping the
// agent.
func BrokenRepository(name string, err error) Repository { return brokenRepo{name, err} }

type brokenRepo struct {
	name string
	err  error
}

func (b brokenRepo) fail() error { return fmt.Errorf("repository %s: %w", b.name, b.err) }

func (b brokenRepo) Name() string                                          { return b.name }
func (b brokenRepo) Put(context.Context, string, io.Reader) (int64, error) { return 0, b.fail() }
func (b brokenRepo) Get(context.Context, string) (io.ReadCloser, error)    { return nil, b.fail() }
func (b brokenRepo) Stat(context.Context, string) (ObjectInfo, error)      { return ObjectInfo{}, b.fail() }
func (b brokenRepo) List(context.Context, string) ([]ObjectInfo, error)    { return nil, b.fail() }
func (b brokenRepo) Delete(context.Context, string) error                  { return b.fail() }
func (b brokenRepo) RemovePartial(context.Context, string) error           { return b.fail() }
