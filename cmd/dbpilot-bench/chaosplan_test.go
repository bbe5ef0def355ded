package main

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/agent/localcluster"
)

func TestDrawPlan(t *testing.T) {
	for _, tc := range []struct {
		name string
		seed uint64
		mode string
		n    int
	}{
		{"one fault", 1, "sync", 1},
		{"default per mode", 42, "sync", 50},
		{"async stream", 42, "async", 50},
		{"not a multiple of the kinds", 7, "async", 23},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := drawPlan(tc.seed, tc.mode, tc.n)
			if len(p) != tc.n {
				t.Fatalf("len = %d, want %d", len(p), tc.n)
			}
			if again := drawPlan(tc.seed, tc.mode, tc.n); !slices.Equal(p, again) {
				t.Fatal("same seed and mode drew a different plan")
			}
			count := map[string]int{}
			for i, f := range p {
				if f.Seq != i+1 {
					t.Errorf("fault %d: Seq = %d", i, f.Seq)
				}
				k := specOf(f.Kind)
				count[f.Kind]++
				if k.max == 0 && f.Dur != 0 || k.max > 0 && (f.Dur < k.min || f.Dur > k.max) {
					t.Errorf("fault %d %s: dur %s outside [%s, %s]", f.Seq, f.Kind, f.Dur, k.min, k.max)
				}
				if f.Offset < offsetMin || f.Offset > offsetMax {
					t.Errorf("fault %d: offset %s outside [%s, %s]", f.Seq, f.Offset, offsetMin, offsetMax)
				}
			}
			// The bag: every kind appears n/kinds times, at most one more.
			lo := tc.n / len(faultKinds)
			for _, k := range faultKinds {
				if c := count[k.name]; c < lo || c > lo+1 {
					t.Errorf("kind %s drawn %d times, want %d or %d", k.name, c, lo, lo+1)
				}
			}
		})
	}
	a, b := drawPlan(1, "sync", 20), drawPlan(2, "sync", 20)
	if slices.Equal(a, b) {
		t.Error("seeds 1 and 2 drew the same plan")
	}
	if s, as := drawPlan(1, "sync", 20), drawPlan(1, "async", 20); slices.Equal(s, as) {
		t.Error("sync and async drew the same plan from one seed")
	}
	// A longer plan starts with the shorter one: --faults does not reshuffle.
	if long := drawPlan(9, "sync", 30); !slices.Equal(long[:10], drawPlan(9, "sync", 10)) {
		t.Error("the first 10 faults of a 30-fault plan differ from a 10-fault plan")
	}
	// Default: at least 100 faults over both modes.
	if f := newChaosCmd().Flags().Lookup("faults"); f == nil || f.DefValue == "" {
		t.Fatal("no --faults flag")
	} else if n, _ := strconv.Atoi(f.DefValue); 2*n < 100 {
		t.Errorf("default --faults %d gives %d faults over two modes, want ≥ 100", n, 2*n)
	}
}

