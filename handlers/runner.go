package handlers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// DefaultWaitDelay is how long Wait waits, after the handler has exited or
// been killed, for its stdout and stderr to close before abandoning them.
const DefaultWaitDelay = 2 * time.Second

// Runner runs the configured handlers. It is safe for concurrent use: runs of
// any phases may overlap (except onChange runs, which its queue serialises),
// and Update may be called at any time.
type Runner struct {
	log            *zap.Logger
	waitDelay      time.Duration
	onChangeResult func(Env, Result)

	mu  sync.RWMutex
	set Set

	health HealthTracker
	queue  onChangeQueue
}

// Option configures a Runner in NewRunner.
type Option func(*Runner)

// WithWaitDelay sets exec.Cmd.WaitDelay for every run: how long to wait for
// the output pipes to close after the handler exited or was killed. Values
// <= 0 are ignored (DefaultWaitDelay stays).
func WithWaitDelay(d time.Duration) Option {
	return func(r *Runner) {
		if d > 0 {
			r.waitDelay = d
		}
	}
}

// WithOnChangeResult registers fn to be called after every onChange run made
// by the queue (see StartOnChange), with the event and its result, in queue
// order, on the queue's worker goroutine. fn must not block for long: the
// next onChange run waits for it. It is not called for events dropped by
// StopOnChange. Meant for metrics, status reporting and tests.
func WithOnChangeResult(fn func(Env, Result)) Option {
	return func(r *Runner) { r.onChangeResult = fn }
}

// NewRunner returns a Runner for set. log may be nil (logs are discarded);
// the Runner logs under log.Named("handlers"). set is copied, so later changes
// to it have no effect: use Update. set should have passed Set.Validate; a
// spec that does not is reported by Run as StatusStartFailed.
func NewRunner(log *zap.Logger, set Set, opts ...Option) *Runner {
	if log == nil {
		log = zap.NewNop()
	}
	r := &Runner{
		log:       log.Named("handlers"),
		waitDelay: DefaultWaitDelay,
		set:       set.Clone(),
		queue:     newOnChangeQueue(),
	}
	for _, o := range opts {
		if o != nil {
			o(r)
		}
	}
	return r
}

// Update replaces the handler configuration (SIGHUP reload). Runs already in
// progress finish with the spec they started with; later runs use set. The
// health failure count survives the reload unless health is no longer
// configured. Safe to call concurrently with everything else.
func (r *Runner) Update(set Set) {
	c := set.Clone()
	r.mu.Lock()
	r.set = c
	r.mu.Unlock()
	if c.Health == nil {
		r.health.Reset()
	}
	var configured []string
	for _, p := range Phases() {
		if c.Get(p) != nil {
			configured = append(configured, string(p))
		}
	}
	r.log.Info("handlers updated", zap.Strings("configured", configured))
}

// Spec returns a copy of the spec currently configured for p with the default
// Timeout (and for health, Threshold) filled in, or nil if p is not
// configured or not a phase. Interval stays 0 when unset, meaning the agent's
// health.interval.
func (r *Runner) Spec(p Phase) *Spec {
	sp, ok := r.rawSpec(p)
	if !ok {
		return nil
	}
	d := sp.withDefaults(p)
	return &d
}

// rawSpec returns a deep copy of the spec configured for p, as configured.
func (r *Runner) rawSpec(p Phase) (Spec, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	sp := r.set.Get(p)
	if sp == nil {
		return Spec{}, false
	}
	return sp.Clone(), true
}

// Run runs the handler configured for p once, with env in its environment,
// and waits for it. The run ends when the handler exits, when Spec.Timeout
// passes (StatusTimedOut) or when ctx ends (StatusCanceled); in the last two
// cases the handler's whole process group is killed with SIGKILL. Run returns
// at most about WaitDelay after that. It returns StatusSkipped without doing
// anything if p is not configured, and StatusStartFailed if the handler could
// not be started (Err says why). Run logs the handler's output and one
// "handler finished" event; it never returns an error separately: inspect
// the Result.
func (r *Runner) Run(ctx context.Context, p Phase, env Env) Result {
	res, _ := r.run(ctx, p, env)
	return res
}

// run is Run, also returning the spec (with defaults) it used.
func (r *Runner) run(ctx context.Context, p Phase, env Env) (Result, Spec) {
	if !p.Valid() {
		res := startFailed(p, fmt.Errorf("run handler %q: %w", p, ErrUnknownPhase))
		r.logFinished(res, 0)
		return res, Spec{}
	}
	raw, ok := r.rawSpec(p)
	if !ok {
		res := Result{Phase: p, Status: StatusSkipped, ExitCode: -1}
		r.logFinished(res, 0)
		return res, Spec{}
	}
	if errs := raw.validate("handlers."+string(p), p); len(errs) > 0 {
		res := startFailed(p, fmt.Errorf("run %s handler: %w: %w", p, ErrInvalidSpec, errors.Join(errs...)))
		r.logFinished(res, 0)
		return res, Spec{}
	}
	sp := raw.withDefaults(p)
	if ctx.Err() != nil {
		res := Result{Phase: p, Status: StatusCanceled, ExitCode: -1,
			Err: fmt.Errorf("run %s handler: not started: %w", p, context.Cause(ctx))}
		r.logFinished(res, 0)
		return res, sp
	}
	return r.execute(ctx, p, sp, env), sp
}

