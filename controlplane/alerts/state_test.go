package alerts

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/proto"
)

// TestStep drives one fingerprint through a sequence of evaluations, one
// per second: "1" holds, "0" does not; want lists the transitions (N none,
// C changed, F fired, R resolved) and the final state.
func TestStep(t *testing.T) {
	fp := FlapPolicy{Window: time.Minute, MaxFires: 2, HoldDown: 5 * time.Second}
	cases := []struct {
		name  string
		for_  time.Duration
		seq   string
		want  string
		state string
	}{
		{"fires at once with for 0", 0, "1", "F", proto.AlertFiring},
		{"pending then fires after for", 3 * time.Second, "1111", "CNNF", proto.AlertFiring},
		{"pending abandoned: never fires", 3 * time.Second, "110", "CNC", ""},
		{"sub-second gap of a switchover never fires", 15 * time.Second, "1010101", "CCCCCCC", proto.AlertPending},
		{"fires and resolves", 0, "110", "FNR", proto.AlertResolved},
		{"resolved, pending again", 2 * time.Second, "11101", "CNFRC", proto.AlertPending},
		{"resolved, pending again, abandoned: back to resolved", 2 * time.Second, "111010", "CNFRCC", proto.AlertResolved},
		{"re-fire after resolve", 0, "101", "FRF", proto.AlertFiring},
		// Third fire within the window (MaxFires 2): flapping; the next
		// clear holds it firing until 5 s of quiet.
		{"flapping holds firing", 0, "10101" + "0000", "FRFRF" + "NNNN", proto.AlertFiring},
		{"flapping resolves after hold-down", 0, "10101" + "000000", "FRFRF" + "NNNNNR", proto.AlertResolved},
		{"flapping: a blip restarts the hold-down", 0, "10101" + "0001" + "000000", "FRFRF" + "NNNN" + "NNNNNR", proto.AlertResolved},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tr Tracked
			var got strings.Builder
			now := t0
			for _, ch := range c.seq {
				got.WriteString(map[Transition]string{None: "N", Changed: "C", Fired: "F", Resolved: "R"}[Step(&tr, ch == '1', c.for_, now, fp)])
				now = now.Add(time.Second)
			}
			if got.String() != c.want || tr.State != c.state {
				t.Fatalf("transitions %s state %q, want %s %q", got.String(), tr.State, c.want, c.state)
			}
		})
	}
}

func TestStepTimes(t *testing.T) {
	var tr Tracked
	Step(&tr, true, 2*time.Second, t0, DefaultFlapPolicy)
	Step(&tr, true, 2*time.Second, t0.Add(2*time.Second), DefaultFlapPolicy)
	if tr.State != proto.AlertFiring || !tr.FirstSeen.Equal(t0) || !tr.FiredAt.Equal(t0.Add(2*time.Second)) || !tr.LastSeen.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("%+v", tr)
	}
	Step(&tr, false, 2*time.Second, t0.Add(3*time.Second), DefaultFlapPolicy)
	if tr.State != proto.AlertResolved || !tr.ResolvedAt.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("%+v", tr)
	}
}

func TestNotifyDecision(t *testing.T) {
	h := 4 * time.Hour
	cases := []struct {
		in   NotifyInput
		want string
	}{
		{NotifyInput{Severity: proto.SeverityPage, State: proto.AlertFiring, Transition: Fired, Repeat: h}, proto.TransitionFiring},
		{NotifyInput{Severity: proto.SeverityTicket, State: proto.AlertFiring, Transition: Fired, Repeat: h}, proto.TransitionFiring},
		{NotifyInput{Severity: proto.SeverityPage, State: proto.AlertFiring, Transition: Fired, Silenced: true, Repeat: h}, ""},
		// Repeats: pages only, every Repeat, until acked.
		{NotifyInput{Severity: proto.SeverityPage, State: proto.AlertFiring, LastNotified: t0.Add(-h + time.Second), Repeat: h}, ""},
		{NotifyInput{Severity: proto.SeverityPage, State: proto.AlertFiring, LastNotified: t0.Add(-h), Repeat: h}, proto.TransitionRepeat},
		{NotifyInput{Severity: proto.SeverityPage, State: proto.AlertFiring, LastNotified: t0.Add(-h), Repeat: h, Acked: true}, ""},
		{NotifyInput{Severity: proto.SeverityPage, State: proto.AlertFiring, LastNotified: t0.Add(-h), Repeat: h, Silenced: true}, ""},
		{NotifyInput{Severity: proto.SeverityTicket, State: proto.AlertFiring, LastNotified: t0.Add(-10 * h), Repeat: h}, ""},
		{NotifyInput{Severity: proto.SeverityInfo, State: proto.AlertFiring, LastNotified: t0.Add(-10 * h), Repeat: h}, ""},
		// Fired while silenced, silence over: sent now.
		{NotifyInput{Severity: proto.SeverityTicket, State: proto.AlertFiring, Repeat: h}, proto.TransitionFiring},
		// Resolutions: sent when the firing was.
		{NotifyInput{Severity: proto.SeverityPage, State: proto.AlertResolved, Transition: Resolved, LastNotified: t0.Add(-time.Minute), Repeat: h}, proto.TransitionResolved},
		{NotifyInput{Severity: proto.SeverityPage, State: proto.AlertResolved, Transition: Resolved, Repeat: h}, ""},
		{NotifyInput{Severity: proto.SeverityPage, State: proto.AlertResolved, Transition: Resolved, LastNotified: t0, Silenced: true, Repeat: h}, ""},
		{NotifyInput{Severity: proto.SeverityPage, State: proto.AlertPending, Transition: Changed, Repeat: h}, ""},
		{NotifyInput{Severity: proto.SeverityPage, State: proto.AlertResolved, LastNotified: t0.Add(-10 * h), Repeat: h}, ""},
	}
	for i, c := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if got := NotifyDecision(c.in, t0); got != c.want {
				t.Fatalf("%+v: got %q, want %q", c.in, got, c.want)
			}
		})
	}
}

func TestCheckAddress(t *testing.T) {
	for _, c := range []struct {
		addr         string
		allowPrivate bool
		ok           bool
	}{
		{"93.184.216.34:443", false, true},
		{"[2606:2800:220:1::1]:443", false, true},
		{"169.254.169.254:80", true, false}, // cloud metadata: never
		{"[fe80::1]:80", true, false},
		{"0.0.0.0:80", true, false},
		{"224.0.0.1:80", true, false},
		{"127.0.0.1:8080", false, false},
		{"127.0.0.1:8080", true, true},
		{"10.1.2.3:443", false, false},
		{"10.1.2.3:443", true, true},
		{"[::ffff:127.0.0.1]:80", false, false},
		{"[fd00::1]:443", false, false},
	} {
		err := checkAddress(c.allowPrivate)("tcp", c.addr, nil)
		if (err == nil) != c.ok {
			t.Errorf("%s (allow private %v): %v, want ok=%v", c.addr, c.allowPrivate, err, c.ok)
		}
	}
}
