package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
)

// Operation kinds of fleet host maintenance.
const (
	// KindDrain moves every node off a fleet host. It is the host's
	// operation, not a cluster's: its Namespace is "" and its ClusterID is
	// the host id (so two drains of one host cannot run at once).
	KindDrain = "drain"
	// KindMove replaces one node of a cluster (OpParams.From) by a new node
	// (OpParams.To, named when the operation starts) on another host; a
	// drain starts one per node of the drained host.
	KindMove = "move"
)

// MaxParallelMoves bounds how many clusters one drain moves at once (each
// cluster moves one node at a time).
const MaxParallelMoves = 4

// NewOperationID returns a fresh operation id ("op-" and 16 hex digits).
func NewOperationID() string { return "op-" + NewSecret("")[:16] }

var drainSteps = []string{"", "cordon", "move"}

// drain cordons the host (no new allocation lands on it), then moves its
// nodes off: for every active allocation on the host it starts a move
// operation in the node's cluster, at most one per cluster and
// MaxParallelMoves at a time, and waits for them. A cluster busy with
// another operation is retried until that one ends. The drain fails when a
// move fails (the host stays cordoned; drain again once fixed) and succeeds
// when no active allocation is left on the host.
func (w *workflow) drain(ctx context.Context) error {
	hostID := w.op.ClusterID
	h, err := w.e.st.GetHost(ctx, hostID)
	if err != nil {
		return fmt.Errorf("drain host %s: %w", hostID, err)
	}
	if err := w.step(ctx, "cordon", drainSteps, func(ctx context.Context) error {
		return w.e.st.SetHostState(ctx, hostID, store.HostCordoned)
	}); err != nil {
		return err
	}
	return w.step(ctx, "move", drainSteps, func(ctx context.Context) error { return w.moveAll(ctx, h) })
}

