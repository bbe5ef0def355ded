package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/dbpilot/dbpilot/agent/postgres"
)

// Method names.
const (
	MethodPhysical = "physical" // pg_basebackup, tar stream, zstd
	MethodLogical  = "logical"  // pg_dump -Fc per database
	MethodVerify   = "verify"   // restore drill of the newest physical backup
)

// FileInfo describes one stored file of a backup.
type FileInfo struct {
	Name   string `json:"name"`   // key relative to the backup's directory
	Size   int64  `json:"size"`   // stored bytes
	SHA256 string `json:"sha256"` // hex sha256 of the stored bytes
}

// PutFunc stores one file of a backup (atomically, see Repository.Put) and
// returns its size and checksum.
type PutFunc func(ctx context.Context, name string, r io.Reader) (FileInfo, error)

// Result is what a method reports about a finished backup.
type Result struct {
	Files    []FileInfo
	StartLSN string // WAL position the backup starts at ("" for logical)
	StopLSN  string // WAL position it is consistent at ("" for logical)
	Timeline uint32
}

// Method takes one backup of a database engine. PostgreSQL's physical and
// logical methods implement it; MySQL/MariaDB methods (mariabackup,
// mysqldump) slot in with the same shape.
type Method interface {
	// Name is the method's name in job definitions.
	Name() string
	// Backup streams the backup's files through put and returns what it
	// stored. It must not leave anything behind on failure except files
	// put has not completed (which the repository never lists).
	Backup(ctx context.Context, put PutFunc) (Result, error)
}

// PGSource is a PostgreSQL server the methods connect to with Login.
type PGSource struct {
	PG    *postgres.Instance   // local instance: programs run as its OS user
	Login postgres.Credentials // role with REPLICATION (physical) / pg_read_all_data (logical)
	Label string               // backup label shown in pg_stat_progress_basebackup
}

// Physical is the full physical backup of a PostgreSQL cluster:
// `pg_basebackup -D - -Ft -X fetch --checkpoint=fast` streamed as one tar
// through the compressor into the repository (file BaseFileName), sha256
// computed on the way. WAL needed to make the backup consistent is inside the tar.
type Physical struct {
	Src PGSource
	// MaxRate is pg_basebackup's --max-rate ("" = unthrottled).
	MaxRate string
	// Compression is CompressS2 (default, ""), CompressZstd or CompressNone.
	Compression string
}

// Compression methods of physical backups. s2 (klauspost/compress, a
// Snappy extension; the default) is fast enough that a full backup takes no
// longer than a plain uncompressed pg_basebackup to the same disk
// (docs/benchmarks.md); zstd stores about 2.5× less but takes about 1.6× as
// long.
const (
	CompressZstd = "zstd"
	CompressS2   = "s2"
	CompressNone = "none"
)

// BaseFileName returns the data file name of a physical backup compressed
// with c.
func BaseFileName(c string) string {
	switch c {
	case CompressZstd:
		return "base.tar.zst"
	case CompressNone:
		return "base.tar"
	}
	return "base.tar.s2"
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

func compressor(c string, w io.Writer) (io.WriteCloser, error) {
	switch c {
	case CompressS2, "":
		return s2.NewWriter(w, s2.WriterConcurrency(2)), nil
	case CompressNone:
		return nopWriteCloser{w}, nil
	case CompressZstd:
		return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2))
	}
	return nil, fmt.Errorf("unknown compression %q (want zstd, s2 or none)", c)
}

// decompressor returns a reader of the tar inside a physical backup's data
// file (chosen by the file name); the decoder reads r on the caller's
// goroutine only.
func decompressor(name string, r io.Reader) (io.Reader, func(), error) {
	switch {
	case strings.HasSuffix(name, ".zst"):
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	case strings.HasSuffix(name, ".s2"):
		return s2.NewReader(r), func() {}, nil
	}
	return r, func() {}, nil
}

// Name implements Method.
func (Physical) Name() string { return MethodPhysical }

var (
	startRE = regexp.MustCompile(`write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)`)
	endRE   = regexp.MustCompile(`write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)`)
)

