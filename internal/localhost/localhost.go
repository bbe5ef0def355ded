// Package localhost holds the small helpers every single-machine setup of
// dbpilot needs (the local cluster test bed, the process provider, the fleet
// host runner, backup restore drills): free TCP ports and directories that
// PostgreSQL, running as its own OS user, can reach.
package localhost

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// FreePort returns a TCP port free on host ("" = 127.0.0.1) right now. The
// port is not reserved: another process may take it before the caller binds.
func FreePort(host string) (int, error) {
	if host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("free port on %s: %w", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// MkdirTraversable creates dir (0755) and makes it and every parent
// searchable by other users (o+x), so PostgreSQL running as its own OS user
// reaches a data directory below it.
func MkdirTraversable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("make %s traversable: %w", d, err)
			}
		}
	}
	return nil
}
