package fenceguard

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		line    string
		arm     bool
		pid     int
		dl      time.Duration
		wantErr string
	}{
		{"disarm", false, 0, 0, ""},
		{"arm 4242 1000000", true, 4242, time.Millisecond, ""},
		{"arm 1 1000", false, 0, 0, "bad pid"},
		{"arm x 1000", false, 0, 0, "bad pid"},
		{"arm 4242 -5", false, 0, 0, "bad deadline"},
		{"arm 4242", false, 0, 0, "unknown command"},
		{"kill 4242", false, 0, 0, "unknown command"},
		{"", false, 0, 0, "unknown command"},
	}
	for _, tt := range tests {
		arm, pid, dl, err := ParseCommand(tt.line)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err %v, want %q", tt.line, err, tt.wantErr)
			}
			continue
		}
		if err != nil || arm != tt.arm || pid != tt.pid || dl != tt.dl {
			t.Errorf("%q = %v %d %s %v, want %v %d %s", tt.line, arm, pid, dl, err, tt.arm, tt.pid, tt.dl)
		}
	}
}

// victim starts a process with a child of its own, as a postmaster with a
// backend, and returns it and the child's pid.
func victim(t *testing.T) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 300 & echo $!; wait")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var child int
	if _, err := fmt.Fscan(out, &child); err != nil {
		t.Fatal(err)
	}
	return cmd, child
}

func alive(pid int) bool {
	f, err := stat(pid)
	return err == nil && f[0] != "Z" && syscall.Kill(pid, 0) == nil
}

// serve runs Serve on a pipe and returns the command writer and a channel
// of report lines.
func serve(t *testing.T) (io.WriteCloser, <-chan string) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Serve(inR, outW); outW.Close() }()
	lines := make(chan string, 16)
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := outR.Read(b)
			for _, l := range strings.Split(strings.TrimSpace(string(b[:n])), "\n") {
				if l != "" {
					lines <- l
				}
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	t.Cleanup(func() { inW.Close(); <-done })
	return inW, lines
}

// TestServeFencesAtDeadline: an armed deadline that is not renewed kills
// the process and its children; renewals and disarm keep them alive.
func TestServeFencesAtDeadline(t *testing.T) {
	t.Run("deadline passes: process and child killed", func(t *testing.T) {
		cmd, child := victim(t)
		in, lines := serve(t)
		fmt.Fprintf(in, "arm %d %d\n", cmd.Process.Pid, int64(MonoNow()+200*time.Millisecond))
		select {
		case l := <-lines:
			if !strings.HasPrefix(l, fmt.Sprintf("fenced pid=%d", cmd.Process.Pid)) || !strings.Contains(l, "children=1") || !strings.Contains(l, "err=<nil>") {
				t.Fatalf("report %q", l)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("not fenced 5 s after a 200 ms deadline")
		}
		_ = cmd.Wait()
		for i := 0; alive(child) && i < 50; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(child) {
			t.Fatalf("child %d survived the fencing", child)
		}
	})
	t.Run("renewed deadline and disarm: nothing killed", func(t *testing.T) {
		cmd, child := victim(t)
		in, lines := serve(t)
		for i := 0; i < 6; i++ {
			fmt.Fprintf(in, "arm %d %d\n", cmd.Process.Pid, int64(MonoNow()+300*time.Millisecond))
			time.Sleep(100 * time.Millisecond)
		}
		fmt.Fprintln(in, "disarm")
		select {
		case l := <-lines:
			t.Fatalf("unexpected report %q", l)
		case <-time.After(700 * time.Millisecond):
		}
		if !alive(cmd.Process.Pid) || !alive(child) {
			t.Fatal("a renewed or disarmed guard killed the process")
		}
	})
	t.Run("end of input while armed: deadline still enforced", func(t *testing.T) {
		cmd, _ := victim(t)
		in, lines := serve(t)
		fmt.Fprintf(in, "arm %d %d\n", cmd.Process.Pid, int64(MonoNow()+200*time.Millisecond))
		in.Close()
		select {
		case l := <-lines:
			if !strings.HasPrefix(l, "fenced") {
				t.Fatalf("report %q", l)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("an armed guard whose agent went away did not fence")
		}
	})
}
