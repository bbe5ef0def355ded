// Package testutil holds helpers shared by the tests of several packages.
// It imports only the standard library, so any test may use it.
package testutil

import (
	"errors"
	"time"
)

// Condition is what Eventually polls: a func() bool that reports whether
// the awaited state holds, or a func() error that returns nil once it
// holds (its last error goes into the failure message).
type Condition interface {
	func() bool | func() error
}

// T is the part of testing.TB that Eventually uses (a *testing.T, *B or
// *F, or a fake in Eventually's own tests).
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// errNotYet stands for a func() bool condition that does not hold yet.
var errNotYet = errors.New("not yet")

// Eventually calls cond at once and then every `every` until it holds, for
// at most timeout (every <= 0 means 10 ms). When the timeout passes first
// it fails t with Fatalf("timed out after {timeout} waiting for {what}"),
// followed by ": {err}" with the last error of a func() error condition.
// The condition is checked once more after the deadline has passed, so a
// slow condition that became true meanwhile does not fail the test.
// Eventually returns only once cond held (or t.Fatalf returned, for a
// fake T).
func Eventually[C Condition](t T, timeout, every time.Duration, what string, cond C) {
	t.Helper()
	if every <= 0 {
		every = 10 * time.Millisecond
	}
	check := func() error {
		switch c := any(cond).(type) {
		case func() bool:
			if c() {
				return nil
			}
			return errNotYet
		case func() error:
			return c()
		}
		panic("unreachable: Condition is func() bool or func() error")
	}
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			if errors.Is(err, errNotYet) {
				t.Fatalf("timed out after %s waiting for %s", timeout, what)
			} else {
				t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
			}
			return
		}
		time.Sleep(every)
	}
}
