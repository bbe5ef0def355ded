package embedetcd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// RootUser is etcd's administrator: `auth enable` refuses to run unless a
// user of this name holds the role of the same name
// (https://etcd.io/docs/v3.5/op-guide/authentication/rbac/#enabling-authentication).
const RootUser = "root"

// enableAuth makes sure authentication is enabled on the etcd cli talks to
// (cli must be unauthenticated or root, and auth must still be off for the
// first call): it creates the root user with rootPassword unless it
// exists, grants it the root role and runs `auth enable`. When
// authentication is already on it does nothing: the caller then connects
// as root with its password. It reports whether it enabled authentication.
func enableAuth(ctx context.Context, cli *clientv3.Client, rootPassword string, log *zap.Logger) (bool, error) {
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return false, fmt.Errorf("etcd auth status: %w", err)
	}
	if st.Enabled {
		return false, nil
	}
	if rootPassword == "" {
		return false, errors.New("etcd root password: empty")
	}
	if _, err := cli.UserAdd(ctx, RootUser, rootPassword); err != nil {
		if !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
			return false, fmt.Errorf("etcd add user root: %w", err)
		}
		if _, err := cli.UserChangePassword(ctx, RootUser, rootPassword); err != nil {
			return false, fmt.Errorf("etcd set root password: %w", err)
		}
	}
	// The root role exists implicitly; granting it needs no RoleAdd.
	if _, err := cli.UserGrantRole(ctx, RootUser, RootUser); err != nil {
		return false, fmt.Errorf("etcd grant root role: %w", err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return false, fmt.Errorf("etcd auth enable: %w", err)
	}
	log.Info("etcd authentication enabled", zap.String("user", RootUser))
	return true, nil
}

// LoadOrCreatePassword returns the password kept in file path, creating the
// file (mode 0600, its folder 0700 if missing) with 32 random hex digits
// when it does not exist. A file that exists but is empty is an error.
func LoadOrCreatePassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		pw := strings.TrimSpace(string(b))
		if pw == "" {
			return "", fmt.Errorf("etcd password file %s is empty", path)
		}
		return pw, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("etcd password file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("etcd password file: %w", err)
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	pw := hex.EncodeToString(raw)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(pw+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("etcd password file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("etcd password file: %w", err)
	}
	return pw, nil
}
