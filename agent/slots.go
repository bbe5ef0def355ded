package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/postgres"
)

// Replication slots (docs/architecture.md, "Replication slots"): the primary
// keeps one physical slot per member (postgres.SlotName of its node name),
// so a replica that is down or slow catches up by streaming instead of a
// re-clone; max_slot_wal_keep_size bounds what the slots retain.

// slotRefresh is how often the primary re-reads its slots (and refreshes
// the slot metrics) when nothing it plans from has changed.
const slotRefresh = 10 * time.Second

// slotTimeout bounds one round of slot upkeep.
const slotTimeout = 3 * time.Second

// slotPlan is the change planSlots asks for.
type slotPlan struct {
	// Create are the slot names to create; Drop those to drop. A name in
	// both is recreated (its WAL was lost).
	Create, Drop []string
	// Shared maps a slot name to the nodes that would share it (a
	// SlotName collision); each such slot is kept once, for all of them.
	Shared map[string][]string
	// Foreign are slots under a wanted name that the agent cannot use (a
	// logical or temporary slot): left alone.
	Foreign []string
}

// planSlots decides which managed physical replication slots the primary
// self creates and drops. It is pure. The rules:
//
//   - wanted: a slot for every node that has a member key (members) or is
//     listed in the spec (specNodes), except self;
//   - create every wanted slot that does not exist;
//   - recreate (drop, then create) a wanted slot that is inactive and
//     whose WAL is lost (wal_status "lost"): it no longer retains
//     anything, the new one retains WAL from now on;
//   - drop an inactive managed slot that is not wanted only when the spec
//     lists nodes (an empty spec says nothing about who left: a member
//     whose agent is down has no member key but is still part of the
//     cluster) or when it is self's own slot (left from when self was a
//     replica of another node; useless on the primary).
//
// An active slot is never dropped, nor a slot without postgres.SlotPrefix,
// nor a logical or temporary one. Outputs are sorted.
func planSlots(self string, members, specNodes []string, existing []postgres.ReplicationSlot) slotPlan {
	var p slotPlan
	wanted := map[string][]string{}
	for _, n := range slices.Concat(members, specNodes) {
		if n == "" || n == self {
			continue
		}
		name := postgres.SlotName(n)
		if !slices.Contains(wanted[name], n) {
			wanted[name] = append(wanted[name], n)
		}
	}
	have := map[string]postgres.ReplicationSlot{}
	for _, s := range existing {
		have[s.Name] = s
	}
	for name, nodes := range wanted {
		if len(nodes) > 1 {
			if p.Shared == nil {
				p.Shared = map[string][]string{}
			}
			p.Shared[name] = slices.Sorted(slices.Values(nodes))
		}
		s, ok := have[name]
		switch {
		case !ok:
			p.Create = append(p.Create, name)
		case s.Type != "physical" || s.Temporary:
			p.Foreign = append(p.Foreign, name)
		case !s.Active && s.WALStatus == "lost":
			p.Drop = append(p.Drop, name)
			p.Create = append(p.Create, name)
		}
	}
	own := postgres.SlotName(self)
	for _, s := range existing {
		if _, ok := wanted[s.Name]; ok || s.Active || s.Temporary || s.Type != "physical" || !postgres.ManagedSlot(s.Name) {
			continue
		}
		if len(specNodes) > 0 || s.Name == own {
			p.Drop = append(p.Drop, s.Name)
		}
	}
	slices.Sort(p.Create)
	slices.Sort(p.Drop)
	slices.Sort(p.Foreign)
	return p
}

// slotKeeper is the state of the primary's slot upkeep and the slot
// metrics. The HA loop starts at most one upkeep round at a time, in its
// own goroutine, so a slow PostgreSQL never delays the loop (and with it
// the lease renewal the fencer watches).
type slotKeeper struct {
	once sync.Once
	busy atomic.Bool // an upkeep round is running
	// active is dbpilot_replication_slot_active{slot}: 1 while a WAL
	// sender streams from the slot, else 0.
	active *prometheus.GaugeVec
	// retained is dbpilot_replication_slot_retained_bytes{slot}: WAL the
	// slot holds back on the primary (current LSN - restart_lsn), in
	// bytes; -1 when unknown (lost).
	retained *prometheus.GaugeVec
	// walStatus is dbpilot_replication_slot_wal_status{slot,wal_status}: 1
	// for the slot's wal_status (reserved, extended, unreserved, lost).
	walStatus *prometheus.GaugeVec
	// xminAge is dbpilot_replication_slot_xmin_age{slot}: age(xmin) of
	// the slot in transactions, how far it holds back VACUUM; -1 when
	// the slot has no xmin.
	xminAge *prometheus.GaugeVec

	mu         sync.Mutex
	lastKey    string    // what the last successful round planned from
	lastRun    time.Time // when it ran
	lastShared string    // collisions last logged
	shown      bool      // the metrics show slots
}