// Backup implements Method.
func (m Physical) Backup(ctx context.Context, put PutFunc) (Result, error) {
	pr, pw := io.Pipe()
	enc, err := compressor(m.Compression, pw)
	if err != nil {
		return Result{}, fmt.Errorf("physical backup: %w", err)
	}
	baseFile := BaseFileName(m.Compression)
	type putResult struct {
		fi  FileInfo
		err error
	}
	done := make(chan putResult, 1)
	go func() {
		fi, err := put(ctx, baseFile, pr)
		pr.CloseWithError(err) // unblock the writer if put gave up early
		done <- putResult{fi, err}
	}()
	args := append(m.Src.PG.ConnArgs(m.Src.Login.Username), "-D", "-", "-Ft", "-X", "fetch",
		"--checkpoint=fast", "--no-manifest", "-v", "-l", m.Src.Label)
	if m.MaxRate != "" {
		args = append(args, "--max-rate="+m.MaxRate)
	}
	stderr, runErr := m.Src.PG.StreamTool(ctx, "pg_basebackup", args, postgres.ToolOptions{Stdout: enc, Login: &m.Src.Login})
	if runErr == nil {
		runErr = enc.Close()
	} else {
		enc.Close()
	}
	if runErr != nil {
		pw.CloseWithError(runErr)
	} else {
		pw.Close()
	}
	res := <-done
	if res.err != nil && (runErr == nil || !errors.Is(res.err, runErr)) { // a storage error explains a broken pipe in pg_basebackup
		return Result{}, fmt.Errorf("physical backup: store %s: %w", baseFile, res.err)
	}
	if runErr != nil {
		return Result{}, fmt.Errorf("physical backup: %w", runErr)
	}
	r := Result{Files: []FileInfo{res.fi}}
	if mm := startRE.FindStringSubmatch(stderr); mm != nil {
		r.StartLSN = mm[1]
		tl, _ := strconv.ParseUint(mm[2], 10, 32)
		r.Timeline = uint32(tl)
	}
	if mm := endRE.FindStringSubmatch(stderr); mm != nil {
		r.StopLSN = mm[1]
	}
	if r.StartLSN == "" || r.StopLSN == "" {
		return Result{}, fmt.Errorf("physical backup: pg_basebackup did not report start/end LSN; output: %s", stderr)
	}
	return r, nil
}

// Logical is a logical dump of every connectable database with
// `pg_dump -Fc` (one "<db>.dump" file each), plus the global objects
// (roles without passwords, tablespaces) as "globals.sql".
type Logical struct{ Src PGSource }

// Name implements Method.
func (Logical) Name() string { return MethodLogical }

// Backup implements Method.
func (m Logical) Backup(ctx context.Context, put PutFunc) (Result, error) {
	dbs, err := m.Src.PG.Databases(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("logical backup: %w", err)
	}
	var res Result
	for _, db := range dbs {
		fi, err := m.stream(ctx, put, db+".dump", "pg_dump", append(m.Src.PG.ConnArgs(m.Src.Login.Username), "-Fc", "-d", db))
		if err != nil {
			return Result{}, fmt.Errorf("logical backup of %s: %w", db, err)
		}
		res.Files = append(res.Files, fi)
	}
	return res, nil
}

func (m Logical) stream(ctx context.Context, put PutFunc, name, tool string, args []string) (FileInfo, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	var fi FileInfo
	go func() {
		var err error
		fi, err = put(ctx, name, pr)
		pr.CloseWithError(err)
		done <- err
	}()
	_, runErr := m.Src.PG.StreamTool(ctx, tool, args, postgres.ToolOptions{Stdout: pw, Login: &m.Src.Login})
	pw.CloseWithError(runErr)
	if putErr := <-done; putErr != nil {
		return FileInfo{}, putErr
	}
	if runErr != nil {
		return FileInfo{}, runErr
	}
	return fi, nil
}

// hashingReader counts and hashes what is read through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func newHashingReader(r io.Reader) *hashingReader { return &hashingReader{r: r, h: sha256.New()} }

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

func (h *hashingReader) sum() string { return hex.EncodeToString(h.h.Sum(nil)) }

// WALSegmentName returns the name of the 16 MiB WAL segment holding lsn on
// timeline tl ("000000010000000000000003").
func WALSegmentName(tl uint32, lsn string) (string, error) {
	l, err := postgres.ParseLSN(lsn)
	if err != nil {
		return "", err
	}
	const segSize = 16 << 20
	seg := uint64(l) / segSize
	perID := uint64(0x100000000) / segSize
	return fmt.Sprintf("%08X%08X%08X", tl, seg/perID, seg%perID), nil
}

// walSegNo returns the segment number of a WAL file name (timeline ignored),
// ok false for history files and other names.
func walSegNo(name string) (uint64, bool) {
	base := strings.TrimSuffix(name, ".zst")
	if len(base) < 24 || strings.Contains(base[:24], ".") {
		return 0, false
	}
	hi, err1 := strconv.ParseUint(base[8:16], 16, 32)
	lo, err2 := strconv.ParseUint(base[16:24], 16, 32)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return hi*0x100 + lo, true
}
