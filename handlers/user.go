package handlers

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
)

// ErrRunAsRoot is wrapped by the Err of a run refused because it would have
// run as root: handlers never do (see [Set.User]).
var ErrRunAsRoot = errors.New("handlers never run as root")

// osUser is the resolved identity a handler runs as.
type osUser struct {
	name     string
	uid, gid uint32
	groups   []uint32 // supplementary groups
	home     string
}

// resolveUser returns the identity handlers run as for the configured user
// name (Set.User). It returns nil, nil when handlers run as the agent's own,
// unprivileged user. Errors: the agent runs as root and name is empty; name
// is root or uid 0 (both wrap ErrRunAsRoot); name is not a known user; or the
// agent is not root and name is another user (it cannot switch to it).
func resolveUser(name string) (*osUser, error) {
	euid := os.Geteuid()
	if name == "" {
		if euid == 0 {
			return nil, fmt.Errorf("%w: the agent runs as root, so set handlers.user to an unprivileged OS user such as postgres", ErrRunAsRoot)
		}
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if _, nerr := strconv.Atoi(name); nerr == nil && errors.As(err, &unknown) {
			u, err = user.LookupId(name)
		}
		if err != nil {
			return nil, fmt.Errorf("no OS user %q (%v); create it or name an existing unprivileged user", name, err)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("OS user %q: non-numeric uid or gid: %w", name, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("%w: %q has uid 0; name an unprivileged OS user such as postgres", ErrRunAsRoot, name)
	}
	if euid != 0 {
		if uint64(euid) == uid {
			return nil, nil // already that user
		}
		return nil, fmt.Errorf("the agent runs as uid %d and cannot switch handlers to %q (uid %d); run the agent as root or remove handlers.user", euid, name, uid)
	}
	ou := &osUser{name: u.Username, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.ParseUint(s, 10, 32); err == nil {
				ou.groups = append(ou.groups, uint32(g))
			}
		}
	}
	return ou, nil
}
