package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// ArchiveServer answers archive_command and restore_command requests on a
// Unix socket. PostgreSQL runs those commands as its OS user, which must
// not see repository credentials: `dbpilot-agent wal-push` / `wal-fetch`
// only ask the agent (root, holding the host key) over this socket, and the
// agent reads or writes the WAL file itself. Requests are confined to the
// data directory: push reads only files under DataDir/pg_wal, fetch writes
// only under DataDir.
type ArchiveServer struct {
	Archive WALArchive
	DataDir string
	// Chown, if set, gives fetched files to the PostgreSQL OS user.
	Chown func(string) error
	Log   *zap.Logger
}

// Serve listens on socketPath (replacing a stale socket), owned by uid/gid
// when chown is true and mode 0600, and serves until ctx ends; the returned
// function stops it and waits. Errors: the listen failure.
func (a *ArchiveServer) Serve(ctx context.Context, socketPath string, uid, gid int, chown bool) (func(), error) {
	_ = os.Remove(socketPath)
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("archive socket %s: %w", socketPath, err)
	}
	if err := os.Chmod(socketPath, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("archive socket %s: %w", socketPath, err)
	}
	if chown {
		if err := os.Lchown(socketPath, uid, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("archive socket %s: %w", socketPath, err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /push", a.push)
	mux.HandleFunc("POST /fetch", a.fetch)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	stop := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
		_ = os.Remove(socketPath)
	}
	return stop, nil
}

func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && !strings.HasPrefix(rel, "..") && !filepath.IsAbs(rel)
}

func (a *ArchiveServer) push(w http.ResponseWriter, r *http.Request) {
	p := filepath.Clean(r.URL.Query().Get("path"))
	if !within(filepath.Join(a.DataDir, "pg_wal"), p) {
		http.Error(w, "path outside the data directory's pg_wal", http.StatusForbidden)
		return
	}
	start := time.Now()
	if err := a.Archive.Push(r.Context(), p); err != nil {
		a.Log.Error("wal-push failed", zap.String("file", filepath.Base(p)), zap.Error(err))
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	a.Log.Debug("wal pushed", zap.String("file", filepath.Base(p)), zap.Duration("took", time.Since(start)))
	w.WriteHeader(http.StatusNoContent)
}

func (a *ArchiveServer) fetch(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	dest := filepath.Clean(r.URL.Query().Get("dest"))
	if !within(a.DataDir, dest) {
		http.Error(w, "destination outside the data directory", http.StatusForbidden)
		return
	}
	err := a.Archive.Fetch(r.Context(), name, dest, a.Chown)
	switch {
	case errors.Is(err, ErrObjectNotFound):
		http.Error(w, "not in the archive", http.StatusNotFound)
	case err != nil:
		a.Log.Error("wal-fetch failed", zap.String("file", name), zap.Error(err))
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// ErrNotArchived is returned by FetchVia when the archive does not hold the
// file (restore_command must then exit non-zero, which is normal at the end
// of the archive).
var ErrNotArchived = errors.New("not in the archive")

func socketClient(socketPath string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
	}}
}

func call(ctx context.Context, socketPath, op string, q url.Values) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/"+op+"?"+q.Encode(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := socketClient(socketPath).Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s via %s: agent not reachable: %w", op, socketPath, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s: %s", op, strings.TrimSpace(string(body)))
	}
	return resp.StatusCode, nil
}

// PushVia asks the agent listening on socketPath to archive the WAL file at
// path (absolute). It returns nil only once the file is durably archived.
func PushVia(ctx context.Context, socketPath, path string) error {
	_, err := call(ctx, socketPath, "push", url.Values{"path": {path}})
	return err
}

// FetchVia asks the agent listening on socketPath to restore archived WAL
// file name to dest (absolute). Errors: ErrNotArchived.
func FetchVia(ctx context.Context, socketPath, name, dest string) error {
	code, err := call(ctx, socketPath, "fetch", url.Values{"name": {name}, "dest": {dest}})
	if code == http.StatusNotFound {
		return fmt.Errorf("wal-fetch %s: %w", name, ErrNotArchived)
	}
	return err
}
