package infra

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dbpilot/dbpilot/internal/testutil"
)

// running reports whether pid is a live process (not a zombie).
func running(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}

// TestProcessStopDeadNodeGroup: stopping a node whose agent died (what a
// repair's Restart does) kills the stragglers of the node's process group,
// but never the process group of a program that reuses the dead agent's
// pid.
func TestProcessStopDeadNodeGroup(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	p, err := NewProcess(root, "/bin/false", zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	handle := func(pid int, node string) []byte {
		dir := filepath.Join(root, "c1", node)
		b, _ := json.Marshal(ProcessHandle{Dir: dir, Config: filepath.Join(dir, "agent.yaml"), PID: pid})
		return b
	}

	// A stranger: its own process group, whose leader has the pid the
	// handle records (as if the dead agent's pid had been reused).
	stranger := exec.Command("sleep", "60")
	stranger.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stranger.Process.Kill(); _ = stranger.Wait() }()
	if err := p.Delete(ctx, NodeSpec{ClusterID: "c1", Node: "node1"}, handle(stranger.Process.Pid, "node1")); err != nil {
		t.Fatal(err)
	}
	if !running(stranger.Process.Pid) {
		t.Fatal("stopping a dead node killed the process group of the program that reuses its pid")
	}

	// A dead agent whose group still holds a straggler (as PostgreSQL's
	// children may for a moment): the straggler is killed.
	leader := exec.Command("sh", "-c", "sleep 60 & echo $!; wait")
	leader.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := leader.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	straggler, _ := strconv.Atoi(strings.TrimSpace(line))
	defer func() { _ = syscall.Kill(straggler, syscall.SIGKILL) }()
	_ = leader.Process.Kill()
	_ = leader.Wait() // the leader's pid is free; its group lives on in the straggler
	if !running(straggler) {
		t.Fatalf("straggler %d not running before the stop", straggler)
	}
	if err := p.Delete(ctx, NodeSpec{ClusterID: "c1", Node: "node2"}, handle(leader.Process.Pid, "node2")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, fmt.Sprintf("straggler %d of the dead node's group to be gone after the stop", straggler),
		func() bool { return !running(straggler) })
}
