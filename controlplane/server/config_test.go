package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dbpilot/dbpilot/controlplane/server"
)

// TestLoadConfigNamesTheField: a bad serve config is refused with the key
// and the fix; a good one loads.
func TestLoadConfigNamesTheField(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"ok", "data_dir: /tmp/x\nevent_retention: 240h\nstate_event_retention: -1s\n", ""},
		{"no data dir", "listen: 127.0.0.1:0\n", "data_dir: required"},
		{"typo", "data_dir: /tmp/x\nevent_retension: 1h\n", "event_retension"},
		{"bad bus", "data_dir: /tmp/x\nbus: {kind: kafka}\n", "bus.kind: must be embedded or dapr"},
		{"retention too short", "data_dir: /tmp/x\nstate_event_retention: 10m\n", "state_event_retention: must be at least 1h"},
		{"negative prune interval", "data_dir: /tmp/x\nprune_interval: -1m\n", "prune_interval: must be > 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "server.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := server.LoadConfig(p)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("LoadConfig: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("LoadConfig error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
