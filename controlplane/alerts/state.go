package alerts

import (
	"time"

	"github.com/dbpilot/dbpilot/proto"
)

// Tracked is one fingerprint's state machine.
type Tracked struct {
	// Condition is the last condition seen holding (its Summary is the
	// latest).
	Condition
	// ID is the fingerprint.
	ID string
	// State is "" (inactive: never fired, not pending), proto.AlertPending,
	// proto.AlertFiring or proto.AlertResolved.
	State string
	// FirstSeen is when the condition started holding (this episode);
	// LastSeen the last evaluation that saw it.
	FirstSeen, LastSeen time.Time
	// FiredAt and ResolvedAt are the last transitions.
	FiredAt, ResolvedAt time.Time
	// ClearSince is when a flapping, firing alert's condition stopped
	// holding (zero: holds).
	ClearSince time.Time
	// Fires are the recent fire times (within the flapping window).
	Fires []time.Time
	// Flapping is set when the alert fired more than FlapPolicy.MaxFires
	// times in the window: it then resolves only after HoldDown clear.
	Flapping bool
	// LastNotified is when the last firing or repeat notification was
	// queued for this episode (zero: none).
	LastNotified time.Time
}

// FlapPolicy is the flapping suppression: an alert that fired more than
// MaxFires times within Window stays firing until its condition has been
// clear for HoldDown.
type FlapPolicy struct {
	Window   time.Duration
	MaxFires int
	HoldDown time.Duration
}

// DefaultFlapPolicy: more than 3 fires in an hour is flapping; it then
// needs 15 minutes clear to resolve.
var DefaultFlapPolicy = FlapPolicy{Window: time.Hour, MaxFires: 3, HoldDown: 15 * time.Minute}

// Transition is what one Step did.
type Transition int

// Transitions returned by Step.
const (
	// None: nothing to record (LastSeen may have moved).
	None Transition = iota
	// Changed: the state changed without a notification (pending entered
	// or abandoned).
	Changed
	// Fired: pending → firing.
	Fired
	// Resolved: firing → resolved.
	Resolved
)

// Step advances t at now: holds says whether its condition holds, forDur
// how long it must hold before firing. It is pure (t is the only thing it
// changes).
func Step(t *Tracked, holds bool, forDur time.Duration, now time.Time, fp FlapPolicy) Transition {
	if holds {
		t.LastSeen = now
		t.ClearSince = time.Time{}
		switch t.State {
		case proto.AlertFiring:
			return None
		case proto.AlertPending:
		default: // inactive or resolved: a new episode
			t.State, t.FirstSeen = proto.AlertPending, now
			if forDur > 0 {
				return Changed
			}
		}
		if now.Sub(t.FirstSeen) < forDur {
			return None
		}
		t.State, t.FiredAt, t.LastNotified = proto.AlertFiring, now, time.Time{}
		keep := t.Fires[:0]
		for _, f := range t.Fires {
			if now.Sub(f) < fp.Window {
				keep = append(keep, f)
			}
		}
		t.Fires = append(keep, now)
		t.Flapping = fp.MaxFires > 0 && len(t.Fires) > fp.MaxFires
		return Fired
	}
	switch t.State {
	case proto.AlertPending:
		// Never fired this episode: back to where it was.
		t.State = ""
		if !t.FiredAt.IsZero() {
			t.State = proto.AlertResolved
		}
		return Changed
	case proto.AlertFiring:
		if t.Flapping {
			if t.ClearSince.IsZero() {
				t.ClearSince = now
			}
			if now.Sub(t.ClearSince) < fp.HoldDown {
				return None
			}
		}
		t.State, t.ResolvedAt, t.ClearSince, t.Flapping = proto.AlertResolved, now, time.Time{}, false
		return Resolved
	}
	return None
}

// NotifyInput is what NotifyDecision needs of an alert.
type NotifyInput struct {
	// Severity and State of the alert after the step.
	Severity, State string
	// Transition is the step's result.
	Transition Transition
	// Silenced: an active silence covers the alert. Acked: it is
	// acknowledged.
	Silenced, Acked bool
	// LastNotified is when the episode's last firing or repeat
	// notification was queued (zero: none).
	LastNotified time.Time
	// Repeat is the page repeat interval.
	Repeat time.Duration
}

// NotifyDecision returns the notification to send at now:
// proto.TransitionFiring, proto.TransitionResolved, proto.TransitionRepeat
// or "" (nothing). Silenced alerts send nothing; a firing alert never
// notified (it fired while silenced) is sent when the silence is gone; a
// resolution is sent only for an episode that was notified; a page is
// repeated every Repeat until acknowledged or resolved; tickets and info
// are sent once.
func NotifyDecision(in NotifyInput, now time.Time) string {
	if in.Silenced {
		return ""
	}
	switch {
	case in.Transition == Resolved:
		if in.LastNotified.IsZero() {
			return ""
		}
		return proto.TransitionResolved
	case in.State != proto.AlertFiring:
		return ""
	case in.Transition == Fired || in.LastNotified.IsZero():
		return proto.TransitionFiring
	case in.Severity == proto.SeverityPage && !in.Acked && in.Repeat > 0 && now.Sub(in.LastNotified) >= in.Repeat:
		return proto.TransitionRepeat
	}
	return ""
}