// startFailed returns a StatusStartFailed result for p.
func startFailed(p Phase, err error) Result {
	return Result{Phase: p, Status: StatusStartFailed, ExitCode: -1, Err: err}
}

// execute starts the handler described by sp, captures its output, waits for
// it and classifies the outcome.
func (r *Runner) execute(ctx context.Context, p Phase, sp Spec, env Env) Result {
	runCtx, cancel := context.WithTimeoutCause(ctx, sp.Timeout, ErrTimeout)
	defer cancel()

	argv := sp.argv(p)
	cmd := exec.CommandContext(runCtx, argv[0], argv[1:]...)
	cmd.Env = buildEnv(sp, p, env)
	cmd.Dir = sp.Dir
	cmd.WaitDelay = r.waitDelay
	setProcessGroup(cmd)

	sink := &outputSink{log: r.log, phase: p, buffered: p == Health}
	stdout, stderr := sink.newLineWriter("stdout"), sink.newLineWriter("stderr")
	cmd.Stdout, cmd.Stderr = stdout, stderr

	start := time.Now()
	if err := cmd.Start(); err != nil {
		res := startFailed(p, fmt.Errorf("start %s handler: %w", p, err))
		if ctx.Err() != nil {
			res.Status, res.Err = StatusCanceled, fmt.Errorf("start %s handler: %w", p, context.Cause(ctx))
		}
		r.logFinished(res, 0)
		return res
	}
	waitErr := cmd.Wait()
	res := classify(runCtx, p, sp, cmd.ProcessState, waitErr)
	res.Duration = time.Since(start)

	// Wait has returned, so the copying goroutines are done: nothing
	// writes to stdout or stderr any more.
	stdout.flush()
	stderr.flush()
	lvl := zapcore.InfoLevel
	if res.Status == StatusOK {
		lvl = zapcore.DebugLevel
	}
	sink.release(lvl)
	if errors.Is(waitErr, exec.ErrWaitDelay) {
		r.log.Warn("handler left processes holding its output open; stopped reading it",
			zap.String("handler", string(p)), zap.Duration("wait_delay", r.waitDelay))
	}
	r.logFinished(res, stdout.discardedBytes()+stderr.discardedBytes())
	return res
}

// classify turns the outcome of Wait into a Result. state is nil if the
// process could not be waited for.
func classify(runCtx context.Context, p Phase, sp Spec, state *os.ProcessState, waitErr error) Result {
	res := Result{Phase: p, ExitCode: -1}
	switch {
	case state == nil:
		res.Status = StatusFailed
		res.Err = fmt.Errorf("wait for %s handler: %w", p, waitErr)
	case state.Exited():
		// It exited on its own, even if the deadline passed meanwhile:
		// its exit status is the answer.
		res.ExitCode = state.ExitCode()
		if res.ExitCode == 0 {
			res.Status = StatusOK
			return res
		}
		res.Status = StatusFailed
		res.Err = fmt.Errorf("%s handler: %w", p, waitErr) // *exec.ExitError: "exit status N"
	case runCtx.Err() != nil && errors.Is(context.Cause(runCtx), ErrTimeout):
		res.Status = StatusTimedOut
		res.Err = fmt.Errorf("%s handler: killed after %s: %w", p, sp.Timeout, ErrTimeout)
	case runCtx.Err() != nil:
		res.Status = StatusCanceled
		res.Err = fmt.Errorf("%s handler: killed: %w", p, context.Cause(runCtx))
	default:
		// Killed by a signal we did not send (OOM killer, operator).
		res.Status = StatusFailed
		res.Err = fmt.Errorf("%s handler: %s", p, state)
	}
	return res
}

// buildEnv returns the handler's environment: the agent's, then Spec.Env,
// then the DBPILOT_* variables. exec.Cmd keeps the last value of a duplicate
// key, so each layer overrides the previous one.
func buildEnv(sp Spec, p Phase, env Env) []string {
	out := os.Environ()
	for _, k := range slices.Sorted(maps.Keys(sp.Env)) {
		out = append(out, k+"="+sp.Env[k])
	}
	return append(out, env.vars(p)...)
}

// logFinished logs the "handler finished" event: DEBUG for skipped runs and
// successful health runs, INFO for other successful runs, WARN otherwise.
// discarded is the number of output bytes that were not logged.
func (r *Runner) logFinished(res Result, discarded int64) {
	lvl := zapcore.InfoLevel
	switch {
	case !res.OK():
		lvl = zapcore.WarnLevel
	case res.Status == StatusSkipped, res.Phase == Health:
		lvl = zapcore.DebugLevel
	}
	ce := r.log.Check(lvl, "handler finished")
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("handler", string(res.Phase)),
		zap.String("status", res.Status.String()),
		zap.Int("exit_code", res.ExitCode),
		zap.Duration("duration", res.Duration),
	}
	if res.Err != nil {
		fields = append(fields, zap.Error(res.Err))
	}
	if discarded > 0 {
		fields = append(fields, zap.Int64("output_discarded_bytes", discarded))
	}
	ce.Write(fields...)
}
