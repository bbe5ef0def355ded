package proto

import (
	"fmt"
	"regexp"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// NamePattern is the one rule for namespace, project, cluster and node
// names, everywhere they enter the system (API requests and paths, agent
// events, etcd keys, host runner assignments): 1 to 40 lowercase letters,
// digits or '-', starting and ending with a letter or digit. Such a name is
// a single, local path element (never "", ".", "..", absolute, or holding
// "/", "\" or "%"), safe in an etcd key, a URL path and a log line.
const NamePattern = `^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`

var nameRE = regexp.MustCompile(NamePattern)

// ValidName reports whether s follows [NamePattern].
func ValidName(s string) bool { return nameRE.MatchString(s) }

// CheckName returns nil when s follows [NamePattern], else an error naming
// what (e.g. "data.node") and showing s quoted and truncated.
func CheckName(what, s string) error {
	if ValidName(s) {
		return nil
	}
	return fmt.Errorf("%s: must be 1-40 lowercase letters, digits or '-', starting and ending with a letter or digit (got %s)", what, Quote(s, 64))
}

// Quote returns s as a Go-quoted string (control characters and invalid
// UTF-8 escaped), cut to at most max bytes of s first ("…" marks a cut):
// the form in which untrusted input goes into errors and logs.
func Quote(s string, max int) string {
	if max > 0 && len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// Truncate returns at most max bytes of b as a string for a log field,
// with " …(N bytes)" appended when it was cut.
func Truncate(b []byte, max int) string {
	if len(b) <= max {
		return string(b)
	}
	return string(b[:max]) + fmt.Sprintf(" …(%d bytes)", len(b))
}

// HasControl reports whether s holds a control character (C0, DEL, C1) or
// invalid UTF-8.
func HasControl(s string) bool {
	if !utf8.ValidString(s) {
		return true
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}
