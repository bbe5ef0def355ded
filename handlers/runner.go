package handlers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// DefaultWaitDelay is how long a run waits, after the handler has exited or
// been killed and everything it started has been killed, for its stdout and
// stderr to close before abandoning them (only a process that escaped both
// the process group and the cgroup can still hold them).
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

// WithWaitDelay sets how long every run waits for the output pipes to close
// after the handler exited or was killed (see DefaultWaitDelay), and
// exec.Cmd.WaitDelay. Values <= 0 are ignored (DefaultWaitDelay stays).
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
	mode, why := DetectIsolation()
	r.log.Info("handler isolation", zap.String("isolation", string(mode)), zap.String("why_not_better", why),
		zap.String("user", set.User))
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
	sp, _, ok := r.rawSpecUser(p)
	return sp, ok
}

// rawSpecUser returns a deep copy of the spec configured for p and the
// configured Set.User, read together.
func (r *Runner) rawSpecUser(p Phase) (Spec, string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	sp := r.set.Get(p)
	if sp == nil {
		return Spec{}, r.set.User, false
	}
	return sp.Clone(), r.set.User, true
}

// Run runs the handler configured for p once, with env in its environment,
// and waits for it. The run ends when the handler exits, when Spec.Timeout
// passes (StatusTimedOut) or when ctx ends (StatusCanceled). In every case,
// once the handler's main process has ended, its whole process group and its
// cgroup (see Isolation) are killed with SIGKILL, so nothing it started
// outlives the run. Run returns at most about WaitDelay after that. A run
// that would be root (Set.User) is StatusStartFailed wrapping ErrRunAsRoot. It returns StatusSkipped without doing
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
	raw, userName, ok := r.rawSpecUser(p)
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
	u, err := resolveUser(userName)
	if err != nil {
		res := startFailed(p, fmt.Errorf("run %s handler: handlers.user: %w", p, err))
		r.logFinished(res, 0)
		return res, sp
	}
	if ctx.Err() != nil {
		res := Result{Phase: p, Status: StatusCanceled, ExitCode: -1,
			Err: fmt.Errorf("run %s handler: not started: %w", p, context.Cause(ctx))}
		r.logFinished(res, 0)
		return res, sp
	}
	return r.execute(ctx, p, sp, env, u), sp
}

// startFailed returns a StatusStartFailed result for p.
func startFailed(p Phase, err error) Result {
	return Result{Phase: p, Status: StatusStartFailed, ExitCode: -1, Err: err}
}

// execute starts the handler described by sp as user u (nil: the agent's
// user), captures its output, waits for it, kills everything it left
// behind and classifies the outcome.
func (r *Runner) execute(ctx context.Context, p Phase, sp Spec, env Env, u *osUser) Result {
	runCtx, cancel := context.WithTimeoutCause(ctx, sp.Timeout, ErrTimeout)
	defer cancel()

	argv := sp.argv(p)
	cmd := exec.CommandContext(runCtx, argv[0], argv[1:]...)
	cmd.Env = buildEnv(sp, p, env, u)
	cmd.Dir = sp.Dir
	if cmd.Dir == "" && u != nil {
		// The agent's working directory may be closed to the handler's user.
		cmd.Dir = "/"
		if st, err := os.Stat(u.home); u.home != "" && err == nil && st.IsDir() {
			cmd.Dir = u.home
		}
	}
	cmd.WaitDelay = r.waitDelay
	setProcessGroup(cmd, u)
	box, err := host().prepare(cmd, p, u)
	if err != nil {
		// The cgroup could not be made: run with the process group only.
		r.log.Warn("handler runs without its own cgroup", zap.String("handler", string(p)), zap.Error(err))
		box = nil
	}
	cmd.Cancel = func() error {
		// Timeout or cancellation: the whole group, and the cgroup with
		// whatever escaped the group.
		err := killGroup(cmd.Process.Pid)
		if box != nil {
			_ = box.kill()
		}
		return err
	}

	sink := &outputSink{log: r.log, phase: p, buffered: p == Health}
	stdout, stderr := sink.newLineWriter("stdout"), sink.newLineWriter("stderr")
	out, err := startPipes(cmd, stdout, stderr)
	if err != nil {
		r.releaseBox(p, box)
		res := startFailed(p, fmt.Errorf("start %s handler: %w", p, err))
		r.logFinished(res, 0)
		return res
	}

	start := time.Now()
	if err := cmd.Start(); err != nil {
		out.abort()
		r.releaseBox(p, box)
		res := startFailed(p, fmt.Errorf("start %s handler: %w", p, err))
		if ctx.Err() != nil {
			res.Status, res.Err = StatusCanceled, fmt.Errorf("start %s handler: %w", p, context.Cause(ctx))
		}
		r.logFinished(res, 0)
		return res
	}
	out.started()
	waitErr := cmd.Wait()
	res := classify(runCtx, p, sp, cmd.ProcessState, waitErr)
	res.Duration = time.Since(start)

	// The handler has exited: nothing it started may outlive the run.
	_ = killGroup(cmd.Process.Pid)
	r.releaseBox(p, box)
	abandoned := out.wait(r.waitDelay)

	// The copying goroutines are done: nothing writes to stdout or stderr
	// any more.
	stdout.flush()
	stderr.flush()
	lvl := zapcore.InfoLevel
	if res.Status == StatusOK {
		lvl = zapcore.DebugLevel
	}
	sink.release(lvl)
	if abandoned {
		r.log.Warn("handler left processes holding its output open; stopped reading it",
			zap.String("handler", string(p)), zap.Duration("wait_delay", r.waitDelay))
	}
	r.logFinished(res, stdout.discardedBytes()+stderr.discardedBytes())
	return res
}