func TestAnalyseAcks(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	// acks every 20 ms on node from [fromMS, toMS).
	run := func(node string, fromMS, toMS int) []localcluster.Ack {
		var out []localcluster.Ack
		for ms := fromMS; ms < toMS; ms += 20 {
			out = append(out, localcluster.Ack{Node: node, At: at(ms)})
		}
		return out
	}
	cat := func(parts ...[]localcluster.Ack) []localcluster.Ack { return slices.Concat(parts...) }
	for _, tc := range []struct {
		name        string
		acks        []localcluster.Ack
		t0, end     int
		final       string
		wantOther   int // ms of the first ack on another node, -1 none
		wantGap     time.Duration
		wantChanges int
	}{
		{"no interruption", run("n1", 0, 10000), 1000, 5000, "n1", -1, 20 * time.Millisecond, 0},
		{"failover", cat(run("n1", 0, 1000), run("n2", 6000, 9000)), 1010, 7000, "n2", 6000, 5020 * time.Millisecond, 1},
		{"outage, same primary", cat(run("n1", 0, 1000), run("n1", 2500, 9000)), 1010, 4000, "n1", -1, 1520 * time.Millisecond, 0},
		{"failover and back", cat(run("n1", 0, 1000), run("n2", 3000, 4000), run("n1", 5000, 9000)), 1010, 8000, "n1", 3000, 2020 * time.Millisecond, 2},
		{"leader moved, writes not resumed", run("n1", 0, 1000), 1010, 5000, "n2", -1, 4020 * time.Millisecond, 1},
		{"gap after end counts", cat(run("n1", 0, 4000), run("n1", 7000, 9000)), 1000, 3990, "n1", -1, 3020 * time.Millisecond, 0},
		{"acks only after end", cat(run("n1", 0, 1000), run("n3", 9000, 9100)), 1010, 8000, "n3", -1, 8020 * time.Millisecond, 1},
		{"no acks at all", nil, 1000, 3000, "", -1, 2000 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := analyseAcks(tc.acks, "n1", at(tc.t0), at(tc.end), tc.final)
			if tc.wantOther < 0 && w.HasOther || tc.wantOther >= 0 && (!w.HasOther || !w.FirstOther.At.Equal(at(tc.wantOther))) {
				t.Errorf("first other = %v %v, want at %d ms", w.HasOther, w.FirstOther.At.Sub(base), tc.wantOther)
			}
			if w.Gap != tc.wantGap {
				t.Errorf("gap = %s, want %s", w.Gap, tc.wantGap)
			}
			if w.Changes != tc.wantChanges {
				t.Errorf("changes = %d, want %d", w.Changes, tc.wantChanges)
			}
		})
	}
}

func TestTotals(t *testing.T) {
	rec := func(kind string, rto, gap time.Duration, changes int) faultRecord {
		r := faultRecord{Plan: plannedFault{Kind: kind}, Class: specOf(kind).class, Gap: gap, Changes: changes, Moved: changes > 0}
		if r.Class == mustMove && changes > 0 {
			r.RTO, r.HasRTO = rto, true
		}
		return r
	}
	recs := []faultRecord{
		rec(kindHostKillPrimary, 5*time.Second, 5*time.Second, 1),
		rec(kindAgentFreeze, 6*time.Second, 100*time.Millisecond, 1),
		rec(kindAgentFreeze, 0, 50*time.Millisecond, 0), // short freeze absorbed: no RTO sample
		rec(kindCutPrimary, 9*time.Second, 9*time.Second, 1),
		rec(kindEtcdDown, 0, 27*time.Second, 1), // outage and needless failover
		rec(kindHostKillReplica, 0, 300*time.Millisecond, 0),
		rec(kindSwitchover, 0, 4*time.Second, 1), // planned: neither needless nor an outage
	}
	tt := totals(recs, 2, 1500*time.Millisecond)
	want := "chaos: faults=7 kinds=6 lost_acked_writes=2 split_brain_ms=1500 needless_failovers=1 failover_rto_ms_p50=6000 survivable_outage_ms_max=27000"
	if got := tt.lastLine(); got != want {
		t.Errorf("last line\n got %s\nwant %s", got, want)
	}
	f := strings.Join(tt.failures(), "; ")
	for _, w := range []string{"lost_acked_writes=2", "split_brain_ms=1500", "needless_failovers=1", "survivable_outage_ms_max=27000"} {
		if !strings.Contains(f, w) {
			t.Errorf("failures %q lack %q", f, w)
		}
	}
	if strings.Contains(f, "failover_rto") {
		t.Errorf("rto p50 6000 < 8000 reported as failing: %q", f)
	}

	good := totals([]faultRecord{rec(kindHostKillPrimary, 5*time.Second, 5*time.Second, 1), rec(kindQuorumLoss, 0, 40*time.Millisecond, 0)}, 0, 0)
	if f := good.failures(); len(f) != 0 {
		t.Errorf("passing run reported failures: %v", f)
	}
	if !strings.HasSuffix(good.lastLine(), "failover_rto_ms_p50=5000 survivable_outage_ms_max=40") {
		t.Errorf("last line %q", good.lastLine())
	}

	none := totals(nil, 0, 0)
	if want := "chaos: faults=0 kinds=0 lost_acked_writes=0 split_brain_ms=0 needless_failovers=0 failover_rto_ms_p50=NaN survivable_outage_ms_max=NaN"; none.lastLine() != want {
		t.Errorf("empty run: %q", none.lastLine())
	}
}
