// Package buildinfo holds the version stamped into the binaries at link time
// (-ldflags "-X github.com/dbpilot/dbpilot/internal/buildinfo.Version=…").
package buildinfo

import "runtime/debug"

// Version is the release version; "dev" for untagged builds.
var Version = "dev"

// String returns "version (vcs revision)" when the build carries VCS data.
func String() string {
	rev := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = s.Value[:12]
			}
		}
	}
	if rev == "" {
		return Version
	}
	return Version + " (" + rev + ")"
}