// releaseBox kills what is left in the run's container and removes it,
// logging a failure.
func (r *Runner) releaseBox(p Phase, box *runBox) {
	if box == nil {
		return
	}
	if err := box.release(); err != nil {
		r.log.Warn("cleaning up the handler's cgroup", zap.String("handler", string(p)), zap.Error(err))
	}
}

// pipes copies a run's stdout and stderr from OS pipes the runner owns, so
// that waiting for the handler (cmd.Wait) does not wait for the output of
// processes it left behind.
type pipes struct {
	readers, writers []*os.File
	sinks            []io.Writer
	done             chan struct{} // one value per finished copy
}

// startPipes connects cmd's stdout and stderr to new pipes, copied into the
// given writers from the call to started on.
func startPipes(cmd *exec.Cmd, stdout, stderr io.Writer) (*pipes, error) {
	pp := &pipes{done: make(chan struct{}, 2), sinks: []io.Writer{stdout, stderr}}
	for range pp.sinks {
		pr, pw, err := os.Pipe()
		if err != nil {
			pp.abort()
			return nil, err
		}
		pp.readers, pp.writers = append(pp.readers, pr), append(pp.writers, pw)
	}
	cmd.Stdout, cmd.Stderr = pp.writers[0], pp.writers[1]
	return pp, nil
}

// started closes the parent's copies of the write ends and starts copying.
// Call it once the command has started.
func (pp *pipes) started() {
	for _, w := range pp.writers {
		_ = w.Close()
	}
	pp.writers = nil
	for i, pr := range pp.readers {
		w := pp.sinks[i]
		go func() {
			_, _ = io.Copy(w, pr)
			pp.done <- struct{}{}
		}()
	}
}

// abort closes everything; the command never started.
func (pp *pipes) abort() {
	for _, f := range append(pp.readers, pp.writers...) {
		_ = f.Close()
	}
}

// wait waits up to d for both copies to reach end of file, then stops them.
// It reports whether output was still held open by some process after d.
func (pp *pipes) wait(d time.Duration) (abandoned bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for n := 0; n < len(pp.readers); {
		select {
		case <-pp.done:
			n++
		case <-timer.C:
			if !abandoned {
				abandoned = true
				for _, pr := range pp.readers {
					_ = pr.SetReadDeadline(time.Now())
				}
			}
		}
	}
	for _, pr := range pp.readers {
		_ = pr.Close()
	}
	return abandoned
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

// buildEnv returns the handler's environment: the agent's (without its own
// DBPILOT_* variables and DAPR_API_TOKEN), then HOME, USER and LOGNAME of u
// when the handler runs as another user, then Spec.Env, then the DBPILOT_*
// variables. exec.Cmd keeps the last value of a duplicate
// key, so each layer overrides the previous one.
func buildEnv(sp Spec, p Phase, env Env, u *osUser) []string {
	var out []string
	for _, kv := range os.Environ() {
		// The agent's own DBPILOT_* variables (passwords among them) and
		// Dapr token stay with the agent.
		if strings.HasPrefix(strings.ToUpper(kv), reservedEnvPrefix) || strings.HasPrefix(kv, "DAPR_API_TOKEN=") {
			continue
		}
		out = append(out, kv)
	}
	if u != nil {
		out = append(out, "HOME="+u.home, "USER="+u.name, "LOGNAME="+u.name)
	}
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
