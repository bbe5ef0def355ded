//go:build linux

package handlers

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSystemdScopeCommandLine checks how a run is wrapped for a systemd scope
// without systemd: fake systemd-run and systemctl record their arguments
// (systemd-run then execs what follows "--", as the real one does with
// --scope), the real setpriv drops to the handler user.
func TestSystemdScopeCommandLine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	dir := testDir(t)
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	h := hostIsolation{
		kind:       IsolationSystemdScope,
		systemdRun: script("systemd-run", `echo "$@" > "`+dir+`/run.args"; while [ "$1" != "--" ]; do shift; done; shift; exec "$@"`),
		systemctl:  script("systemctl", `echo "$@" >> "`+dir+`/ctl.args"`),
		setpriv:    setpriv,
	}
	u, err := resolveUser(testUser(t))
	if err != nil || u == nil {
		t.Fatalf("resolveUser: %v, %v", u, err)
	}
	cmd := exec.Command(ShellPath, "-c", `id -u; id -G; echo "$$"`)
	setProcessGroup(cmd, u)
	box, err := h.prepare(cmd, Health, u)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.Output()
	if rerr := box.release(); rerr != nil {
		t.Errorf("release: %v", rerr)
	}
	if err != nil {
		t.Fatalf("run: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || lines[0] != strconv.FormatUint(uint64(u.uid), 10) || slices.Contains(strings.Fields(lines[1]), "0") {
		t.Errorf("handler saw uid and groups %q, want uid %d and no group 0", lines, u.uid)
	}
	if lines[len(lines)-1] != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("handler pid %s, want the started pid %d (systemd-run and setpriv exec, keeping the process group)", lines[len(lines)-1], cmd.Process.Pid)
	}
	runArgs, _ := os.ReadFile(filepath.Join(dir, "run.args"))
	if !strings.HasPrefix(string(runArgs), "--scope --quiet --collect --unit=dbpilot-handler-") || !strings.Contains(string(runArgs), "-health.scope") {
		t.Errorf("systemd-run arguments %q", runArgs)
	}
	ctlArgs, _ := os.ReadFile(filepath.Join(dir, "ctl.args"))
	if !strings.HasPrefix(string(ctlArgs), "kill --signal=SIGKILL dbpilot-handler-") {
		t.Errorf("systemctl arguments %q, want a SIGKILL of the scope", ctlArgs)
	}
}

// TestRemoveStaleCgroups: a run cgroup left by an agent that died during the
// run (its pid is gone) is emptied and removed at detection; one of a live
// agent is left alone.
func TestRemoveStaleCgroups(t *testing.T) {
	parent, err := selfCgroupDir()
	if err != nil {
		t.Skipf("no cgroup v2: %v", err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	staleDir := filepath.Join(parent, "dbpilot-handler-"+strconv.Itoa(dead.Process.Pid)+"-1-health")
	if err := os.Mkdir(staleDir, 0o755); err != nil {
		t.Skipf("cannot create a cgroup here: %v", err)
	}
	fd, err := os.Open(staleDir)
	if err != nil {
		t.Fatal(err)
	}
	box := &runBox{dir: staleDir, fd: fd}
	sleep := exec.Command("sleep", "1000")
	sleep.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	if err := sleep.Start(); err != nil {
		_ = box.release()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleep.Wait() }()
	t.Cleanup(func() { _ = sleep.Process.Kill(); _ = box.release() })

	live := filepath.Join(parent, "dbpilot-handler-"+strconv.Itoa(os.Getppid())+"-1-health")
	if err := os.Mkdir(live, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(live) })

	removeStaleCgroups(parent)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the process in the stale cgroup survived")
	}
	if _, err := os.Stat(staleDir); !os.IsNotExist(err) {
		t.Errorf("stale cgroup %s not removed: %v", staleDir, err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("cgroup of a live agent removed: %v", err)
	}
}
