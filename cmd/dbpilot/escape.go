package main

import (
	"fmt"
	"io"
	"strings"
	"unicode"
)

// Server strings (names, messages, event data) are untrusted: a control
// character in one could move the cursor, rewrite the screen or forge
// output lines. Everything the CLI prints from the server goes through the
// functions below.

// escapeControl returns s with every control character (C0 including tab
// and newline, DEL, C1) written as a \u00XX escape, so it stays one inert
// line.
func escapeControl(s string) string {
	if !hasControlRune(s, false) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// escapeMessage is escapeControl keeping newlines (multi-line messages).
func escapeMessage(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = escapeControl(l)
	}
	return strings.Join(lines, "\n")
}

func hasControlRune(s string, keepNL bool) bool {
	for _, r := range s {
		if unicode.IsControl(r) && !(keepNL && r == '\n') {
			return true
		}
	}
	return false
}

// safeWriter passes output through with control characters other than
// newline and tab (C0, DEL, C1) escaped as \u00XX: in -o json output these
// only occur inside strings, where \u00XX is a valid JSON escape; in tables
// and go-template output they become visible and inert. It wraps stdout.
type safeWriter struct {
	w io.Writer
}

// Write implements io.Writer; it reports len(p) written on success.
func (s *safeWriter) Write(p []byte) (int, error) {
	out := make([]byte, 0, len(p)+8)
	// c2: the previous byte was 0xC2, the first byte of a C1 control's
	// UTF-8 encoding (U+0080–U+009F). The printers write whole strings,
	// so a C1 control is never split across two Writes.
	c2 := false
	for _, c := range p {
		if c2 {
			c2 = false
			if c >= 0x80 && c <= 0x9f {
				out = fmt.Appendf(out, `\u%04x`, c)
				continue
			}
			out = append(out, 0xc2)
		}
		switch {
		case c == 0xc2:
			c2 = true
		case c == '\n' || c == '\t':
			out = append(out, c)
		case c < 0x20 || c == 0x7f:
			out = fmt.Appendf(out, `\u%04x`, c)
		default:
			out = append(out, c)
		}
	}
	if c2 {
		out = append(out, 0xc2)
	}
	if _, err := s.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
