//go:build linux

package handlers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// hostIsolation is what this host offers, found once by detectHost.
type hostIsolation struct {
	kind Isolation
	// reason says why a better mode is not used.
	reason string
	// cgroupParent is the cgroup v2 directory run cgroups are created in
	// (IsolationCgroup).
	cgroupParent string
	// systemdRun, systemctl and setpriv are the programs' paths
	// (IsolationSystemdScope).
	systemdRun, systemctl, setpriv string
}

// runSeq numbers the runs of this process, for unique cgroup and unit names.
var runSeq atomic.Uint64

// probeTimeout bounds each probe of detectHost.
const probeTimeout = 5 * time.Second

// detectHost probes, best first: a systemd scope, a cgroup v2 directory,
// then settles for process groups.
func detectHost() hostIsolation {
	var reasons []string
	h, err := probeSystemd()
	if err == nil {
		return h
	}
	reasons = append(reasons, "systemd scope: "+err.Error())
	h, err = probeCgroup()
	if err == nil {
		h.reason = strings.Join(reasons, "; ")
		return h
	}
	reasons = append(reasons, "cgroup v2: "+err.Error())
	return hostIsolation{kind: IsolationProcessGroup, reason: strings.Join(reasons, "; ")}
}

// mode returns the isolation in use.
func (h hostIsolation) mode() Isolation { return h.kind }

// why says why a better mode is not used.
func (h hostIsolation) why() string { return h.reason }

