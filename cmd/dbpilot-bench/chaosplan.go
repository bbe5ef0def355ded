package main

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dbpilot/dbpilot/agent/localcluster"
)

// faultClass says what a correct agent must do under a fault; it decides
// which metric the fault feeds.
type faultClass int

const (
	// mustMove: the primary is dead, frozen or partitioned; another node
	// must take over. Feeds failover_rto_ms_p50.
	mustMove faultClass = iota
	// mustStay: the primary is healthy and reachable by its clients; it must
	// keep the key and keep acknowledging writes. Feeds needless_failovers
	// and survivable_outage_ms_max.
	mustStay
	// planned: a switchover; the primary moves on request. Feeds neither.
	planned
)

func (c faultClass) String() string {
	switch c {
	case mustMove:
		return "must-move"
	case mustStay:
		return "must-stay"
	default:
		return "planned"
	}
}

// Fault kinds of the campaign (issue 10, item 7).
const (
	kindHostKillPrimary = "host-kill-primary"    // SIGKILL of the primary's process group, restart after the failover
	kindHostKillReplica = "host-kill-replica"    // SIGKILL of a replica's process group, down for dur, restart
	kindAgentKill       = "agent-kill-primary"   // SIGKILL of the primary's agent only (PostgreSQL follows by Pdeathsig)
	kindAgentFreeze     = "agent-freeze-primary" // SIGSTOP of the primary's agent only for dur, SIGCONT
	kindCutPrimary      = "etcd-cut-primary"     // the primary's proxy cut from every etcd member for dur
	kindCutReplica      = "etcd-cut-replica"     // a replica's proxy cut for dur
	kindEtcdDown        = "etcd-down"            // every etcd member stopped for dur
	kindQuorumLoss      = "etcd-quorum-loss"     // two of three etcd members stopped for dur
	kindSwitchover      = "switchover"           // planned switchover under load
	kindDataLost        = "replica-data-lost"    // a replica killed, its data directory removed, restarted (re-clone)
)

// kindSpec is one fault kind: its class and the range its duration is drawn
// from (zero: the fault has no duration of its own).
type kindSpec struct {
	name     string
	class    faultClass
	min, max time.Duration
	// settle: the fault can leave the leader key on a lease its holder no
	// longer renews (etcd restarted, an agent cut off or frozen), so the
	// steady state is confirmed again once such a lease has expired.
	settle bool
}

// faultKinds lists every kind in a fixed order (the plan's draws depend on
// it: append new kinds at the end to keep old seeds meaningful).
var faultKinds = []kindSpec{
	{kindHostKillPrimary, mustMove, 0, 0, false},
	{kindHostKillReplica, mustStay, 2 * time.Second, 10 * time.Second, false},
	{kindAgentKill, mustMove, 0, 0, false},
	{kindAgentFreeze, mustMove, 2 * time.Second, 30 * time.Second, true},
	{kindCutPrimary, mustMove, 2 * time.Second, 60 * time.Second, true},
	{kindCutReplica, mustStay, 2 * time.Second, 60 * time.Second, false},
	{kindEtcdDown, mustStay, 2 * time.Second, 90 * time.Second, true},
	{kindQuorumLoss, mustStay, 2 * time.Second, 30 * time.Second, true},
	{kindSwitchover, planned, 0, 0, false},
	{kindDataLost, mustStay, 0, 0, false},
}

// selectKinds resolves a --kinds list (empty: every kind).
func selectKinds(names []string) ([]kindSpec, error) {
	if len(names) == 0 {
		return faultKinds, nil
	}
	var out []kindSpec
	for _, n := range names {
		i := slices.IndexFunc(faultKinds, func(k kindSpec) bool { return k.name == n })
		if i < 0 {
			var all []string
			for _, k := range faultKinds {
				all = append(all, k.name)
			}
			return nil, fmt.Errorf("--kinds: unknown kind %q (kinds: %s)", n, strings.Join(all, ", "))
		}
		if !slices.ContainsFunc(out, func(k kindSpec) bool { return k.name == n }) {
			out = append(out, faultKinds[i])
		}
	}
	return out, nil
}

func specOf(kind string) kindSpec {
	i := slices.IndexFunc(faultKinds, func(k kindSpec) bool { return k.name == kind })
	if i < 0 {
		panic("unknown fault kind " + kind)
	}
	return faultKinds[i]
}

// offsetMax bounds the random wait between the steady state and the
// injection: longer than a lease renewal period (health.interval = 1 s for
// a loop-renewed lease, ttl/3 ≈ 1.7 s for a client keepalive), so faults
// land at every phase of the renewal cycle.
const (
	offsetMin = 200 * time.Millisecond
	offsetMax = 2700 * time.Millisecond
)

// plannedFault is one fault of the plan, drawn before the campaign so that
// a seed replays the same sequence whatever happens at run time.
type plannedFault struct {
	Seq    int // 1-based
	Kind   string
	Dur    time.Duration // down time, freeze, cut or outage length; 0 for instant faults
	Offset time.Duration // wait after the steady state before injecting
	// Pick chooses, at injection time, which replica (index into the
	// replicas sorted by name) or which etcd member survives a quorum loss.
	Pick uint32
}

