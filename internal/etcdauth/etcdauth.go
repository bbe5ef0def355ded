// Package etcdauth turns on etcd authentication and manages the per-cluster
// agent users of dbpilot: one etcd user and one role of the same name per
// cluster, the role holding read/write permission on exactly that cluster's
// key prefix (docs/security.md).
//
// etcd's RBAC model (https://etcd.io/docs/v3.5/op-guide/authentication/rbac/):
// a user holds roles, a role holds permissions, a permission is READ, WRITE
// or READWRITE on one key or on a half-open key range [key, range_end).
// Authentication is off until `auth enable`, which requires a user named
// root holding the role root; root may do anything, including user and role
// management. Every change to users, roles or permissions bumps etcd's auth
// revision, which invalidates the tokens issued before it; clientv3
// re-authenticates transparently (ErrAuthOldRevision).
//
// Leases under authentication (etcd server v3.7 etcdserver/apply/auth.go,
// etcdserver/v3_server.go): any authenticated user may grant a lease and
// keep it alive; revoking a lease needs write permission on every key
// attached to it, and LeaseTimeToLive read permission on them. An agent's
// lease only ever carries keys under its cluster prefix, so a prefix-scoped
// role is enough for the whole HA path (grant, keepalive, txn, watch,
// concurrency.Mutex, revoke at shutdown).
package etcdauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// RootUser is etcd's administrator: `auth enable` refuses to run unless a
// user of this name holds the role of the same name
// (https://etcd.io/docs/v3.5/op-guide/authentication/rbac/#enabling-authentication).
const RootUser = "root"

// EnableAuth makes sure authentication is enabled on the etcd cli talks to
// (cli must be unauthenticated or root, and auth must still be off for the
// first call): it creates the root user with rootPassword unless it
// exists, grants it the root role and runs `auth enable`. When
// authentication is already on it does nothing: the caller then connects
// as root with its password. It reports whether it enabled authentication.
func EnableAuth(ctx context.Context, cli *clientv3.Client, rootPassword string, log *zap.Logger) (bool, error) {
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

// EnsurePrefixUser makes sure etcd user name exists with password and
// holds exactly one role, also called name, whose only permission is
// READWRITE on the range [prefix, clientv3.GetPrefixRangeEnd(prefix)):
// every key starting with prefix and nothing else. prefix should end in
// "/" so that cluster "c" does not cover cluster "c2". cli must be root
// (or hold a role that may manage users). It is idempotent; an existing
// user keeps its password (passwords of agent users are derived, not
// random, so a repeated call passes the same one), and permissions of an
// existing role outside the prefix are revoked.
func EnsurePrefixUser(ctx context.Context, cli *clientv3.Client, name, password, prefix string) error {
	if name == "" || name == RootUser || password == "" || prefix == "" {
		return fmt.Errorf("etcd prefix user: name (not root), password and prefix are required (name %q, prefix %q)", name, prefix)
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	if _, err := cli.RoleAdd(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("etcd add role %s: %w", name, err)
	}
	role, err := cli.RoleGet(ctx, name)
	if err != nil {
		return fmt.Errorf("etcd get role %s: %w", name, err)
	}
	have := false
	for _, p := range role.Perm {
		if string(p.Key) == prefix && string(p.RangeEnd) == end && p.PermType == authpb.READWRITE {
			have = true
			continue
		}
		if _, err := cli.RoleRevokePermission(ctx, name, string(p.Key), string(p.RangeEnd)); err != nil {
			return fmt.Errorf("etcd revoke stray permission of role %s: %w", name, err)
		}
	}
	if !have {
		if _, err := cli.RoleGrantPermission(ctx, name, prefix, end, clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
			return fmt.Errorf("etcd grant %s on %s: %w", name, prefix, err)
		}
	}
	u, err := cli.UserGet(ctx, name)
	switch {
	case errors.Is(err, rpctypes.ErrUserNotFound):
		if _, err := cli.UserAdd(ctx, name, password); err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
			return fmt.Errorf("etcd add user %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("etcd get user %s: %w", name, err)
	}
	hasRole := false
	if u != nil {
		for _, r := range u.Roles {
			if r == name {
				hasRole = true
				continue
			}
			if _, err := cli.UserRevokeRole(ctx, name, r); err != nil {
				return fmt.Errorf("etcd revoke stray role %s of user %s: %w", r, name, err)
			}
		}
	}
	if !hasRole {
		if _, err := cli.UserGrantRole(ctx, name, name); err != nil {
			return fmt.Errorf("etcd grant role %s: %w", name, err)
		}
	}
	return nil
}

// DeletePrefixUser deletes etcd user name and its role name; either being
// absent already is not an error (a repeated delete succeeds). Sessions
// holding a token of the user fail from then on.
func DeletePrefixUser(ctx context.Context, cli *clientv3.Client, name string) error {
	if name == "" || name == RootUser {
		return fmt.Errorf("etcd prefix user: refusing to delete %q", name)
	}
	if _, err := cli.UserDelete(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("etcd delete user %s: %w", name, err)
	}
	if _, err := cli.RoleDelete(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
		return fmt.Errorf("etcd delete role %s: %w", name, err)
	}
	return nil
}

// UserExists reports whether etcd user name exists (cli must be root).
func UserExists(ctx context.Context, cli *clientv3.Client, name string) (bool, error) {
	_, err := cli.UserGet(ctx, name)
	switch {
	case errors.Is(err, rpctypes.ErrUserNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// RoleExists reports whether etcd role name exists (cli must be root).
func RoleExists(ctx context.Context, cli *clientv3.Client, name string) (bool, error) {
	_, err := cli.RoleGet(ctx, name)
	switch {
	case errors.Is(err, rpctypes.ErrRoleNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
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