func (k *slotKeeper) init(reg *prometheus.Registry, log *zap.Logger) {
	k.once.Do(func() {
		k.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dbpilot_replication_slot_active",
			Help: "On the primary, 1 while a WAL sender streams from the managed replication slot, else 0.",
		}, []string{"slot"})
		k.retained = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dbpilot_replication_slot_retained_bytes",
			Help: "On the primary, WAL the managed replication slot holds back (current LSN - restart_lsn), in bytes; -1 when unknown.",
		}, []string{"slot"})
		k.walStatus = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dbpilot_replication_slot_wal_status",
			Help: "On the primary, 1 for the managed replication slot's wal_status (reserved, extended, unreserved, lost).",
		}, []string{"slot", "wal_status"})
		k.xminAge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dbpilot_replication_slot_xmin_age",
			Help: "On the primary, age(xmin) of the managed replication slot in transactions (how far it holds back VACUUM); -1 when it has none.",
		}, []string{"slot"})
		if reg == nil {
			return
		}
		for _, c := range []prometheus.Collector{k.active, k.retained, k.walStatus, k.xminAge} {
			if err := reg.Register(c); err != nil {
				log.Warn("replication slot metric not registered", zap.Error(err))
			}
		}
	})
}

// show sets the slot metrics from st (managed physical slots only).
func (k *slotKeeper) show(st postgres.SlotState) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.clearLocked()
	for _, s := range st.Slots {
		if !postgres.ManagedSlot(s.Name) || s.Type != "physical" || s.Temporary {
			continue
		}
		v := 0.0
		if s.Active {
			v = 1
		}
		k.active.WithLabelValues(s.Name).Set(v)
		k.retained.WithLabelValues(s.Name).Set(float64(s.RetainedBytes(st.WriteLSN)))
		k.xminAge.WithLabelValues(s.Name).Set(float64(s.XminAge))
		if s.WALStatus != "" {
			k.walStatus.WithLabelValues(s.Name, s.WALStatus).Set(1)
		}
		k.shown = true
	}
}

func (k *slotKeeper) clearLocked() {
	if !k.shown {
		return
	}
	k.active.Reset()
	k.retained.Reset()
	k.walStatus.Reset()
	k.xminAge.Reset()
	k.shown = false
}

// keepSlots is the primary's slot upkeep, called by the HA loop after each
// cycle: while this node holds the leader key and is not fenced, it starts
// a round (upkeepSlots) as soon as the members, the spec's nodes or the
// term changed, and every slotRefresh otherwise, unless one is still
// running. It never waits for PostgreSQL; failures are logged and retried
// next cycle, and never affect the HA decision.
func (a *Agent) keepSlots(ctx context.Context, obs observation) {
	k := &a.slots
	k.init(a.reg, a.log)
	if !obs.etcdOK || !a.isLeader.Load() || a.fenced.Load() {
		k.mu.Lock()
		k.lastKey = ""
		if !k.busy.Load() {
			k.clearLocked()
		}
		k.mu.Unlock()
		return
	}
	members := make([]string, 0, len(obs.snap.Members))
	for n := range obs.snap.Members {
		members = append(members, n)
	}
	slices.Sort(members)
	var spec []string
	if obs.snap.Spec != nil {
		spec = slices.Clone(obs.snap.Spec.Nodes)
	}
	key := fmt.Sprintf("%d|%s|%s", a.term, strings.Join(members, ","), strings.Join(spec, ","))
	k.mu.Lock()
	fresh := key == k.lastKey && time.Since(k.lastRun) < slotRefresh
	k.mu.Unlock()
	if fresh || !k.busy.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer k.busy.Store(false)
		if a.upkeepSlots(ctx, members, spec) {
			k.mu.Lock()
			k.lastKey, k.lastRun = key, time.Now()
			k.mu.Unlock()
		}
	}()
}

// upkeepSlots is one round of slot upkeep on the primary: read
// pg_replication_slots, apply planSlots, refresh the metrics. It reports
// whether the slots are as planned.
func (a *Agent) upkeepSlots(ctx context.Context, members, spec []string) bool {
	k := &a.slots
	ctx, cancel := context.WithTimeout(ctx, slotTimeout)
	defer cancel()
	st, err := a.pg.ReplicationSlots(ctx)
	if err != nil {
		a.log.Warn("replication slots not read", zap.Error(err))
		return false
	}
	if st.InRecovery {
		return false // not promoted (yet): the next cycle tries again
	}
	plan := planSlots(a.cfg.Node.Name, members, spec, st.Slots)
	if len(plan.Shared) > 0 {
		shared := fmt.Sprint(plan.Shared)
		k.mu.Lock()
		logIt := shared != k.lastShared
		k.lastShared = shared
		k.mu.Unlock()
		if logIt {
			a.log.Error("node names map to the same replication slot; those nodes share one slot (rename a node)", zap.Any("slots", plan.Shared))
		}
	}
	if len(plan.Foreign) > 0 {
		a.log.Warn("a logical or temporary slot has the name of a member's slot; left alone", zap.Strings("slots", plan.Foreign))
	}
	ok := true
	if len(plan.Create) > 0 || len(plan.Drop) > 0 {
		if !a.isLeader.Load() || a.fenced.Load() {
			return false // leadership lost meanwhile
		}
		done, err := a.pg.ApplySlots(ctx, plan.Create, plan.Drop)
		if err != nil {
			ok = false
			a.log.Warn("replication slots not all changed; retrying next cycle", zap.Error(err))
		}
		if len(done.Created) > 0 || len(done.Dropped) > 0 {
			a.log.Info("replication slots changed", zap.Strings("created", done.Created), zap.Strings("dropped", done.Dropped),
				zap.Strings("members", members), zap.Strings("spec_nodes", spec))
		}
		if again, err := a.pg.ReplicationSlots(ctx); err == nil {
			st = again
		}
	}
	if a.isLeader.Load() {
		k.show(st)
	}
	return ok
}
