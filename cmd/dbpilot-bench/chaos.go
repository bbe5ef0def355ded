package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/localcluster"
)

// exitCode makes main exit with that code without printing anything more,
// so that a command's own last line stays the last line.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

const (
	chaosWriteEvery   = 20 * time.Millisecond
	chaosProbeEvery   = 25 * time.Millisecond
	chaosSteadyWithin = 90 * time.Second // a steady state not reached by then is a failure
	chaosMoveWithin   = 60 * time.Second // a killed primary is restarted after the failover, or after this
	chaosResumeWithin = 30 * time.Second // writes must resume once the cluster is steady
)

func newChaosCmd() *cobra.Command {
	var (
		seed     uint64
		faults   int
		modes    []string
		dir      string
		logLevel string
		kinds    []string
	)
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Randomised fault campaign: lost acknowledged writes, split brain, needless failovers, RTO, outages",
		Long: `Start a 3-node cluster on a 3-member etcd per mode, write every 20 ms,
probe for two writable nodes, and inject --faults random faults per mode
(host kill, agent kill, agent freeze, etcd cut, etcd down, quorum loss,
switchover, replica data loss), each at a random offset after the steady
state. The last line is the campaign's summary (docs/benchmarks.md).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("seed") {
				seed = uint64(time.Now().UnixNano())
			}
			// A failed campaign has already said why; its last line stays last.
			cmd.SilenceErrors = true
			return runChaos(cmd.Context(), chaosOptions{Seed: seed, Faults: faults, Modes: modes, Dir: dir, LogLevel: logLevel, Kinds: kinds})
		},
	}
	cmd.Flags().Uint64Var(&seed, "seed", 0, "random seed of the fault plan (default: time-based; printed first, and again on failure)")
	cmd.Flags().IntVar(&faults, "faults", 50, "faults per mode")
	cmd.Flags().StringSliceVar(&modes, "modes", []string{"sync", "async"}, "modes to run: sync (synchronous_mode on), async (off)")
	cmd.Flags().StringVar(&dir, "dir", ".dbpilot/bench-chaos", "work folder (wiped per mode; agent logs stay there)")
	cmd.Flags().StringSliceVar(&kinds, "kinds", nil, "draw only these fault kinds (default: all; to replay or debug a few kinds)")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "progress log level on stderr (debug, info, warn, error)")
	return cmd
}

type chaosOptions struct {
	Seed     uint64
	Faults   int
	Modes    []string
	Dir      string
	LogLevel string
	Kinds    []string
	start    time.Time // campaign start, for the per-fault elapsed time
}

func syncModeOf(mode string) (string, error) {
	switch mode {
	case "sync", "on":
		return "on", nil
	case "async", "off":
		return "off", nil
	}
	return "", fmt.Errorf("--modes: unknown mode %q (want sync or async)", mode)
}

func chaosLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	cfg := zap.NewDevelopmentEncoderConfig()
	cfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(cfg), zapcore.Lock(os.Stderr), lvl)
	return zap.New(core).Named("chaos"), nil
}

// modeOutcome is what a mode's end-of-run checks found.
type modeOutcome struct {
	mode     string
	acks     int
	lost     int
	lostOK   bool // Missing could run on a final primary
	split    time.Duration
	maxWrite int
	aborted  string
	// lateFailures: steady state lost between faults (repaired).
	lateFailures []string
	recs         []faultRecord
	setupError   error
}

func runChaos(ctx context.Context, o chaosOptions) error {
	fmt.Printf("chaos: seed=%d faults_per_mode=%d modes=%s\n", o.Seed, o.Faults, strings.Join(o.Modes, ","))
	replay := fmt.Sprintf("replay: dbpilot-bench chaos --seed %d --faults %d --modes %s", o.Seed, o.Faults, strings.Join(o.Modes, ","))
	if len(o.Kinds) > 0 {
		replay += " --kinds " + strings.Join(o.Kinds, ",")
	}
	kinds, err := selectKinds(o.Kinds)
	if err != nil {
		return err
	}
	log, err := chaosLogger(o.LogLevel)
	if err != nil {
		return err
	}
	if o.Faults < 1 {
		return errors.New("--faults must be at least 1")
	}
	for _, m := range o.Modes {
		if _, err := syncModeOf(m); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	agentBin := filepath.Join(filepath.Dir(self), "dbpilot-agent")
	if _, err := os.Stat(agentBin); err != nil {
		return fmt.Errorf("dbpilot-agent must sit next to dbpilot-bench (make build): %w", err)
	}
	start := time.Now()
	o.start = start
	var outs []modeOutcome
	for _, m := range o.Modes {
		out := chaosMode(ctx, log, o, kinds, agentBin, m)
		outs = append(outs, out)
		if ctx.Err() != nil {
			break
		}
	}

	var all []faultRecord
	lostSync, split := 0, time.Duration(0)
	var notes []string
	lostUnverified := false
	for _, out := range outs {
		all = append(all, out.recs...)
		split += out.split
		if out.setupError != nil {
			notes = append(notes, fmt.Sprintf("mode %s: %v", out.mode, out.setupError))
		}
		for _, f := range out.lateFailures {
			notes = append(notes, fmt.Sprintf("mode %s: %s", out.mode, f))
		}
		if out.aborted != "" {
			notes = append(notes, fmt.Sprintf("mode %s aborted: %s", out.mode, out.aborted))
		}
		lostText := "unchecked"
		if out.lostOK {
			lostText = fmt.Sprint(out.lost)
		}
		fmt.Printf("mode=%s faults=%d acked_writes=%d lost_acked_writes=%s split_brain_ms=%d max_writable_at_once=%d\n",
			out.mode, len(out.recs), out.acks, lostText, out.split.Milliseconds(), out.maxWrite)
		if m, _ := syncModeOf(out.mode); m == "on" {
			if out.lostOK {
				lostSync += out.lost
			} else {
				lostUnverified = true
			}
		}
	}
	printKindTable(all)
	t := totals(all, lostSync, split)
	t.LostUnverified = lostUnverified
	if t.Missed > 0 {
		fmt.Printf("note: %d must-move fault(s) longer than ttl+2s left the primary in place (MISSED-FAILOVER above)\n", t.Missed)
	}
	if !t.HasRTO {
		fmt.Println("note: failover_rto_ms_p50 has no sample (NaN): no must-move fault was drawn, or none moved the primary")
	}
	fmt.Printf("elapsed: %s\n", time.Since(start).Round(time.Second))
	fails := t.failures()
	fails = append(fails, notes...)
	if ctx.Err() != nil {
		fails = append(fails, "interrupted: "+ctx.Err().Error())
	}
	if len(fails) > 0 {
		fmt.Printf("chaos: FAILED (seed=%d): %s\n", o.Seed, strings.Join(fails, "; "))
		fmt.Println(replay)
	}
	fmt.Println(t.lastLine())
	if len(fails) > 0 {
		return exitCode(1)
	}
	return nil
}

// chaosRun is one mode's cluster under load.
type chaosRun struct {
	log      *zap.Logger
	mode     string // sync or async
	syncMode string // on or off
	c        *localcluster.Cluster
	w        *localcluster.Writer
	probe    *localcluster.WritableProbe
	ttl      time.Duration
	start    time.Time
}

func chaosMode(ctx context.Context, log *zap.Logger, o chaosOptions, kinds []kindSpec, agentBin, mode string) (out modeOutcome) {
	out.mode = mode
	syncMode, _ := syncModeOf(mode)
	plan := drawPlanOf(kinds, o.Seed, mode, o.Faults)
	dir := filepath.Join(o.Dir, mode)
	if err := os.RemoveAll(dir); err != nil {
		out.setupError = err
		return out
	}
	log = log.With(zap.String("mode", mode))
	log.Info("starting cluster", zap.String("dir", dir))
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Nodes: 3, EtcdMembers: 3, AgentBin: agentBin, SynchronousMode: syncMode, Log: zap.NewNop()})
	if err != nil {
		out.setupError = fmt.Errorf("start cluster: %w", err)
		return out
	}
	defer c.Close()
	r := &chaosRun{log: log, mode: mode, syncMode: syncMode, c: c, ttl: config.DefaultTTL, start: o.start}
	if _, err := steadyWithin(ctx, c, syncMode, chaosSteadyWithin); err != nil {
		out.setupError = fmt.Errorf("initial steady state: %w", err)
		return out
	}
	if r.w, err = c.NewWriter(ctx, chaosWriteEvery); err != nil {
		out.setupError = fmt.Errorf("writer: %w", err)
		return out
	}
	r.probe = c.NewWritableProbe(chaosProbeEvery)
	lctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.w.Run(lctx) }()
	go func() { defer wg.Done(); r.probe.Run(lctx) }()
	stop := sync.OnceFunc(func() { stopLoad(); wg.Wait() })
	defer stop()

	for _, pf := range plan {
		if ctx.Err() != nil {
			break
		}
		// The random offset lands the fault anywhere in the lease renewal
		// cycle; the steady state is checked after it, right before the
		// injection.
		sleepCtx(ctx, pf.Offset)
		s, err := steadyWithin(ctx, c, syncMode, chaosSteadyWithin)
		if err != nil && ctx.Err() == nil {
			// Lost after the previous fault's window: a failure; repair
			// and try once more, then give up on this mode.
			out.lateFailures = append(out.lateFailures, fmt.Sprintf("steady state lost before fault %d: %s", pf.Seq, firstLine(err.Error())))
			log.Warn("steady state lost before the fault; repairing", zap.Int("fault", pf.Seq), zap.Error(err))
			if rerr := r.repair(); rerr != nil {
				log.Warn("repair", zap.Error(rerr))
			}
			s, err = steadyWithin(ctx, c, syncMode, chaosSteadyWithin)
		}
		if err != nil {
			out.aborted = fmt.Sprintf("no steady state before fault %d: %s", pf.Seq, firstLine(err.Error()))
			fmt.Fprintln(os.Stderr, err)
			break
		}
		if n := len(out.recs); n > 0 {
			// A primary change after the previous fault's window (none was
			// injected since) still belongs to that fault.
			prev := &out.recs[n-1]
			if prev.NewPrimary != "" && s.Leader != prev.NewPrimary {
				prev.Changes++
				prev.Moved = true
				fmt.Printf("fault %d/%d: late primary change %s -> %s (term %d), counted for fault %d (%s)\n",
					prev.Plan.Seq, len(plan), prev.NewPrimary, s.Leader, s.Term, prev.Plan.Seq, prev.Plan.Kind)
				prev.NewPrimary = s.Leader
			}
		}
		rec := r.oneFault(ctx, pf, s)
		out.recs = append(out.recs, rec)
		fmt.Println(rec.line(len(plan)))
		if rec.Failure != "" && strings.HasPrefix(rec.Failure, "stuck") {
			out.aborted = rec.Failure
			break
		}
	}
	stop()
	out.acks = len(r.w.Acks())
	out.split, out.maxWrite = r.probe.SplitBrain()
	if ctx.Err() != nil {
		return out
	}
	s, err := steadyWithin(ctx, c, syncMode, chaosSteadyWithin)
	if err != nil {
		log.Warn("no steady state at the end; looking for acknowledged writes on the etcd leader anyway", zap.Error(err))
	}
	if i := c.Index(s.Leader); i >= 0 {
		missing, err := c.Missing(ctx, i, r.w.Acks())
		if err == nil {
			out.lost, out.lostOK = len(missing), true
		} else {
			log.Warn("cannot check acknowledged writes", zap.Error(err))
		}
	}
	return out
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// waitOtherAck waits up to within for an acknowledged write after t0 on a
// node other than old.
func (r *chaosRun) waitOtherAck(ctx context.Context, t0 time.Time, old string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, ok := r.w.FirstAckAfter(t0, old); ok {
			return true
		}
		sleepCtx(ctx, 10*time.Millisecond)
	}
	return false
}

// replicaIndexes returns the nodes other than the leader, by name.
func (r *chaosRun) replicaIndexes(s localcluster.Status) []int {
	var out []int
	for i, n := range r.c.Nodes {
		if n.Name != s.Leader {
			out = append(out, i)
		}
	}
	return out
}

// inject runs the fault up to its heal and returns the target's
// description and the heal instant.
func (r *chaosRun) inject(ctx context.Context, pf plannedFault, s localcluster.Status, t0 *time.Time) (string, error) {
	c := r.c
	old := c.Index(s.Leader)
	reps := r.replicaIndexes(s)
	rep := reps[int(pf.Pick)%len(reps)]
	now := func() { *t0 = time.Now() }
	switch pf.Kind {
	case kindHostKillPrimary, kindAgentKill:
		kill := c.Kill
		if pf.Kind == kindAgentKill {
			kill = c.KillAgent
		}
		now()
		if err := kill(old); err != nil {
			return s.Leader, err
		}
		if !r.waitOtherAck(ctx, *t0, s.Leader, chaosMoveWithin) {
			r.log.Warn("no write acknowledged on another node; restarting the killed node anyway", zap.String("node", s.Leader))
		}
		return s.Leader, c.StartNode(old)
	case kindHostKillReplica:
		now()
		if err := c.Kill(rep); err != nil {
			return c.Nodes[rep].Name, err
		}
		sleepCtx(ctx, pf.Dur-time.Since(*t0))
		return c.Nodes[rep].Name, c.StartNode(rep)
	case kindDataLost:
		now()
		if err := c.Kill(rep); err != nil {
			return c.Nodes[rep].Name, err
		}
		if err := c.RemoveData(rep); err != nil {
			return c.Nodes[rep].Name, err
		}
		return c.Nodes[rep].Name, c.StartNode(rep)
	case kindAgentFreeze:
		now()
		if err := c.Freeze(old); err != nil {
			return s.Leader, err
		}
		sleepCtx(ctx, pf.Dur-time.Since(*t0))
		return s.Leader, c.Thaw(old)
	case kindCutPrimary, kindCutReplica:
		i := old
		if pf.Kind == kindCutReplica {
			i = rep
		}
		now()
		c.Nodes[i].Proxy.Cut(true)
		sleepCtx(ctx, pf.Dur-time.Since(*t0))
		c.Nodes[i].Proxy.Cut(false)
		return c.Nodes[i].Name, nil
	case kindEtcdDown:
		now()
		if err := c.StopEtcd(); err != nil {
			return "etcd", err
		}
		sleepCtx(ctx, pf.Dur-time.Since(*t0))
		return "etcd", c.StartEtcd()
	case kindQuorumLoss:
		keep := int(pf.Pick) % len(c.EtcdMembers)
		var stop []int
		var names []string
		for i, m := range c.EtcdMembers {
			if i != keep {
				stop, names = append(stop, i), append(names, m.Name)
			}
		}
		target := strings.Join(names, "+")
		now()
		if err := c.StopEtcd(stop...); err != nil {
			return target, err
		}
		sleepCtx(ctx, pf.Dur-time.Since(*t0))
		return target, c.StartEtcd(stop...)
	case kindSwitchover:
		now()
		if err := c.RequestSwitchover(ctx, s.Leader, ""); err != nil {
			return s.Leader, err
		}
		if !r.waitOtherAck(ctx, *t0, s.Leader, chaosMoveWithin) {
			r.log.Warn("switchover: no write acknowledged on another node", zap.String("from", s.Leader))
		}
		return s.Leader, nil
	}
	return "", fmt.Errorf("unknown fault kind %q", pf.Kind)
}

// repair undoes every fault that may still be in place: thaws agents, heals
// proxies, starts etcd members and stopped nodes.
func (r *chaosRun) repair() error {
	var errs []error
	for i, n := range r.c.Nodes {
		if n.Frozen() {
			errs = append(errs, r.c.Thaw(i))
		}
		n.Proxy.Cut(false)
	}
	errs = append(errs, r.c.StartEtcd())
	for i, n := range r.c.Nodes {
		if !n.Running() {
			errs = append(errs, r.c.StartNode(i))
		}
	}
	return errors.Join(errs...)
}

// oneFault injects pf into the steady cluster s, heals it, waits for the
// steady state and resumed writes, and computes the fault's figures.
func (r *chaosRun) oneFault(ctx context.Context, pf plannedFault, s localcluster.Status) faultRecord {
	spec := specOf(pf.Kind)
	rec := faultRecord{Plan: pf, Mode: r.mode, Class: spec.class, OldPrimary: s.Leader, TermBefore: s.Term}
	splitBefore, _ := r.probe.SplitBrain()
	log := r.log.With(zap.Int("fault", pf.Seq), zap.String("kind", pf.Kind))
	log.Info("inject", zap.Duration("dur", pf.Dur), zap.String("primary", s.Leader))
	var t0 time.Time
	target, err := r.inject(ctx, pf, s, &t0)
	rec.Target = target
	if t0.IsZero() {
		t0 = time.Now()
	}
	rec.At = t0.Sub(r.start)
	if err != nil {
		rec.Failure = "inject: " + err.Error()
		log.Warn("injection failed; repairing", zap.Error(err))
		if rerr := r.repair(); rerr != nil {
			log.Warn("repair", zap.Error(rerr))
		}
	}
	healed := time.Now()
	log.Info("healed; waiting for the steady state")
	st, err := r.recoverSteady(ctx, log, &rec, healed)
	rec.Recovery = time.Since(healed)
	if err == nil && spec.settle {
		// A leader key on a lease that nobody renews any more (an agent
		// that lost its session during the fault; leases survive an etcd
		// restart with their TTL refreshed) can show a steady state that
		// is not: look again once any such lease has expired, so that a
		// failover it triggers belongs to this fault.
		sleepCtx(ctx, time.Until(healed.Add(r.ttl+2*time.Second)))
		st, err = r.recoverSteady(ctx, log, &rec, healed)
	}
	end := time.Now()
	if err == nil {
		rec.NewPrimary, rec.TermAfter = st.Leader, st.Term
		// Writes must resume: the gap that crosses end is part of the fault.
		deadline := time.Now().Add(chaosResumeWithin)
		for ctx.Err() == nil && time.Now().Before(deadline) {
			if _, ok := r.w.FirstAckAfter(end, ""); ok {
				break
			}
			sleepCtx(ctx, 10*time.Millisecond)
		}
	}
	splitAfter, _ := r.probe.SplitBrain()
	rec.Split = splitAfter - splitBefore
	a := analyseAcks(r.w.Acks(), s.Leader, t0, end, rec.NewPrimary)
	rec.Gap, rec.Changes = a.Gap, a.Changes
	rec.Moved = a.Changes > 0
	if spec.class == mustMove {
		if a.HasOther {
			rec.RTO, rec.HasRTO = a.FirstOther.At.Sub(t0), true
		} else if pf.Dur == 0 || pf.Dur > r.ttl+2*time.Second {
			// A killed primary, or one frozen or cut for longer than its
			// lease plus the replicas' reaction, must be replaced.
			rec.Missed = true
		}
	}
	return rec
}

// steadySince waits up to chaosSteadyWithin for the steady state as seen
// in member keys written after since: until ttl + 2 s after since, a key
// written before (on a lease that may be dead but not yet expired) does
// not count; after that, any steady state does (should an agent not
// refresh its member key every cycle).
func (r *chaosRun) steadySince(ctx context.Context, since time.Time) (localcluster.Status, error) {
	wctx, cancel := context.WithTimeout(ctx, chaosSteadyWithin)
	defer cancel()
	sinceMS, trustAll := since.UnixMilli(), since.Add(r.ttl+2*time.Second)
	return r.c.WaitFor(wctx, "a primary and every other node streaming", func(s localcluster.Status) bool {
		if !isSteady(s, len(r.c.Nodes), r.syncMode) {
			return false
		}
		if time.Now().After(trustAll) {
			return true
		}
		return !slices.ContainsFunc(s.Members, func(m dcs.Member) bool { return m.UpdatedMS < sinceMS })
	})
}

// recoverSteady waits for the steady state (steadySince); when it does not
// come within chaosSteadyWithin it records a failure, repairs everything
// and waits once more ("stuck" when that fails too: the mode is aborted).
func (r *chaosRun) recoverSteady(ctx context.Context, log *zap.Logger, rec *faultRecord, since time.Time) (localcluster.Status, error) {
	st, err := r.steadySince(ctx, since)
	if err == nil || ctx.Err() != nil {
		return st, err
	}
	msg := fmt.Sprintf("no steady state within %s", chaosSteadyWithin)
	log.Warn(msg+"; repairing", zap.Error(err))
	rec.Failure = strings.TrimPrefix(rec.Failure+"; "+msg, "; ")
	if rerr := r.repair(); rerr != nil {
		log.Warn("repair", zap.Error(rerr))
	}
	if st, err = r.steadySince(ctx, time.Now()); err != nil {
		rec.Failure = "stuck: " + rec.Failure + "; still none after repairing: " + firstLine(err.Error())
		fmt.Fprintln(os.Stderr, err)
	}
	return st, err
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// printKindTable prints, per mode and kind, the number of faults, how many
// moved the primary, and min/median/max of RTO, write gap and recovery.
func printKindTable(recs []faultRecord) {
	type key struct{ mode, kind string }
	groups := map[key][]faultRecord{}
	var keys []key
	for _, r := range recs {
		k := key{r.Mode, r.Plan.Kind}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := strings.Compare(a.mode, b.mode); c != 0 {
			return -c // sync first
		}
		return slices.IndexFunc(faultKinds, func(s kindSpec) bool { return s.name == a.kind }) -
			slices.IndexFunc(faultKinds, func(s kindSpec) bool { return s.name == b.kind })
	})
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODE\tKIND\tCLASS\tN\tMOVED\tRTO_MS min/med/max\tGAP_MS min/med/max\tRECOVERY_MS min/med/max\tSPLIT_MS\tNEEDLESS\tFAILED")
	for _, k := range keys {
		g := groups[k]
		var rto, gap, recov durations
		moved, needless, failed := 0, 0, 0
		var split time.Duration
		for _, r := range g {
			if r.HasRTO {
				rto = append(rto, r.RTO)
			}
			gap = append(gap, r.Gap)
			recov = append(recov, r.Recovery)
			if r.Moved {
				moved++
			}
			needless += r.needless()
			split += r.Split
			if r.Failure != "" {
				failed++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%d\t%d\t%d\n", k.mode, k.kind, specOf(k.kind).class, len(g), moved,
			minMedMax(rto), minMedMax(gap), minMedMax(recov), split.Milliseconds(), needless, failed)
	}
	_ = tw.Flush()
}

// minMedMax formats min/median/max in ms, "-" when empty.
func minMedMax(d durations) string {
	if len(d) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d/%d", d.min().Milliseconds(), d.median().Milliseconds(), d.max().Milliseconds())
}
