package api

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestBounded: audit fields keep at most MaxAuditField bytes of valid
// UTF-8, cut on a character boundary, without control characters.
func TestBounded(t *testing.T) {
	for _, in := range []string{
		"short",
		strings.Repeat("a", 1<<20),
		strings.Repeat("é", MaxAuditField), // 2 bytes each: the cut falls inside one
		"line\nbreak\x1b[31m\x00" + strings.Repeat("€", 300),
		string([]byte{0xff, 0xfe, 'x'}),
	} {
		got := bounded(in)
		if len(got) > MaxAuditField || !utf8.ValidString(got) || strings.ContainsAny(got, "\n\x1b\x00") {
			t.Errorf("bounded(%.20q…) = %.40q… (%d bytes)", in, got, len(got))
		}
		if len(in) > MaxAuditField && !strings.HasSuffix(got, "...") {
			t.Errorf("bounded(%.20q…) does not end in ...", in)
		}
	}
	if got := bounded("short"); got != "short" {
		t.Errorf("bounded(short) = %q", got)
	}
}

// TestClientLimiter: failures are limited per address after the burst,
// with a wait, and one address's failures do not limit another.
func TestClientLimiter(t *testing.T) {
	l := newClientLimiter(1, 3)
	for i := range 3 {
		if ok, _ := l.fail("10.0.0.1"); !ok {
			t.Fatalf("failure %d refused within the burst", i)
		}
	}
	ok, wait := l.fail("10.0.0.1")
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("4th failure: ok=%v wait=%s, want refused with a wait in (0, 1s]", ok, wait)
	}
	if ok, _ := l.fail("10.0.0.2"); !ok {
		t.Fatal("another address limited")
	}
}
