package httpapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeSource returns whatever state the test set.
type fakeSource struct {
	mu sync.Mutex
	s  NodeState
}

func (f *fakeSource) Snapshot() NodeState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.s
}

func (f *fakeSource) set(s NodeState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s = s
}

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func primary() NodeState {
	return NodeState{
		Node: "db-node-1", Cluster: "c1", Role: RolePrimary, Healthy: true, Writable: true, HoldsLease: true,
		LagBytes: 0, LSN: "0/3000148", Timeline: 2, Term: 4, Leader: "db-node-1", State: "running",
		UpdatedAt: testNow.Add(-time.Second),
	}
}

func replica(lag int64) NodeState {
	return NodeState{
		Node: "db-node-2", Cluster: "c1", Role: RoleReplica, Healthy: true, Streaming: true,
		LagBytes: lag, LSN: "0/3000000", Timeline: 2, Term: 4, Leader: "db-node-1", State: "running",
		UpdatedAt: testNow.Add(-time.Second),
	}
}

func with(s NodeState, edit func(*NodeState)) NodeState {
	edit(&s)
	return s
}

func TestEndpoints(t *testing.T) {
	src := &fakeSource{}
	srv := httptest.NewServer(NewHandler(src, prometheus.NewRegistry(),
		WithMaxAge(10*time.Second), WithClock(func() time.Time { return testNow })))
	t.Cleanup(srv.Close)

	tests := []struct {
		name     string
		state    NodeState
		method   string // GET when empty
		target   string
		want     int
		wantBody string // substring of the body; GET only
	}{
		{name: "health: healthy primary", state: primary(), target: "/health", want: 200, wantBody: `"role":"primary"`},
		{name: "health: healthy replica", state: replica(0), target: "/health", want: 200},
		{name: "health: unhealthy", state: with(primary(), func(s *NodeState) { s.Healthy = false }), target: "/health", want: 503, wantBody: `"healthy":false`},
		{name: "health: HEAD", state: primary(), method: http.MethodHead, target: "/health", want: 200},
		{name: "health: HEAD unhealthy", state: with(primary(), func(s *NodeState) { s.Healthy = false }), method: http.MethodHead, target: "/health", want: 503},
		{name: "health: POST not allowed", state: primary(), method: http.MethodPost, target: "/health", want: 405},

		{name: "primary: writable lease holder", state: primary(), target: "/primary", want: 200, wantBody: `"holds_lease":true`},
		{name: "primary: HEAD", state: primary(), method: http.MethodHead, target: "/primary", want: 200},
		{name: "primary: OPTIONS (HAProxy httpchk default)", state: primary(), method: http.MethodOptions, target: "/primary", want: 200},
		{name: "primary: lease not provable", state: with(primary(), func(s *NodeState) { s.HoldsLease = false }), target: "/primary", want: 503},
		{name: "primary: read-only (still in recovery)", state: with(primary(), func(s *NodeState) { s.Writable = false }), target: "/primary", want: 503},
		{name: "primary: on a replica", state: replica(0), target: "/primary", want: 503, wantBody: `"role":"replica"`},
		{name: "primary: role unknown", state: with(primary(), func(s *NodeState) { s.Role = RoleUnknown }), target: "/primary", want: 503},
		{name: "primary: stale snapshot", state: with(primary(), func(s *NodeState) { s.UpdatedAt = testNow.Add(-11 * time.Second) }), target: "/primary", want: 503},
		{name: "primary: never updated", state: with(primary(), func(s *NodeState) { s.UpdatedAt = time.Time{} }), target: "/primary", want: 503},
		{name: "health: stale snapshot", state: with(primary(), func(s *NodeState) { s.UpdatedAt = testNow.Add(-time.Minute) }), target: "/health", want: 503},

		{name: "replica: streaming", state: replica(100), target: "/replica", want: 200},
		{name: "replica: HEAD", state: replica(100), method: http.MethodHead, target: "/replica", want: 200},
		{name: "replica: lag unknown, no limit", state: replica(-1), target: "/replica", want: 200},
		{name: "replica: not streaming", state: with(replica(0), func(s *NodeState) { s.Streaming = false }), target: "/replica", want: 503},
		{name: "replica: unhealthy", state: with(replica(0), func(s *NodeState) { s.Healthy = false }), target: "/replica", want: 503},
		{name: "replica: on the primary", state: primary(), target: "/replica", want: 503},
		{name: "replica: lag under limit", state: replica(1000), target: "/replica?lag=1024", want: 200},
		{name: "replica: lag at limit", state: replica(1024), target: "/replica?lag=1024", want: 200},
		{name: "replica: lag over limit", state: replica(1025), target: "/replica?lag=1024", want: 503},
		{name: "replica: lag unknown with limit", state: replica(-1), target: "/replica?lag=1024", want: 503},
		{name: "replica: lag=0 and caught up", state: replica(0), target: "/replica?lag=0", want: 200},
		{name: "replica: lag with units", state: replica(0), target: "/replica?lag=16MB", want: 400, wantBody: `lag: must be`},
		{name: "replica: negative lag", state: replica(0), target: "/replica?lag=-1", want: 400, wantBody: `lag: must be`},
		{name: "replica: empty lag", state: replica(0), target: "/replica?lag=", want: 400, wantBody: `lag: must be`},
		{name: "replica: lag twice", state: replica(0), target: "/replica?lag=1&lag=2", want: 400, wantBody: `lag: give it once`},
		{name: "replica: HEAD bad lag", state: replica(0), method: http.MethodHead, target: "/replica?lag=x", want: 400},

		{name: "unknown path", state: primary(), target: "/leader", want: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src.set(tc.state)
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req, err := http.NewRequest(method, srv.URL+tc.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%s %s = %d, want %d; body %s", method, tc.target, resp.StatusCode, tc.want, body)
			}
			if method == http.MethodHead && len(body) != 0 {
				t.Errorf("HEAD returned a body: %s", body)
			}
			if tc.wantBody != "" && !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("body %s does not contain %s", body, tc.wantBody)
			}
			if method == http.MethodGet && tc.want != 404 && tc.want != 405 {
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
			}
			if method == http.MethodGet && (tc.want == 200 || tc.want == 503) {
				var got NodeState
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatalf("body is not a NodeState: %v\n%s", err, body)
				}
				if !got.UpdatedAt.Equal(tc.state.UpdatedAt) || got.Node != tc.state.Node || got.LagBytes != tc.state.LagBytes {
					t.Errorf("body %+v, want the snapshot %+v", got, tc.state)
				}
			}
		})
	}
}