// moveAll is the drain's move step: every second it checks the move
// operations started so far (one failed: the drain fails, permanently),
// starts moves for the host's active allocations (at most
// MaxParallelMoves at once, one per cluster) and saves the progress when
// it changed, until the host holds no active allocation and no move runs.
func (w *workflow) moveAll(ctx context.Context, h store.Host) error {
	last := ""
	for {
		allocs, err := w.e.st.ListAllocations(ctx, h.ID)
		if err != nil {
			return err
		}
		running, moved, err := w.moves(ctx, h)
		if err != nil {
			return err
		}
		var active []store.Allocation
		for _, a := range allocs {
			if a.State == store.AllocActive {
				active = append(active, a)
			}
		}
		if len(active) == 0 && len(running) == 0 {
			w.params.Progress = fmt.Sprintf("host %s drained: %d nodes moved", h.Name, moved)
			w.log.Info("host drained", zap.String("host", h.Name), zap.Int("moved", moved))
			return w.save(ctx)
		}
		waiting, err := w.startMoves(ctx, h, active, running)
		if err != nil {
			return err
		}
		var moving []string
		for _, m := range running {
			moving = append(moving, m)
		}
		sort.Strings(moving)
		progress := fmt.Sprintf("%d moved, %d moving: %s", moved, len(running), strings.Join(moving, ", "))
		if len(waiting) > 0 {
			progress += fmt.Sprintf("; %d waiting: %s", len(waiting), strings.Join(waiting, ", "))
		}
		if progress != last {
			w.params.Progress, last = progress, progress
			if err := w.save(ctx); err != nil {
				return backoff.Permanent(err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// moves reads the drain's move operations (w.params.Children): running
// maps the cluster id of each unfinished one to "namespace/name/node
// (operation id)", moved counts the succeeded ones. A failed one fails
// the drain (a permanent error naming the node, cluster and operation).
func (w *workflow) moves(ctx context.Context, h store.Host) (running map[string]string, moved int, err error) {
	running = map[string]string{}
	for _, id := range w.params.Children {
		op, err := w.e.st.GetOperation(ctx, id)
		if err != nil {
			return nil, 0, err
		}
		var p OpParams
		_ = json.Unmarshal(op.Params, &p)
		name := op.ClusterID
		if c, err := w.e.st.GetCluster(ctx, op.ClusterID); err == nil {
			name = c.Namespace + "/" + c.Name
		}
		switch op.State {
		case store.OpFailed:
			return nil, 0, backoff.Permanent(fmt.Errorf("moving node %s of cluster %s off host %s failed (operation %s): %s; the host stays cordoned: fix the cause and drain again",
				p.From, name, h.Name, op.ID, op.Error))
		case store.OpSucceeded:
			moved++
		default:
			running[op.ClusterID] = name + "/" + p.From + " (" + op.ID + ")"
		}
	}
	return running, moved, nil
}

// startMoves starts a move operation for each active allocation of host h
// whose cluster has none running (adding it to running, saved in
// w.params.Children), while fewer than MaxParallelMoves run. It returns
// the nodes left waiting ("namespace/name/node", with the reason when
// another operation of the cluster runs). Errors: the store's; a failed
// save is permanent.
func (w *workflow) startMoves(ctx context.Context, h store.Host, active []store.Allocation, running map[string]string) (waiting []string, err error) {
	for _, a := range active {
		if _, busy := running[a.ClusterID]; busy {
			continue
		}
		c, err := w.e.st.GetCluster(ctx, a.ClusterID)
		if errors.Is(err, store.ErrNotFound) {
			continue // being deleted: its delete releases the allocation
		}
		if err != nil {
			return nil, err
		}
		if len(running) >= MaxParallelMoves {
			waiting = append(waiting, c.Namespace+"/"+c.Name+"/"+a.Node)
			continue
		}
		b, _ := json.Marshal(OpParams{From: a.Node, Reason: "drain of host " + h.Name})
		now := time.Now().UTC()
		op := store.Operation{ID: NewOperationID(), Namespace: c.Namespace, ClusterID: c.ID, Kind: KindMove, State: store.OpPending,
			Params: b, CreatedAt: now, UpdatedAt: now}
		if err := w.e.st.CreateOperation(ctx, op, ""); errors.Is(err, store.ErrConflict) {
			waiting = append(waiting, c.Namespace+"/"+c.Name+"/"+a.Node+" (another operation of the cluster runs)")
			continue
		} else if err != nil {
			return nil, err
		}
		w.params.Children = append(w.params.Children, op.ID)
		if err := w.save(ctx); err != nil {
			return nil, backoff.Permanent(err)
		}
		w.log.Info("moving node off the host", zap.String("host", h.Name), zap.String("namespace", c.Namespace),
			zap.String("cluster_name", c.Name), zap.String("node", a.Node), zap.String("move", op.ID))
		w.e.Kick(op.ID)
		running[c.ID] = c.Namespace + "/" + c.Name + "/" + a.Node + " (" + op.ID + ")"
	}
	return waiting, nil
}

var moveSteps = []string{"", "add", "stream", "switchover", "remove", "ready"}

// move replaces node From by a new node on another host without the
// cluster ever having fewer ready nodes than before: add the new node
// (the provider places it: on the fleet, a ready host — not a cordoned
// one — holding no other node of the cluster), wait until it and every
// staying node are ready (the new one streaming), switch over to a
// staying node if From is the primary, then remove From (graceful stop,
// folder removed, capacity freed, member key deleted).
func (x *clusterCtx) move(ctx context.Context) error {
	from := x.w.params.From
	have, err := x.nodes(ctx)
	if err != nil {
		return err
	}
	current := byIndex(have)
	next := 1
	for _, n := range current {
		next = max(next, nodeIndex(n)+1)
	}
	if x.w.params.To == "" {
		if _, ok := have[from]; !ok {
			return backoff.Permanent(fmt.Errorf("from: cluster %s has no node %q", x.c.Name, from))
		}
		x.w.params.To = nodeName(next)
		if err := x.w.save(ctx); err != nil {
			return err
		}
	}
	to := x.w.params.To
	// Staying nodes first (the switchover prefers them), the new one last.
	var keep []string
	for _, n := range current {
		if n != from && n != to {
			keep = append(keep, n)
		}
	}
	keep = append(keep, to)
	all := keep
	if _, ok := have[from]; ok {
		all = append(append([]string(nil), keep...), from)
	}
	x.w.log.Info("moving node", zap.String("from", from), zap.String("to", to), zap.String("reason", x.w.params.Reason))
	if err := x.w.step(ctx, "add", moveSteps, func(ctx context.Context) error {
		x.w.params.Progress = "placing " + to + " to replace " + from
		if err := x.w.save(ctx); err != nil {
			return backoff.Permanent(err)
		}
		if err := x.ensureNodes(ctx, []string{to}); err != nil {
			if errors.Is(err, infra.ErrNoCapacity) {
				return backoff.Permanent(fmt.Errorf("no other host can take %s, the replacement of %s: %w; enrol or uncordon a host with room", to, from, err))
			}
			return err
		}
		return x.w.e.etcd.PutSpec(ctx, x.keys, x.desired(all))
	}); err != nil {
		return err
	}
	if err := x.w.step(ctx, "stream", moveSteps, func(ctx context.Context) error { return x.waitReady(ctx, keep) }); err != nil {
		return err
	}
	if err := x.w.step(ctx, "switchover", moveSteps, func(ctx context.Context) error {
		return x.moveLeadershipFor(ctx, from, keep, x.w.params.Reason+": "+from+" moves to "+to)
	}); err != nil {
		return err
	}
	if err := x.w.step(ctx, "remove", moveSteps, func(ctx context.Context) error {
		if err := x.w.e.etcd.PutSpec(ctx, x.keys, x.desired(keep)); err != nil {
			return err
		}
		if row, ok := have[from]; ok {
			x.w.params.Progress = "removing " + from
			if err := x.w.save(ctx); err != nil {
				return backoff.Permanent(err)
			}
			if err := x.p.Delete(ctx, x.spec(from), row.Handle); err != nil {
				return err
			}
			if err := x.w.e.st.DeleteNode(ctx, x.c.ID, from); err != nil {
				return err
			}
		}
		if err := x.w.e.etcd.DeleteMember(ctx, x.keys, from); err != nil {
			return err
		}
		return nil
	}); err != nil {
		return err
	}
	if err := x.w.step(ctx, "ready", moveSteps, func(ctx context.Context) error { return x.waitReady(ctx, keep) }); err != nil {
		return err
	}
	x.w.params.Progress = from + " replaced by " + to
	if err := x.w.save(ctx); err != nil {
		return err
	}
	return x.w.setPhase(ctx, store.PhaseReady, "", 0)
}
