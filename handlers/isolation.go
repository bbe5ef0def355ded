package handlers

import "sync"

// Isolation names how the Runner contains a handler run so that everything
// the run started can be killed when it ends. Every mode also puts the run in
// its own process group and kills that group; the cgroup modes additionally
// catch processes that left the group (setsid, setpgid, daemonising).
type Isolation string

// The isolation modes, best first. The Runner detects once per process which
// one the host offers (see [DetectIsolation]).
const (
	// IsolationSystemdScope runs each handler in a transient systemd scope
	// (systemd-run --scope --collect) and kills the scope's processes with
	// systemctl kill when the run ends. Used when systemd is the init
	// system and systemd-run works for the agent's user.
	IsolationSystemdScope Isolation = "systemd-scope"
	// IsolationCgroup runs each handler in its own cgroup v2 directory
	// created under the agent's cgroup, and kills it (cgroup.kill) when the
	// run ends. Used when cgroup v2 is mounted and that directory is
	// writable (the agent runs as root or has a delegated cgroup).
	IsolationCgroup Isolation = "cgroup-v2"
	// IsolationProcessGroup only kills the run's process group. A process
	// that calls setsid or setpgid escapes it.
	IsolationProcessGroup Isolation = "process-group"
)

// host is the isolation this host offers, detected on first use.
var host = sync.OnceValue(detectHost)

// DetectIsolation reports how handler runs are contained on this host, and
// why a better mode is not used (empty for IsolationSystemdScope). The
// detection runs once per process (it starts a probe process); later calls
// return the same answer.
func DetectIsolation() (mode Isolation, reason string) {
	h := host()
	return h.mode(), h.why()
}
