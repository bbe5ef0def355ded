package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Local state files under state_dir. The bootstrap lock file is the
// whitepaper's "lock file on the host which indicates that it has been
// initialized / bootstrapped" (Op 2); the role file remembers that this data
// directory was last a primary, so it is rewound before it follows anyone.
const (
	bootstrapLockFile = "bootstrap.lock"
	roleFile          = "role.json"
)

// BootstrapLock is the content of the bootstrap lock file.
type BootstrapLock struct {
	Cluster  string `json:"cluster"`
	Node     string `json:"node"`
	SystemID string `json:"system_id"`
	Role     string `json:"role"` // role at bootstrap: primary | replica
	AtMS     int64  `json:"at_ms"`
}

// roleMarker is the content of the role file.
type roleMarker struct {
	WasPrimary bool   `json:"was_primary"`
	Term       uint64 `json:"term"`
	AtMS       int64  `json:"at_ms"`
}

type localState struct{ dir string }

func (s localState) path(name string) string { return filepath.Join(s.dir, name) }

func (s localState) readJSON(name string, v any) (bool, error) {
	b, err := os.ReadFile(s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", s.path(name), err)
	}
	return true, nil
}

// writeJSON writes atomically and durably: temp file, fsync, rename, fsync dir.
func (s localState) writeJSON(name string, v any) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path(name + ".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path(name)); err != nil {
		return err
	}
	if d, err := os.Open(s.dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (s localState) bootstrapLock() (BootstrapLock, bool, error) {
	var l BootstrapLock
	ok, err := s.readJSON(bootstrapLockFile, &l)
	return l, ok, err
}

func (s localState) writeBootstrapLock(l BootstrapLock) error {
	l.AtMS = time.Now().UnixMilli()
	return s.writeJSON(bootstrapLockFile, l)
}

func (s localState) removeBootstrapLock() error {
	err := os.Remove(s.path(bootstrapLockFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (s localState) role() roleMarker {
	var r roleMarker
	_, _ = s.readJSON(roleFile, &r)
	return r
}

func (s localState) setWasPrimary(was bool, term uint64) error {
	return s.writeJSON(roleFile, roleMarker{WasPrimary: was, Term: term, AtMS: time.Now().UnixMilli()})
}
