package testutil

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeT records Fatalf instead of stopping the test.
type fakeT struct {
	failed bool
	msg    string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = fmt.Sprintf(format, args...)
}

func TestEventuallyBoolHolds(t *testing.T) {
	var ft fakeT
	n := 0
	Eventually(&ft, time.Second, time.Millisecond, "n reaches 3", func() bool {
		n++
		return n >= 3
	})
	if ft.failed || n != 3 {
		t.Fatalf("failed=%v (%s), calls=%d; want success after 3 calls", ft.failed, ft.msg, n)
	}
}

func TestEventuallyErrorHolds(t *testing.T) {
	var ft fakeT
	n := 0
	Eventually(&ft, time.Second, time.Millisecond, "no error", func() error {
		n++
		if n < 2 {
			return errors.New("boom")
		}
		return nil
	})
	if ft.failed || n != 2 {
		t.Fatalf("failed=%v (%s), calls=%d; want success after 2 calls", ft.failed, ft.msg, n)
	}
}

func TestEventuallyTimesOut(t *testing.T) {
	var ft fakeT
	start := time.Now()
	Eventually(&ft, 30*time.Millisecond, 5*time.Millisecond, "never", func() bool { return false })
	if !ft.failed || ft.msg != "timed out after 30ms waiting for never" {
		t.Fatalf("failed=%v msg=%q; want the timeout message", ft.failed, ft.msg)
	}
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Fatalf("gave up after %s, before the 30ms timeout", el)
	}

	ft = fakeT{}
	Eventually(&ft, 10*time.Millisecond, 0, "never nil", func() error { return errors.New("still down") })
	if !ft.failed || !strings.HasSuffix(ft.msg, "waiting for never nil: still down") {
		t.Fatalf("failed=%v msg=%q; want the last error in the message", ft.failed, ft.msg)
	}
}
