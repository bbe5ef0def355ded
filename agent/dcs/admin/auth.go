package admin

// Per-cluster etcd users and roles (docs/security.md).
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

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// RootUser is etcd's administrator, which Admin never creates, changes or
// deletes as a cluster user.
const RootUser = "root"

// AuthEnabled reports whether authentication is on at the etcd server.
// Errors: the etcd request failed.
func (a *Admin) AuthEnabled(ctx context.Context) (bool, error) {
	rctx, cancel := a.req(ctx)
	defer cancel()
	st, err := a.cli.AuthStatus(rctx)
	if err != nil {
		return false, fmt.Errorf("etcd auth status: %w", err)
	}
	return st.Enabled, nil
}

// EnsureClusterUser makes sure etcd user name exists with password and
// holds exactly one role, also called name, whose only permission is
// READWRITE on the range [keys.Prefix(), clientv3.GetPrefixRangeEnd(prefix)):
// every key of the cluster and nothing else (the prefix ends in "/", so
// cluster "c" does not cover cluster "c2"). The Admin must log in as root
// (or hold a role that may manage users). It is idempotent; an existing
// user keeps its password (passwords of agent users are derived, not
// random, so a repeated call passes the same one), and permissions of an
// existing role outside the prefix and other roles of the user are revoked.
// Errors: name empty or root, password empty, or an etcd request failed
// (the error names the step).
func (a *Admin) EnsureClusterUser(ctx context.Context, name, password string, keys keyspace.Keys) error {
	return a.ensurePrefixUser(ctx, name, password, keys.Prefix())
}

func (a *Admin) ensurePrefixUser(ctx context.Context, name, password, prefix string) error {
	if name == "" || name == RootUser || password == "" || prefix == "" {
		return fmt.Errorf("etcd cluster user: name (not root), password and prefix are required (name %q, prefix %q)", name, prefix)
	}
	cli := a.cli
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

// DeleteClusterUser deletes etcd user name and its role name; either being
// absent already is not an error (a repeated delete succeeds). Sessions
// holding a token of the user fail from then on. Errors: name empty or
// root, or an etcd request failed.
func (a *Admin) DeleteClusterUser(ctx context.Context, name string) error {
	if name == "" || name == RootUser {
		return fmt.Errorf("etcd cluster user: refusing to delete %q", name)
	}
	if _, err := a.cli.UserDelete(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("etcd delete user %s: %w", name, err)
	}
	if _, err := a.cli.RoleDelete(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
		return fmt.Errorf("etcd delete role %s: %w", name, err)
	}
	return nil
}

// UserExists reports whether etcd user name exists (the Admin must be
// root). Errors: the etcd request failed.
func (a *Admin) UserExists(ctx context.Context, name string) (bool, error) {
	_, err := a.cli.UserGet(ctx, name)
	switch {
	case errors.Is(err, rpctypes.ErrUserNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// RoleExists reports whether etcd role name exists (the Admin must be
// root). Errors: the etcd request failed.
func (a *Admin) RoleExists(ctx context.Context, name string) (bool, error) {
	_, err := a.cli.RoleGet(ctx, name)
	switch {
	case errors.Is(err, rpctypes.ErrRoleNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}
