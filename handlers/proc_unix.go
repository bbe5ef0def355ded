//go:build unix

package handlers

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup makes cmd the leader of a new process group, so that
// killGroup reaches its background children and grandchildren, and runs it
// with u's uid, gid and supplementary groups when u is not nil.
func setProcessGroup(cmd *exec.Cmd, u *osUser) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if u != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}
	}
}

// killGroup sends SIGKILL to the process group pgid (the group leader's
// pid). It returns os.ErrProcessDone when the group is empty.
func killGroup(pgid int) error {
	// A negative pid addresses the whole group.
	err := syscall.Kill(-pgid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}
