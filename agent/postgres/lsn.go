package postgres

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a PostgreSQL write-ahead log position (type pg_lsn): a byte offset
// into the WAL stream. The zero value is PostgreSQL's invalid LSN "0/0".
// See https://www.postgresql.org/docs/15/datatype-pg-lsn.html.
type LSN uint64

// ParseLSN parses the textual form PostgreSQL uses for pg_lsn: two
// hexadecimal numbers of up to 8 digits each separated by a slash, the high
// and low 32 bits ("16/B374D848"). It returns an error for anything else.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || !isHex8(hi) || !isHex8(lo) {
		return 0, fmt.Errorf("parse LSN %q: want two hex numbers of 1-8 digits separated by '/'", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

func isHex8(s string) bool {
	if len(s) == 0 || len(s) > 8 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// String formats the LSN like PostgreSQL does: upper-case hex high and low
// 32 bits without leading zeros, e.g. "0/3000060".
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l))
}

// MarshalText implements encoding.TextMarshaler using [LSN.String].
func (l LSN) MarshalText() ([]byte, error) {
	return []byte(l.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using [ParseLSN].
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