func TestNoMaxAgeByDefault(t *testing.T) {
	src := &fakeSource{}
	src.set(with(primary(), func(s *NodeState) { s.UpdatedAt = time.Time{} }))
	srv := httptest.NewServer(NewHandler(src, nil))
	t.Cleanup(srv.Close)
	for path, want := range map[string]int{"/primary": 200, "/metrics": 404} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatalf("NewMetrics: %v", err)
	}
	m.Observe(replica(4096))
	m.LeaseLeft.Set(7.5)
	m.HAActions.WithLabelValues("promote").Inc()
	m.HandlerRuns.WithLabelValues("health", "timeout").Inc()
	m.EventsDropped.Inc()
	m.SetSynchronous(true, 2)

	srv := httptest.NewServer(NewHandler(&fakeSource{}, reg))
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics = %d", resp.StatusCode)
	}
	for _, want := range []string{
		`dbpilot_role{role="primary"} 0`,
		`dbpilot_role{role="replica"} 1`,
		`dbpilot_role{role="unknown"} 0`,
		`dbpilot_term 4`,
		`dbpilot_lag_bytes 4096`,
		`dbpilot_healthy 1`,
		`dbpilot_lease_left_seconds 7.5`,
		`dbpilot_ha_actions_total{action="promote"} 1`,
		`dbpilot_handler_runs_total{handler="health",status="timeout"} 1`,
		`dbpilot_events_dropped_total 1`,
		`dbpilot_synchronous_mode 1`,
		`dbpilot_synchronous_standbys 2`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("second NewMetrics on the same registry succeeded")
	}
	// The failed registration left the first set intact.
	if n, err := reg.Gather(); err != nil || len(n) != 10 {
		t.Fatalf("after the failed NewMetrics: %d families, %v; want the 10 of the first", len(n), err)
	}
}

func TestStatementsLimit(t *testing.T) {
	for _, tc := range []struct {
		q    map[string][]string
		want int
		err  string
	}{
		{nil, 20, ""},
		{map[string][]string{"limit": {"1"}}, 1, ""},
		{map[string][]string{"limit": {"100"}}, 100, ""},
		{map[string][]string{"limit": {"0"}}, 0, `limit: must be a whole number from 1 to 100 (got "0")`},
		{map[string][]string{"limit": {"101"}}, 0, `limit: must be a whole number from 1 to 100 (got "101")`},
		{map[string][]string{"limit": {"x"}}, 0, `limit: must be a whole number from 1 to 100 (got "x")`},
		{map[string][]string{"limit": {"1", "2"}}, 0, "limit: give it once (got 2 values)"},
	} {
		got, err := StatementsLimit(tc.q)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
			t.Errorf("StatementsLimit(%v) = %d, %v; want %d, %q", tc.q, got, err, tc.want, tc.err)
		}
	}
}