// modeStream derives a per-mode random stream from the seed, so `--modes
// sync` alone replays the sync part of a two-mode run.
func modeStream(seed uint64, mode string) *rand.Rand {
	h := fnv.New64a()
	_, _ = h.Write([]byte(mode))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// drawPlan draws n faults for mode: kinds from a shuffled bag holding every
// kind once (refilled when empty, so each kind appears n/len(kinds) times
// ±1 in a random order), durations uniform in the kind's range, offsets
// uniform in [offsetMin, offsetMax).
func drawPlan(seed uint64, mode string, n int) []plannedFault {
	return drawPlanOf(faultKinds, seed, mode, n)
}

// drawPlanOf draws from the given kinds only (--kinds, to replay or debug
// a few kinds).
func drawPlanOf(kinds []kindSpec, seed uint64, mode string, n int) []plannedFault {
	rng := modeStream(seed, mode)
	var bag []kindSpec
	plan := make([]plannedFault, 0, n)
	for i := 0; i < n; i++ {
		if len(bag) == 0 {
			bag = slices.Clone(kinds)
			rng.Shuffle(len(bag), func(a, b int) { bag[a], bag[b] = bag[b], bag[a] })
		}
		k := bag[0]
		bag = bag[1:]
		f := plannedFault{Seq: i + 1, Kind: k.name}
		if k.max > 0 {
			f.Dur = (k.min + time.Duration(rng.Int64N(int64(k.max-k.min)))).Round(100 * time.Millisecond)
		}
		f.Offset = (offsetMin + time.Duration(rng.Int64N(int64(offsetMax-offsetMin)))).Round(10 * time.Millisecond)
		f.Pick = rng.Uint32()
		plan = append(plan, f)
	}
	return plan
}

// ackWindow is what the writer's acknowledgements say about one fault:
// acks holds every acknowledgement of the campaign in time order, old is
// the primary before the fault, t0 the injection, end the instant the
// cluster was steady again and writes had resumed (or the measurement gave
// up), finalLeader the leader at that steady state ("" if none).
type ackWindow struct {
	// FirstOther is the first acknowledgement after t0 on a node other
	// than old (valid when Moved is set by it).
	FirstOther localcluster.Ack
	HasOther   bool
	// Gap is the longest time without an acknowledgement between the last
	// one at or before t0 and the first one after end (or end itself when
	// there is none yet).
	Gap time.Duration
	// Changes counts primary changes seen from t0 to end: every change of
	// the acknowledging node, plus one if the final leader is not the last
	// acknowledging node.
	Changes int
}

// analyseAcks computes the fault's figures from the acknowledgements.
func analyseAcks(acks []localcluster.Ack, old string, t0, end time.Time, finalLeader string) ackWindow {
	var w ackWindow
	first, _ := slices.BinarySearchFunc(acks, t0, func(a localcluster.Ack, t time.Time) int {
		if a.At.After(t) {
			return 1
		}
		return -1
	})
	prev := t0
	if first > 0 {
		prev = acks[first-1].At
	}
	cur := old
	for _, a := range acks[first:] {
		if g := a.At.Sub(prev); g > w.Gap {
			w.Gap = g
		}
		prev = a.At
		if a.At.After(end) {
			break
		}
		if a.Node != old && !w.HasOther {
			w.FirstOther, w.HasOther = a, true
		}
		if a.Node != cur {
			w.Changes++
			cur = a.Node
		}
	}
	if !prev.After(end) {
		// No acknowledgement after end: the outage lasts at least until end.
		if g := end.Sub(prev); g > w.Gap {
			w.Gap = g
		}
	}
	if finalLeader != "" && finalLeader != cur {
		w.Changes++
	}
	return w
}

// faultRecord is the outcome of one injected fault.
type faultRecord struct {
	Plan       plannedFault
	Mode       string
	Class      faultClass
	Target     string // node or etcd members hit
	OldPrimary string
	NewPrimary string // leader at the steady state after the fault ("" if none)
	TermBefore uint64
	TermAfter  uint64
	Moved      bool          // the primary changed
	RTO        time.Duration // fault → first ack on the new primary (mustMove faults that moved)
	HasRTO     bool
	Gap        time.Duration // longest gap between acknowledged writes around the fault
	Split      time.Duration // time with two writable nodes during the fault window
	Changes    int           // primary changes during the fault window
	Recovery   time.Duration // heal → steady state again
	Missed     bool          // a mustMove fault longer than the lease that did not move the primary
	Failure    string        // a failure of the run itself (steady state not reached, injection error)
	At         time.Duration // injection, since the campaign started
}

// needless is the fault's contribution to needless_failovers.
func (r faultRecord) needless() int {
	if r.Class == mustStay {
		return r.Changes
	}
	return 0
}

func (r faultRecord) line(total int) string {
	moved := "no"
	if r.Moved {
		moved = "yes"
	}
	rto := "-"
	if r.HasRTO {
		rto = strconv.FormatInt(r.RTO.Milliseconds(), 10)
	}
	s := fmt.Sprintf("fault %d/%d at=%s mode=%s kind=%s class=%s target=%s dur=%s offset=%s old=%s new=%s term=%d->%d moved=%s rto_ms=%s gap_ms=%d split_ms=%d changes=%d recovery_ms=%d",
		r.Plan.Seq, total, r.At.Round(time.Second), r.Mode, r.Plan.Kind, r.Class, r.Target, fmtDur(r.Plan.Dur), fmtDur(r.Plan.Offset), r.OldPrimary, orDash(r.NewPrimary),
		r.TermBefore, r.TermAfter, moved, rto, r.Gap.Milliseconds(), r.Split.Milliseconds(), r.Changes, r.Recovery.Milliseconds())
	if r.Missed {
		s += " MISSED-FAILOVER"
	}
	if r.Failure != "" {
		s += " FAILURE=" + strconv.Quote(r.Failure)
	}
	return s
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// chaosTotals are the campaign's headline figures (the last line).
type chaosTotals struct {
	Faults         int
	Kinds          int
	LostAcked      int // synchronous mode only
	SplitBrain     time.Duration
	Needless       int
	RTOP50         time.Duration
	HasRTO         bool
	MaxOutage      time.Duration
	HasOutage      bool
	Missed         int
	RunFailures    int // steady state not reached, injection errors, final checks impossible
	LostUnverified bool
}

// totals aggregates the records; lostSync and split come from the end of
// each mode (Missing on the final primary, the probe's total).
func totals(recs []faultRecord, lostSync int, split time.Duration) chaosTotals {
	t := chaosTotals{Faults: len(recs), LostAcked: lostSync, SplitBrain: split}
	kinds := map[string]bool{}
	var rtos durations
	for _, r := range recs {
		kinds[r.Plan.Kind] = true
		t.Needless += r.needless()
		if r.Class == mustMove && r.HasRTO {
			rtos = append(rtos, r.RTO)
		}
		if r.Class == mustStay {
			t.HasOutage = true
			t.MaxOutage = max(t.MaxOutage, r.Gap)
		}
		if r.Missed {
			t.Missed++
		}
		if r.Failure != "" {
			t.RunFailures++
		}
	}
	t.Kinds = len(kinds)
	if len(rtos) > 0 {
		t.RTOP50, t.HasRTO = rtos.median(), true
	}
	return t
}

func msOrNaN(d time.Duration, ok bool) string {
	if !ok {
		return strconv.FormatFloat(math.NaN(), 'f', -1, 64)
	}
	return strconv.FormatInt(d.Milliseconds(), 10)
}

// lastLine is the campaign's last line, in the exact format of issue 10.
func (t chaosTotals) lastLine() string {
	return fmt.Sprintf("chaos: faults=%d kinds=%d lost_acked_writes=%d split_brain_ms=%d needless_failovers=%d failover_rto_ms_p50=%s survivable_outage_ms_max=%s",
		t.Faults, t.Kinds, t.LostAcked, t.SplitBrain.Milliseconds(), t.Needless, msOrNaN(t.RTOP50, t.HasRTO), msOrNaN(t.MaxOutage, t.HasOutage))
}

// Targets of issue 10 ("What it must show", point 2).
const (
	targetRTOP50    = 8000 * time.Millisecond
	targetMaxOutage = 2000 * time.Millisecond
)

// failures lists the missed targets and run failures ("" none).
func (t chaosTotals) failures() []string {
	var out []string
	if t.LostAcked != 0 {
		out = append(out, fmt.Sprintf("lost_acked_writes=%d (target 0)", t.LostAcked))
	}
	if t.LostUnverified {
		out = append(out, "lost acknowledged writes could not be checked at the end of a synchronous-mode run")
	}
	if t.SplitBrain > 0 {
		out = append(out, fmt.Sprintf("split_brain_ms=%d (target 0)", t.SplitBrain.Milliseconds()))
	}
	if t.Needless != 0 {
		out = append(out, fmt.Sprintf("needless_failovers=%d (target 0)", t.Needless))
	}
	if t.HasRTO && t.RTOP50 >= targetRTOP50 {
		out = append(out, fmt.Sprintf("failover_rto_ms_p50=%d (target < %d)", t.RTOP50.Milliseconds(), targetRTOP50.Milliseconds()))
	}
	if t.HasOutage && t.MaxOutage >= targetMaxOutage {
		out = append(out, fmt.Sprintf("survivable_outage_ms_max=%d (target < %d)", t.MaxOutage.Milliseconds(), targetMaxOutage.Milliseconds()))
	}
	if t.RunFailures > 0 {
		out = append(out, fmt.Sprintf("%d fault(s) with a run failure (steady state not reached in time, injection error)", t.RunFailures))
	}
	return out
}
