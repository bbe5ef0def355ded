package agent

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
)

// FailpointsDirEnv names the environment variable that enables failpoints:
// a directory in which the presence of a file named "<failpoint>.<node>"
// switches that failpoint on for that node. Unset (production): every check
// is a no-op. Used by the fault tests and `make chaos` to reproduce faults
// that cannot be caused from outside the process.
const FailpointsDirEnv = "DBPILOT_FAILPOINTS_DIR"

// FailpointStallLoop, while on, blocks the HA loop at the start of its
// next cycle, as a deadlock or a hung call would: nothing else stops.
const FailpointStallLoop = "stall-ha-loop"

// failpoint blocks while the named failpoint is on (polling every 100 ms),
// or returns at once when failpoints are disabled.
func (a *Agent) failpoint(ctx context.Context, name string) {
	dir := os.Getenv(FailpointsDirEnv)
	if dir == "" {
		return
	}
	path := filepath.Join(dir, name+"."+a.cfg.Node.Name)
	logged := false
	for ctx.Err() == nil {
		if _, err := os.Stat(path); err != nil {
			if logged {
				a.log.Warn("failpoint off", zap.String("failpoint", name))
			}
			return
		}
		if !logged {
			a.log.Warn("failpoint on: blocking", zap.String("failpoint", name))
			logged = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
