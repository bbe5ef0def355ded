package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/proto"
	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// Claimer decides which agent runs an occurrence (the agent's etcd client).
type Claimer interface {
	// Claim creates key on this agent's lease if absent; true if it did.
	Claim(ctx context.Context, key, value string) (bool, error)
	// CompleteClaim keeps key (value) for ttl after the run.
	CompleteClaim(ctx context.Context, key, value string, ttl time.Duration) error
	// ClaimKey is the key of one occurrence of job.
	ClaimKey(job string, occurrenceUnix int64) string
}

// Roles the scheduler distinguishes.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
)

// Scheduler runs the jobs of the local store: every agent of a cluster holds
// the same schedule, and each occurrence runs on exactly one of them, the
// one that claims it in etcd. Under run_on prefer-replica, healthy replicas
// claim at once and the primary only after Grace. An agent that was down at
// an occurrence's time runs it once on start-up if its window is still
// open and no other agent ran it.
type Scheduler struct {
	Svc    *Service
	Claims Claimer
	// Role reports this node's current role ("primary", "replica", other =
	// unknown) and health; a node that is unhealthy or of unknown role
	// claims nothing.
	Role func() (role string, healthy bool)
	// RunOn is prefer-replica, replica, primary or any.
	RunOn string
	// Grace is how long the primary waits under prefer-replica.
	Grace time.Duration
	// PGConfig is the template for restore drills.
	PGConfig postgres.Config
	// EnsureRole, if set, is called once while this node is primary, to
	// create the backup role.
	EnsureRole func(context.Context) error
	// Requests, if set, is the source of on-demand requests the control
	// plane writes (backup/requests/{id}); each runs once, on the agent
	// that claims it.
	Requests Requests
	// SwitchWAL, if set, answers "switch-wal" requests on the primary: it
	// switches to a new WAL segment and waits until the finished one is
	// archived (so a point-in-time restore can reach "now").
	SwitchWAL func(context.Context) error
	// Tick is the polling interval (default 1s).
	Tick time.Duration
	Log  *zap.Logger

	roleEnsured bool
	notBefore   map[string]time.Time // claim key → do not retry before
	firstSeen   map[string]time.Time // claim key → when this scheduler first saw it due
}

// Request actions.
const (
	// ActionBackup runs a backup job now (keyspace.ActionBackup).
	ActionBackup = keyspace.ActionBackup
	// ActionSwitchWAL switches and archives the current WAL segment (the
	// primary only; keyspace.ActionSwitchWAL).
	ActionSwitchWAL = keyspace.ActionSwitchWAL
)

// Request is an on-demand request of the control plane: the JSON value of
// backup/requests/{id} (docs/keyspace.md), declared in proto/keyspace.
type Request = keyspace.BackupRequest

// Requests is where on-demand requests come from (the agent's etcd client).
type Requests interface {
	// Pending returns the requests, id → JSON value.
	Pending(ctx context.Context) (map[string]string, error)
	// ClaimKey is the claim key of request id.
	ClaimKey(id string) string
	// Done removes answered request id.
	Done(ctx context.Context, id string) error
}

// Occurrence returns the latest occurrence of job at or before now whose
// window is still open (now < occurrence + window); ok false if none.
func Occurrence(job Job, now time.Time) (time.Time, bool, error) {
	sched, err := cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor).Parse(job.Schedule)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("job %s: schedule %q: %w", job.Name, job.Schedule, err)
	}
	loc, err := time.LoadLocation(job.TimeZone)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("job %s: time zone %q: %w", job.Name, job.TimeZone, err)
	}
	var last time.Time
	t := now.Add(-job.Window).In(loc)
	for i := 0; i < 100000; i++ {
		next := sched.Next(t)
		if next.IsZero() || next.After(now) {
			break
		}
		last, t = next, next
	}
	if last.IsZero() {
		return time.Time{}, false, nil
	}
	return last, true, nil
}

