package proto

import (
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"node1", true}, {"a", true}, {"0", true}, {"c-0123456789abcdef", true}, {strings.Repeat("a", 40), true}, {"a-b-c", true},
		{"", false}, {".", false}, {"..", false}, {"../x", false}, {"/etc", false}, {"/", false}, {"a/b", false}, {`a\b`, false},
		{"%2e%2e", false}, {"..%2f", false}, {"-a", false}, {"a-", false}, {"A", false}, {"a_b", false}, {"a.b", false},
		{"a b", false}, {"a\n", false}, {"a\x00", false}, {"é", false}, {strings.Repeat("a", 41), false},
	} {
		if got := ValidName(tc.name); got != tc.ok {
			t.Errorf("ValidName(%q) = %t, want %t", tc.name, got, tc.ok)
		}
		if err := CheckName("node", tc.name); (err == nil) != tc.ok || (err != nil && !strings.HasPrefix(err.Error(), "node: ")) {
			t.Errorf("CheckName(%q) = %v", tc.name, err)
		}
	}
}

func TestQuoteTruncateHasControl(t *testing.T) {
	if got := Quote("a\x1b[2J\n", 0); got != `"a\x1b[2J\n"` {
		t.Errorf("Quote escapes: %s", got)
	}
	if got := Quote(strings.Repeat("x", 100), 10); got != `"xxxxxxxxxx"…` {
		t.Errorf("Quote cuts: %s", got)
	}
	if got := Quote("ééééé", 3); got != `"é"…` {
		t.Errorf("Quote cuts on a rune boundary: %s", got)
	}
	if got := Truncate(make([]byte, 900*1024), 512); len(got) > 512+30 || !strings.HasSuffix(got, "(921600 bytes)") {
		t.Errorf("Truncate: %d bytes, suffix %q", len(got), got[len(got)-20:])
	}
	for s, want := range map[string]bool{"plain name": false, "é ü": false, "a\x1b": true, "a\n": true, "a\t": true, "a\x7f": true, "a\u009b": true, "\xff": true} {
		if HasControl(s) != want {
			t.Errorf("HasControl(%q) = %t, want %t", s, !want, want)
		}
	}
}
