package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dbpilot/dbpilot/cmd/dbpilot/internal/client"
	"github.com/dbpilot/dbpilot/proto"
)

// progress shows the state of a long operation on stderr: one line
// redrawn in place on a terminal, one plain line per change otherwise (no
// control characters, so logs and pipes stay clean).
type progress struct {
	w     io.Writer
	tty   bool
	label string
	start time.Time
	now   func() time.Time
	last  string
	spin  int
}

var spinner = []string{"|", "/", "-", "\\"}

func (a *app) newProgress(label string) *progress {
	return &progress{w: a.stderr, tty: a.isTerminal(a.stderr), label: label, now: a.now, start: a.now()}
}

func (p *progress) elapsed() string { return p.now().Sub(p.start).Round(time.Second).String() }

// update shows status (redrawn on a terminal; printed when it changed
// otherwise).
func (p *progress) update(status string) {
	status = escapeControl(status)
	if p.tty {
		p.spin++
		fmt.Fprintf(p.w, "\r\033[K%s %s: %s (%s)", spinner[p.spin%len(spinner)], p.label, status, p.elapsed())
		return
	}
	if status != p.last {
		fmt.Fprintf(p.w, "%s: %s (%s)\n", p.label, status, p.elapsed())
	}
	p.last = status
}

// finish ends the display with a final line.
func (p *progress) finish(ok bool, status string) {
	status = escapeControl(status)
	mark := "done"
	if !ok {
		mark = "FAILED"
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "%s: %s: %s (%s)\n", p.label, mark, status, p.elapsed())
}

// waitSpec says what to watch while an operation runs.
type waitSpec struct {
	ns      string
	cluster string // name or id; empty: the operation only
	label   string
	// nodes is the number of nodes the cluster should end with (0: its
	// replicas field).
	nodes int
	// settled, when set, says when the cluster's status shows the
	// operation's outcome (see app.settle).
	settled func(client.Cluster) bool
}

// ready counts the running, healthy members (a member still claiming the
// primary role that the cluster no longer has as primary is not ready).
func ready(c client.Cluster) int {
	n := 0
	for _, m := range c.Members {
		if m.Healthy && m.State == "running" && !stalePrimary(c, m) {
			n++
		}
	}
	return n
}

// wait polls the operation (and its cluster) until it succeeds, fails or
// ctx ends, showing progress.
func (a *app) wait(ctx context.Context, cl *client.Client, op client.Operation, ws waitSpec) (client.Operation, error) {
	p := a.newProgress(ws.label)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	status := "waiting for the operation to start"
	for {
		var err error
		cur, err := cl.GetOperation(ctx, ws.ns, op.ID)
		switch {
		case err == nil:
			op = cur
			status = a.opStatus(ctx, cl, op, ws)
		case ctx.Err() == nil:
			var ae *client.Error
			if errors.As(err, &ae) && ae.Status != 503 && ae.Status < 500 {
				p.finish(false, err.Error())
				return op, err
			}
			status = "server unreachable, retrying: " + err.Error()
		}
		switch op.State {
		case proto.OpSucceeded:
			p.finish(true, status)
			return op, nil
		case proto.OpFailed:
			p.finish(false, op.Error)
			return op, failed("%s failed: %s (operation %s)", ws.label, op.Error, op.ID)
		}
		p.update(status)
		select {
		case <-ctx.Done():
			p.finish(false, "timed out")
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return op, failed("%s: timed out after %s (operation %s is still %s: %s); raise --timeout or check `dbpilot cluster get`",
					ws.label, a.g.timeout, op.ID, op.State, status)
			}
			return op, failed("%s: interrupted (operation %s continues on the server)", ws.label, op.ID)
		case <-tick.C:
		}
	}
}

// opStatus is one line: phase, step, nodes ready n/N and the server's
// progress note.
func (a *app) opStatus(ctx context.Context, cl *client.Client, op client.Operation, ws waitSpec) string {
	s := op.State
	if op.Step != "" {
		s += ", step " + op.Step
	}
	if ws.cluster != "" && !(op.Kind == "delete" && op.Done()) {
		if c, err := cl.GetCluster(ctx, ws.ns, ws.cluster); err == nil {
			want := ws.nodes
			if want == 0 {
				want = c.Replicas
			}
			s = fmt.Sprintf("phase %s, %s, nodes ready %d/%d", c.Phase, s, ready(c), want)
			if c.Primary != "" {
				s += ", primary " + c.Primary
			}
		}
	}
	if op.Progress != "" {
		s += ": " + op.Progress
	}
	if op.Attempts > 0 {
		s += fmt.Sprintf(" (retry %d)", op.Attempts)
	}
	return s
}

// stalePrimary reports a member whose last report says primary while the
// cluster's primary is another node: its agent stopped reporting (killed,
// partitioned) after it lost the leader key.
func stalePrimary(c client.Cluster, m proto.Member) bool {
	return m.Role == "primary" && c.Primary != "" && m.Name != c.Primary
}