// probeSystemd checks that systemd is the init system (sd_booted: the
// directory /run/systemd/system exists) and that systemd-run can create a
// scope for this user.
func probeSystemd() (hostIsolation, error) {
	if st, err := os.Stat("/run/systemd/system"); err != nil || !st.IsDir() {
		return hostIsolation{}, errors.New("systemd is not the init system (no /run/systemd/system)")
	}
	run, err := exec.LookPath("systemd-run")
	if err != nil {
		return hostIsolation{}, err
	}
	ctl, err := exec.LookPath("systemctl")
	if err != nil {
		return hostIsolation{}, err
	}
	// systemd-run must stay root to create the scope; setpriv (util-linux)
	// then drops to the handler's user.
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return hostIsolation{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, run, "--scope", "--quiet", "--collect", "--", "/bin/sh", "-c", ":").CombinedOutput(); err != nil {
		return hostIsolation{}, fmt.Errorf("systemd-run --scope failed: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return hostIsolation{kind: IsolationSystemdScope, systemdRun: run, systemctl: ctl, setpriv: setpriv}, nil
}

// probeCgroup finds the agent's own cgroup v2 directory and checks that a
// process can be started in a new child of it.
func probeCgroup() (hostIsolation, error) {
	parent, err := selfCgroupDir()
	if err != nil {
		return hostIsolation{}, err
	}
	h := hostIsolation{kind: IsolationCgroup, cgroupParent: parent}
	removeStaleCgroups(parent)
	cmd := exec.Command(ShellPath, "-c", ":")
	box, err := h.prepare(cmd, "probe", nil)
	if err != nil {
		return hostIsolation{}, err
	}
	defer func() { _ = box.release() }()
	if err := cmd.Run(); err != nil {
		return hostIsolation{}, fmt.Errorf("start a process in %s: %w", box.dir, err)
	}
	return h, nil
}

// removeStaleCgroups kills and removes the run cgroups under parent left by
// agent processes that no longer exist (an agent killed during a run).
func removeStaleCgroups(parent string) {
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "dbpilot-handler-")
		if !ok || !e.IsDir() {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue // ours, or its agent still runs (or cannot be told)
		}
		box := &runBox{dir: filepath.Join(parent, e.Name())}
		_ = box.kill()
		for range 100 {
			if err := os.Remove(box.dir); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// selfCgroupDir returns the directory of this process's cgroup in the
// mounted cgroup v2 hierarchy.
func selfCgroupDir() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	rel, found := "", false
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel, found = p, true
			break
		}
	}
	if !found {
		return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 35 0:30 / /sys/fs/cgroup rw,... shared:9 - cgroup2 cgroup2 rw"
		left, right, ok := strings.Cut(sc.Text(), " - ")
		lf, rf := strings.Fields(left), strings.Fields(right)
		if !ok || len(lf) < 5 || len(rf) < 1 || rf[0] != "cgroup2" || lf[3] != "/" {
			continue
		}
		dir := filepath.Join(lf[4], rel)
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return dir, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("cgroup v2 is not mounted (or not this process's cgroup)")
}

// runBox is the container of one run: a cgroup directory or a systemd scope,
// or nothing (process group only).
type runBox struct {
	dir       string   // cgroup v2 directory (IsolationCgroup)
	fd        *os.File // open dir, for clone3 CLONE_INTO_CGROUP
	unit      string   // systemd scope unit (IsolationSystemdScope)
	systemctl string
}

// prepare sets cmd up to start inside a new container of the host's kind and
// returns it; release it after the run. u is the user the handler runs as
// (nil: the agent's); with a systemd scope, systemd-run runs as the agent's
// user (it must, to create the scope) and execs setpriv, which switches to u
// (uid, gid, u's groups) and execs the handler: one process, one pid.
func (h hostIsolation) prepare(cmd *exec.Cmd, p Phase, u *osUser) (*runBox, error) {
	name := fmt.Sprintf("dbpilot-handler-%d-%d-%s", os.Getpid(), runSeq.Add(1), p)
	switch h.kind {
	case IsolationCgroup:
		dir := filepath.Join(h.cgroupParent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		fd, err := os.Open(dir)
		if err != nil {
			_ = os.Remove(dir)
			return nil, fmt.Errorf("open cgroup: %w", err)
		}
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(fd.Fd())
		return &runBox{dir: dir, fd: fd}, nil
	case IsolationSystemdScope:
		unit := name + ".scope"
		args := []string{h.systemdRun, "--scope", "--quiet", "--collect", "--unit=" + unit,
			"--description=dbpilot " + string(p) + " handler"}
		args = append(args, "--")
		if u != nil {
			args = append(args, h.setpriv, "--reuid="+strconv.FormatUint(uint64(u.uid), 10),
				"--regid="+strconv.FormatUint(uint64(u.gid), 10), "--init-groups", "--")
		}
		cmd.Args = append(append(args, cmd.Path), cmd.Args[1:]...)
		cmd.Path = h.systemdRun
		if cmd.SysProcAttr != nil {
			cmd.SysProcAttr.Credential = nil
		}
		return &runBox{unit: unit, systemctl: h.systemctl}, nil
	}
	return &runBox{}, nil
}

// kill sends SIGKILL to every process in the container. It is safe to call
// more than once and on an empty container.
func (b *runBox) kill() error {
	switch {
	case b.dir != "":
		return killCgroup(b.dir)
	case b.unit != "":
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, b.systemctl, "kill", "--signal=SIGKILL", b.unit).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "not loaded") {
			return fmt.Errorf("systemctl kill %s: %v: %s", b.unit, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// release kills what is left in the container and removes it (a systemd
// scope is collected by systemd once empty).
func (b *runBox) release() error {
	if b.dir == "" {
		return b.kill()
	}
	if b.fd != nil {
		defer b.fd.Close()
	}
	err := b.kill()
	// The killed processes leave the cgroup asynchronously.
	deadline := time.Now().Add(2 * time.Second)
	for {
		rerr := os.Remove(b.dir)
		if rerr == nil || errors.Is(rerr, os.ErrNotExist) {
			return err
		}
		if time.Now().After(deadline) {
			return errors.Join(err, fmt.Errorf("remove cgroup: %w", rerr))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killCgroup SIGKILLs every process in the cgroup v2 directory dir:
// cgroup.kill since Linux 5.14, else each pid of cgroup.procs until none is
// left.
func killCgroup(dir string) error {
	if f, err := os.OpenFile(filepath.Join(dir, "cgroup.kill"), os.O_WRONLY, 0); err == nil {
		_, werr := f.WriteString("1")
		cerr := f.Close()
		if werr == nil && cerr == nil {
			return nil
		}
	}
	for range 100 {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		pids := strings.Fields(string(b))
		if len(pids) == 0 {
			return nil
		}
		for _, s := range pids {
			if pid, err := strconv.Atoi(s); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("cgroup %s still has processes after repeated SIGKILL", dir)
}
