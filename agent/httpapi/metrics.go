package httpapi

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus metrics, served on /metrics. The agent
// sets them; this package only defines and registers them.
type Metrics struct {
	// Role is dbpilot_role{role}: 1 for the node's current role ("primary",
	// "replica", "unknown"), 0 for the others. Set it with SetRole.
	Role *prometheus.GaugeVec
	// Term is dbpilot_term: the cluster term the node last observed.
	Term prometheus.Gauge
	// LagBytes is dbpilot_lag_bytes: replication lag in bytes behind the
	// leader's last reported LSN; -1 when unknown.
	LagBytes prometheus.Gauge
	// Healthy is dbpilot_healthy: 1 when the last health cycle passed, else 0.
	Healthy prometheus.Gauge
	// LeaseLeft is dbpilot_lease_left_seconds: on the primary, how
	// long the leader lease can still be proven, in seconds; 0 elsewhere.
	LeaseLeft prometheus.Gauge
	// HAActions is dbpilot_ha_actions_total{action}: HA cycles by the action
	// they decided (promote, demote, follow, noop, ...).
	HAActions *prometheus.CounterVec
	// HandlerRuns is dbpilot_handler_runs_total{handler,status}: handler
	// runs by phase and outcome (ok, failed, timeout).
	HandlerRuns *prometheus.CounterVec
	// SynchronousMode is dbpilot_synchronous_mode: 1 when the node acts
	// under synchronous_mode "on" (the spec key's, else the local
	// configuration's), else 0. Set it with SetSynchronous.
	SynchronousMode prometheus.Gauge
	// SynchronousStandbys is dbpilot_synchronous_standbys: on the primary,
	// how many standbys synchronous_standby_names lists (commits wait for
	// one of them); 0 on an asynchronous primary and on every other node.
	SynchronousStandbys prometheus.Gauge
	// EventsDropped is dbpilot_events_dropped_total: events the reporter
	// dropped (queue overflow or refused by the receiver). It satisfies
	// report.Counter.
	EventsDropped prometheus.Counter
}

// NewMetrics creates the agent's metrics and registers them with reg.
// Errors: a metric of the same name is already registered (for example
// NewMetrics called twice on one registry); then nothing is registered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Role: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dbpilot_role",
			Help: "1 for the node's current role, 0 for the others.",
		}, []string{"role"}),
		Term: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dbpilot_term",
			Help: "Cluster term (leader generation) the node last observed.",
		}),
		LagBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dbpilot_lag_bytes",
			Help: "Replication lag behind the leader's last reported LSN, in bytes; -1 when unknown.",
		}),
		Healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dbpilot_healthy",
			Help: "1 when the node's last health cycle passed, else 0.",
		}),
		LeaseLeft: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dbpilot_lease_left_seconds",
			Help: "On the primary, how long the leader lease can still be proven, in seconds; 0 elsewhere.",
		}),
		HAActions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dbpilot_ha_actions_total",
			Help: "HA cycles by the action they decided.",
		}, []string{"action"}),
		HandlerRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dbpilot_handler_runs_total",
			Help: "Handler runs by handler phase and outcome.",
		}, []string{"handler", "status"}),
		SynchronousMode: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dbpilot_synchronous_mode",
			Help: "1 when the node acts under synchronous_mode on (spec key, else local configuration), else 0.",
		}),
		SynchronousStandbys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dbpilot_synchronous_standbys",
			Help: "On the primary, the number of standbys in synchronous_standby_names (commits wait for one); 0 elsewhere.",
		}),
		EventsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dbpilot_events_dropped_total",
			Help: "Events the reporter dropped: queue overflow or refused by the receiver.",
		}),
	}
	collectors := []prometheus.Collector{
		m.Role, m.Term, m.LagBytes, m.Healthy, m.LeaseLeft, m.HAActions, m.HandlerRuns, m.EventsDropped,
		m.SynchronousMode, m.SynchronousStandbys,
	}
	for i, c := range collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register agent metrics: %w", err)
		}
	}
	m.SetRole(RoleUnknown)
	m.LagBytes.Set(-1)
	return m, nil
}

// SetRole sets dbpilot_role to 1 for role and 0 for the other known roles.
// An unknown role string is recorded as RoleUnknown.
func (m *Metrics) SetRole(role string) {
	if role != RolePrimary && role != RoleReplica {
		role = RoleUnknown
	}
	for _, r := range []string{RolePrimary, RoleReplica, RoleUnknown} {
		v := 0.0
		if r == role {
			v = 1
		}
		m.Role.WithLabelValues(r).Set(v)
	}
}

// Observe sets the gauges that follow from s: role, term, lag and health.
func (m *Metrics) Observe(s NodeState) {
	m.SetRole(s.Role)
	m.Term.Set(float64(s.Term))
	m.LagBytes.Set(float64(s.LagBytes))
	if s.Healthy {
		m.Healthy.Set(1)
	} else {
		m.Healthy.Set(0)
	}
}

// SetSynchronous sets dbpilot_synchronous_mode (on: the effective
// synchronous_mode is "on") and dbpilot_synchronous_standbys (standbys: the
// number of names PostgreSQL waits for on this primary; 0 elsewhere).
func (m *Metrics) SetSynchronous(on bool, standbys int) {
	v := 0.0
	if on {
		v = 1
	}
	m.SynchronousMode.Set(v)
	m.SynchronousStandbys.Set(float64(standbys))
}