// NextOccurrence returns job's first scheduled occurrence after now; ok
// false for a job without a schedule or one whose schedule never fires.
// Errors: a schedule or time zone that does not parse, naming the job.
func NextOccurrence(job Job, now time.Time) (next time.Time, ok bool, err error) {
	if job.Schedule == "" {
		return time.Time{}, false, nil
	}
	sched, err := cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor).Parse(job.Schedule)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("job %s: schedule %q: %w", job.Name, job.Schedule, err)
	}
	loc, err := time.LoadLocation(job.TimeZone)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("job %s: time zone %q: %w", job.Name, job.TimeZone, err)
	}
	next = sched.Next(now.In(loc))
	return next, !next.IsZero(), nil
}

// Run polls the store's jobs every Tick until ctx ends. One run at a time.
func (s *Scheduler) Run(ctx context.Context) {
	if s.Tick == 0 {
		s.Tick = time.Second
	}
	s.notBefore = map[string]time.Time{}
	s.firstSeen = map[string]time.Time{}
	t := time.NewTicker(s.Tick)
	defer t.Stop()
	for {
		s.once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// eligible says whether this node may claim an occurrence it has seen due
// since dueSince (the grace of prefer-replica counts from there, so a missed
// occurrence caught up at start-up still goes to a replica first).
func (s *Scheduler) eligible(dueSince, now time.Time) bool {
	role, healthy := s.Role()
	if !healthy {
		return false
	}
	switch s.RunOn {
	case "any":
		return role == RolePrimary || role == RoleReplica
	case "primary":
		return role == RolePrimary
	case "replica":
		return role == RoleReplica
	default: // prefer-replica
		return role == RoleReplica || (role == RolePrimary && now.Sub(dueSince) >= s.Grace)
	}
}

func (s *Scheduler) once(ctx context.Context) {
	if s.EnsureRole != nil && !s.roleEnsured {
		if role, healthy := s.Role(); role == RolePrimary && healthy {
			if err := s.EnsureRole(ctx); err != nil {
				s.Log.Warn("cannot create the backup role yet", zap.Error(err))
			} else {
				s.roleEnsured = true
			}
		}
	}
	jobs, err := s.Svc.Store.Jobs(ctx)
	if err != nil {
		s.Log.Error("scheduler: cannot read jobs", zap.Error(err))
		return
	}
	now := time.Now()
	for _, job := range jobs {
		if ctx.Err() != nil {
			return
		}
		occ, ok, err := Occurrence(job, now)
		if err != nil {
			s.Log.Error("scheduler: bad job", zap.Error(err))
			continue
		}
		if !ok {
			continue
		}
		key := s.Claims.ClaimKey(job.Name, occ.Unix())
		if _, seen := s.firstSeen[key]; !seen {
			s.firstSeen[key] = now
		}
		if !s.eligible(s.firstSeen[key], now) {
			continue
		}
		if now.Before(s.notBefore[key]) {
			continue
		}
		if done, err := s.Svc.Store.HasOccurrence(ctx, job.Name, occ); err != nil || done {
			continue
		}
		claimed, err := s.Claims.Claim(ctx, key, s.Svc.Node)
		if err != nil || !claimed {
			// Another agent runs it (or etcd is unreachable): look again
			// later; if that agent dies its claim expires with its lease.
			s.notBefore[key] = now.Add(5 * time.Second)
			continue
		}
		s.runClaimed(ctx, job, occ, key)
	}
	if s.Requests != nil {
		s.requests(ctx, jobs, now)
	}
	for k, t := range s.notBefore {
		if now.Sub(t) > 24*time.Hour {
			delete(s.notBefore, k)
		}
	}
	for k, t := range s.firstSeen {
		if now.Sub(t) > 7*24*time.Hour {
			delete(s.firstSeen, k)
		}
	}
}

func (s *Scheduler) runClaimed(ctx context.Context, job Job, occ time.Time, key string) {
	log := s.Log.With(zap.String("job", job.Name), zap.Time("occurrence", occ))
	log.Info("scheduled occurrence claimed; running")
	var r Run
	var err error
	if job.Method == MethodVerify {
		r, err = s.Svc.Verify(ctx, s.PGConfig, job, occ)
	} else {
		r, err = s.Svc.RunBackup(ctx, job, occ)
	}
	if errors.Is(err, ErrOccurrenceTaken) {
		return
	}
	status := r.Status
	if ctx.Err() != nil {
		return // shutting down: the claim goes with our lease
	}
	ttl := max(job.Window, time.Hour) + time.Hour
	if cerr := s.Claims.CompleteClaim(ctx, key, s.Svc.Node+" "+status, ttl); cerr != nil {
		log.Warn("cannot record the occurrence as done in etcd", zap.Error(cerr))
	}
}

// requests answers the pending on-demand requests this node may take: a
// backup under the run_on rules (like an occurrence due since the request
// was first seen), a WAL switch on the primary. Each is claimed first, so
// exactly one agent answers it; the claim is completed with "node status"
// and the request removed.
func (s *Scheduler) requests(ctx context.Context, jobs []Job, now time.Time) {
	pending, err := s.Requests.Pending(ctx)
	if err != nil {
		s.Log.Debug("scheduler: cannot read backup requests", zap.Error(err))
		return
	}
	for id, raw := range pending {
		if ctx.Err() != nil {
			return
		}
		var req Request
		if err := json.Unmarshal([]byte(raw), &req); err != nil {
			s.Log.Warn("scheduler: malformed backup request ignored", zap.String("request", id), zap.Error(err))
			continue
		}
		if req.ExpiresMS > 0 && now.UnixMilli() > req.ExpiresMS {
			continue
		}
		key := s.Requests.ClaimKey(id)
		if _, seen := s.firstSeen[key]; !seen {
			s.firstSeen[key] = now
		}
		if now.Before(s.notBefore[key]) {
			continue
		}
		var run func() (string, error)
		switch req.Action {
		case ActionSwitchWAL:
			if role, healthy := s.Role(); role != RolePrimary || !healthy || s.SwitchWAL == nil {
				continue
			}
			run = func() (string, error) {
				if err := s.SwitchWAL(ctx); err != nil {
					return StatusFailed, err
				}
				return StatusSucceeded, nil
			}
		case ActionBackup, "":
			if !s.eligible(s.firstSeen[key], now) {
				continue
			}
			job, ok := requestedJob(jobs, req.Job)
			if !ok {
				s.Log.Warn("scheduler: backup request names no configured job", zap.String("request", id), zap.String("job", req.Job))
				continue
			}
			run = func() (string, error) {
				r, err := s.Svc.RunBackupRequest(ctx, job, id)
				return r.Status, err
			}
		default:
			s.Log.Warn("scheduler: unknown request action", zap.String("request", id), zap.String("action", req.Action))
			continue
		}
		claimed, err := s.Claims.Claim(ctx, key, s.Svc.Node)
		if err != nil || !claimed {
			s.notBefore[key] = now.Add(5 * time.Second)
			continue
		}
		log := s.Log.With(zap.String("request", id), zap.String("action", req.Action))
		log.Info("on-demand request claimed; running")
		status, err := run()
		if ctx.Err() != nil {
			return // shutting down: the claim goes with our lease
		}
		if err != nil {
			log.Warn("on-demand request failed", zap.Error(err))
		}
		if cerr := s.Claims.CompleteClaim(ctx, key, s.Svc.Node+" "+status, time.Hour); cerr != nil {
			log.Warn("cannot record the request as done in etcd", zap.Error(cerr))
		}
		if derr := s.Requests.Done(ctx, id); derr != nil {
			log.Warn("cannot remove the answered request", zap.Error(derr))
		}
	}
}

// requestedJob returns job name, or the first physical job when name is "".
func requestedJob(jobs []Job, name string) (Job, bool) {
	for _, j := range jobs {
		if (name == "" && j.Method == MethodPhysical) || (name != "" && j.Name == name) {
			return j, true
		}
	}
	return Job{}, false
}

// Sender delivers one event and reports whether the receiver accepted it
// (the agent's report.Reporter.Deliver).
type Sender func(ctx context.Context, e proto.Envelope) error

// IsPermanent reports whether a delivery error is a refusal that retrying
// cannot fix.
type IsPermanent func(error) bool

// DrainOutbox delivers the store's outbox in order until ctx ends: each
// event is sent with the id it was recorded with (so the receiver drops
// duplicates), marked delivered once accepted, and retried with
// exponential backoff (up to maxBackoff) otherwise; nothing is lost while
// the receiver is down, across agent restarts too. An event refused
// permanently is logged and skipped. source is the CloudEvents source.
func (s *Service) DrainOutbox(ctx context.Context, send Sender, permanent IsPermanent, source string, poll, maxBackoff time.Duration) {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(maxBackoff), backoff.WithMaxElapsedTime(0))
	wait := poll
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = poll
		events, err := s.Store.PendingEvents(ctx, 100)
		if err != nil {
			s.Log.Error("outbox: read failed", zap.Error(err))
			continue
		}
		for _, ev := range events {
			env, err := envelopeOf(ev, source)
			if err != nil {
				// Retrying cannot fix an event that does not encode: skip it.
				s.Log.Error("outbox: invalid event skipped", zap.String("id", ev.ID), zap.String("type", ev.Type), zap.Error(err))
				_ = s.Store.MarkDelivered(context.WithoutCancel(ctx), ev.ID)
				continue
			}
			err = send(ctx, env)
			if err != nil && ctx.Err() != nil {
				return
			}
			if err != nil && (permanent == nil || !permanent(err)) {
				_ = s.Store.MarkAttempt(context.WithoutCancel(ctx), ev.ID, err)
				wait = b.NextBackOff()
				if ev.Attempts%10 == 0 {
					s.Log.Warn("outbox: delivery failed; retrying", zap.String("id", ev.ID), zap.String("type", ev.Type), zap.Int("attempts", ev.Attempts+1), zap.Duration("retry_in", wait), zap.Error(err))
				}
				break
			}
			if err != nil {
				s.Log.Error("outbox: event refused by the receiver; skipped", zap.String("id", ev.ID), zap.String("type", ev.Type), zap.Error(err))
			}
			b.Reset()
			if err := s.Store.MarkDelivered(context.WithoutCancel(ctx), ev.ID); err != nil {
				s.Log.Error("outbox: cannot mark delivered", zap.Error(err))
			}
		}
	}
}

func envelopeOf(ev OutboxEvent, source string) (proto.Envelope, error) {
	switch ev.Type {
	case proto.TypeBackupStarted:
		return decodeEvent(ev, source, func(p *proto.BackupStarted) proto.Header { return p.Header })
	case proto.TypeBackupCompleted:
		return decodeEvent(ev, source, func(p *proto.BackupCompleted) proto.Header { return p.Header })
	case proto.TypeBackupFailed:
		return decodeEvent(ev, source, func(p *proto.BackupFailed) proto.Header { return p.Header })
	case proto.TypeBackupVerified:
		return decodeEvent(ev, source, func(p *proto.BackupVerified) proto.Header { return p.Header })
	}
	return proto.Envelope{}, fmt.Errorf("outbox event %s: unknown type %q", ev.ID, ev.Type)
}

func decodeEvent[T any](ev OutboxEvent, source string, head func(*T) proto.Header) (proto.Envelope, error) {
	p := new(T)
	if err := json.Unmarshal(ev.Payload, p); err != nil {
		return proto.Envelope{}, fmt.Errorf("outbox event %s: %w", ev.ID, err)
	}
	return proto.NewEnvelopeWithID(ev.ID, ev.Type, source, head(p), p)
}
