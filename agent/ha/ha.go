// Package ha is the pure HA policy of the agent: a View of the local node and
// the cluster goes in, one Action with a reason comes out. No I/O, no clock:
// the agent measures durations, Decide only compares them. The order of the
// cases in Decide is the policy, safety first.
//
// The bootstrap, health-check and failover steps follow the DIY DBaaS
// whitepaper, Op 2; the lease and fencing rules are those of
// docs/architecture.md.
package ha

import (
	"fmt"
	"slices"
	"time"
)

// Role is what the local PostgreSQL currently is.
type Role string

// Roles.
const (
	RolePrimary Role = "primary" // running, not in recovery: writable
	RoleReplica Role = "replica" // running in recovery: read-only
	RoleStopped Role = "stopped" // not running
)

// Kind is the kind of an Action.
type Kind string

// Action kinds, in rough order of urgency.
const (
	Noop         Kind = "noop"
	Fence        Kind = "fence"         // stop accepting writes now (immediate stop, restart read-only)
	Release      Kind = "release"       // delete our leader key
	Promote      Kind = "promote"       // we hold the leader key: make PostgreSQL writable
	Campaign     Kind = "campaign"      // take the failover lock, re-check, claim the leader key at term+1, promote
	StartReplica Kind = "start_replica" // start PostgreSQL read-only, following Target ("" = no upstream yet)
	Follow       Kind = "follow"        // point the running replica at Target
	Rejoin       Kind = "rejoin"        // stop, pg_rewind from Target (fresh clone if that fails), start as replica
	Handover     Kind = "handover"      // planned switchover to Target
	SyncWiden    Kind = "sync_widen"    // write the sync key as Standbys (before PostgreSQL uses them)
	SyncApply    Kind = "sync_apply"    // set synchronous_standby_names to Standbys
	SyncShrink   Kind = "sync_shrink"   // once Standbys have flushed our LSN, write the sync key as Standbys
	Reclaim      Kind = "reclaim"       // failsafe: re-create our lapsed leader key at the same term
	Reclone      Kind = "reclone"       // replace the data directory with a fresh clone of Target

	// Bootstrap phase (View.Bootstrapping), whitepaper Op 2.
	BootstrapDone Kind = "bootstrap_done" // the data directory is the cluster's: the HA loop takes over
	Adopt         Kind = "adopt"          // the data directory is the cluster's but unrecorded: write the local bootstrap marker
	ForgetMarker  Kind = "forget_marker"  // a bootstrap marker without a data directory: remove it, then clone again
	DiscardData   Kind = "discard_data"   // the data directory belongs to another cluster: stop and remove it
	Initialize    Kind = "initialize"     // bootstrap lock, initdb (or restore), leader key at term 1
	Clone         Kind = "clone"          // new replica: clone from Target (backup or pg_basebackup)
)

// Action is what the agent does this cycle, and why.
type Action struct {
	Kind     Kind
	Target   string   // node to follow, promote towards or hand over to
	Standbys []string // sync actions: the new synchronous set
	Reason   string
}

// Member is another live member as seen in etcd.
type Member struct {
	Name       string
	Role       Role
	Healthy    bool
	Running    bool
	Streaming  bool
	NoFailover bool
	Priority   int
	LSN        uint64 // bytes
	// Fresh: the member wrote its key after the leader key disappeared, so
	// its LSN is final for this election.
	Fresh bool
	// Stale: the member has not refreshed its key for longer than the grace
	// period; it is ignored as a competitor (but blocks a synchronous-mode
	// failover if it belongs to the synchronous set).
	Stale bool
	// FailsafePromised: the member reports an unexpired failsafe promise to
	// the primary of the current term (it answered that primary's failsafe
	// check during an etcd outage): that primary may still be writable.
	FailsafePromised bool
}

// Replica is one WAL sender of the primary's PostgreSQL
// (pg_stat_replication), keyed by the standby's application_name.
type Replica struct {
	Name      string
	Streaming bool   // state = 'streaming'
	FlushLSN  uint64 // bytes: what the standby has flushed
}

// Switchover is a pending planned switchover.
type Switchover struct {
	From, To string
	Handover bool   // the old primary has stopped and released the key
	FinalLSN uint64 // handover: the candidate must have received this LSN
	Expired  bool   // handover took too long: normal failover rules apply
}

// View is everything Decide looks at.
type View struct {
	Self       string
	NoFailover bool
	Priority   int

	// Local PostgreSQL.
	LocalInitialized bool // the data directory holds a cluster
	LocalRole        Role
	Healthy          bool   // health handler (threshold) and engine checks pass
	Streaming        bool   // replica: WAL receiver streaming
	Upstream         string // replica: the leader we are configured to follow
	NotStreamingFor  time.Duration
	LocalLSN         uint64
	WasPrimary       bool // this data directory was last writable under another term: rewind before following
	// RewoundNotStreaming: a rewind for not streaming already ran and the
	// replica has not streamed since (e.g. the WAL it needs is gone).
	RewoundNotStreaming bool
	Fenced              bool // we fenced ourselves since we last held the leader key

	// Cluster, from the last etcd snapshot.
	EtcdOK      bool
	Initialized bool
	// Term is the cluster's term from the last etcd snapshot.
	Term uint64
	// OwnTerm is the term at which this node is, or last was, the writable
	// primary holding the leader key; 0 when it is not a primary.
	OwnTerm uint64
	// FailsafeLeft is how much longer every member of the last known
	// membership has promised to stay out of elections (failsafe mode; ≤ 0
	// when there is no such confirmation). A primary may stay writable on
	// it when its lease cannot be proven.
	FailsafeLeft time.Duration
	// Promised names the primary this node promised, in failsafe mode, not
	// to take part in elections for now ("" = no promise in force).
	Promised    string
	Leader      string // "" = no leader key
	IsLeader    bool   // the leader key is ours, bound to our lease
	LeaseLeft   time.Duration
	FenceMargin time.Duration
	LeaderLSN   uint64   // last LSN the primary reported (optime)
	Members     []Member // live members except Self
	// SyncMode is the effective synchronous_mode: the spec key's when it
	// sets one, else the local configuration's.
	SyncMode       bool
	SyncStandbys   []string // sync key
	PGSyncStandbys []string // synchronous_standby_names on our PostgreSQL (primary)
	// Replicas are the WAL senders of our PostgreSQL (primary only, from
	// pg_stat_replication): the raw input of the synchronous set.
	Replicas []Replica
	// SyncAppliedLSN is our write LSN (bytes) when synchronous_standby_names
	// was last changed: a standby dropped from the sync key only once the
	// remaining ones have flushed up to it.
	SyncAppliedLSN uint64
	// ShuttingDown: the agent is stopping (SIGTERM). A leader hands over to
	// the best replica if there is one; nobody starts anything new.
	ShuttingDown bool

	// Bootstrapping: the agent has not yet established that its data
	// directory belongs to the cluster (before the HA loop; whitepaper Op 2).
	Bootstrapping bool
	// BootstrapMarker: the local bootstrap lock file records that this data
	// directory joined the cluster.
	BootstrapMarker bool
	// LocalSystemID is the data directory's database system identifier
	// (pg_controldata); ControlDataErr: it could not be read.
	LocalSystemID  string
	ControlDataErr bool
	// ClusterSystemID is the system identifier recorded when the cluster
	// was initialized ("" before).
	ClusterSystemID string
	// SpecNodes are the nodes of the control plane's spec key; empty: no
	// restriction. Any other node is being removed: it keeps replicating
	// but is no failover candidate, switchover target or new synchronous
	// standby (see removing for the synchronous-mode exception).
	SpecNodes   []string
	Switchover  *Switchover
	MaxLag      int64 // bytes
	RejoinAfter time.Duration
}

// Decide returns the one action for this cycle. The order of the cases is
// the policy: fencing first, then leader duties, then following, then
// elections.
func Decide(v View) Action {
	failsafe := v.FailsafeLeft > v.FenceMargin
	switch {
	case v.LocalRole == RolePrimary && v.IsLeader && v.LeaseLeft <= v.FenceMargin && !failsafe:
		return Action{Kind: Fence, Reason: fmt.Sprintf("cannot prove leadership for another cycle (lease left %s, failsafe left %s, margin %s): fencing", v.LeaseLeft, v.FailsafeLeft, v.FenceMargin)}
	case v.LocalRole == RolePrimary && !v.IsLeader && v.EtcdOK && v.Leader == "" && v.OwnTerm != 0 && v.OwnTerm == v.Term && failsafe:
		return Action{Kind: Reclaim, Reason: fmt.Sprintf("etcd is back and our leader key lapsed during the outage: every member still confirms us (failsafe left %s): re-taking the key at term %d", v.FailsafeLeft, v.Term)}
	case v.LocalRole == RolePrimary && !v.IsLeader && !v.EtcdOK && v.OwnTerm != 0 && failsafe:
		return Action{Kind: Noop, Reason: fmt.Sprintf("etcd unreachable; failsafe: every member confirms this primary (left %s)", v.FailsafeLeft)}
	case v.LocalRole == RolePrimary && !v.IsLeader:
		return Action{Kind: Fence, Reason: "writable without holding the leader key: fencing"}
	case v.Bootstrapping:
		return decideBootstrap(v)
	case v.ShuttingDown:
		return decideShutdown(v)
	case !v.EtcdOK:
		if v.LocalRole == RoleStopped && v.LocalInitialized {
			return Action{Kind: StartReplica, Reason: "etcd unreachable: starting read-only without upstream"}
		}
		if v.LocalRole == RolePrimary && v.IsLeader && v.LeaseLeft <= v.FenceMargin {
			return Action{Kind: Noop, Reason: fmt.Sprintf("etcd unreachable; failsafe: every member confirms this primary (left %s)", v.FailsafeLeft)}
		}
		return Action{Kind: Noop, Reason: "etcd unreachable, retrying"}
	case v.IsLeader:
		return decideLeader(v)
	case v.Leader != "":
		return decideFollower(v)
	default:
		return decideElection(v)
	}
}

// decideBootstrap is the bootstrap of the whitepaper's Op 2, one step per
// call: the first node takes the bootstrap lock and initializes the cluster;
// every other node waits for a leader and clones from it. A data directory
// is only ever discarded when its system identifier, read without error,
// names another cluster: an unreadable control file is retried, never
// deleted.
func decideBootstrap(v View) Action {
	switch {
	case v.BootstrapMarker && v.LocalInitialized:
		return Action{Kind: BootstrapDone, Reason: "data directory joined the cluster earlier"}
	case !v.EtcdOK:
		return Action{Kind: Noop, Reason: "etcd unreachable: waiting to bootstrap or clone"}
	case v.LocalInitialized && v.Initialized && v.ControlDataErr:
		return Action{Kind: Noop, Reason: "cannot read the data directory's control file: keeping it and retrying (nothing is deleted on a read error)"}
	case v.LocalInitialized && v.Initialized && v.LocalSystemID == v.ClusterSystemID:
		return Action{Kind: Adopt, Reason: "data directory belongs to the cluster (bootstrap cut short before its marker was written)"}
	case v.LocalInitialized && v.Initialized:
		return Action{Kind: DiscardData, Reason: fmt.Sprintf("data directory belongs to another cluster (system id %s, cluster's %s): re-cloning", v.LocalSystemID, v.ClusterSystemID)}
	case v.BootstrapMarker && !v.LocalInitialized:
		return Action{Kind: ForgetMarker, Reason: "bootstrap marker present but no data directory: cloning again"}
	case !v.Initialized && v.Leader == "":
		return Action{Kind: Initialize, Reason: "cluster not initialized: bootstrapping it as its first primary"}
	case v.Leader == v.Self && v.IsLeader:
		return Action{Kind: Release, Reason: "a leader key of this node without its data (earlier run): releasing it; never clone from ourselves"}
	case v.Leader == v.Self:
		return Action{Kind: Noop, Reason: "a leader key of this node from an earlier run is still alive: waiting for its lease to expire"}
	case v.Leader != "":
		return Action{Kind: Clone, Target: v.Leader, Reason: "cloning from the primary " + v.Leader}
	}
	return Action{Kind: Noop, Reason: "cluster initialized but no leader yet: waiting to clone"}
}

// decideShutdown: a stopping agent starts nothing new; a writable leader
// hands over (to the switchover's target if one is requested and eligible,
// else to the best replica) so that its stop is a switchover, not a
// failover after the lease runs out.
func decideShutdown(v View) Action {
	if !v.IsLeader || v.LocalRole != RolePrimary || v.Fenced {
		return Action{Kind: Noop, Reason: "shutting down"}
	}
	if sw := v.Switchover; sw != nil && !sw.Handover && sw.To != "" && (sw.From == "" || sw.From == v.Self) &&
		slices.ContainsFunc(v.Members, func(m Member) bool { return m.Name == sw.To && eligibleHandover(v, m) }) {
		return Action{Kind: Handover, Target: sw.To, Reason: "shutting down: handing over to the requested switchover target"}
	}
	if t := bestHandover(v); t != "" {
		return Action{Kind: Handover, Target: t, Reason: "shutting down: handing over leadership"}
	}
	return Action{Kind: Noop, Reason: "shutting down: no replica to hand over to"}
}

func decideLeader(v View) Action {
	switch {
	case v.Fenced:
		return Action{Kind: Release, Reason: "fenced while holding the leader key: releasing it for a fresh election"}
	case v.LocalRole != RolePrimary:
		return Action{Kind: Promote, Reason: "holding the leader key"}
	}
	if sw := v.Switchover; sw != nil && !sw.Handover && (sw.From == "" || sw.From == v.Self) {
		// A request that cannot be served now falls through: the primary's
		// other duties (unhealthy hand-over, sync upkeep) must not wait on it.
		target := sw.To
		if target == "" {
			target = bestHandover(v)
		} else if !slices.ContainsFunc(v.Members, func(m Member) bool { return m.Name == target && eligibleHandover(v, m) }) {
			target = ""
		}
		if target != "" {
			return Action{Kind: Handover, Target: target, Reason: "planned switchover requested"}
		}
	}
	if !v.Healthy {
		if t := bestHandover(v); t != "" {
			return Action{Kind: Handover, Target: t, Reason: "primary unhealthy: handing over leadership"}
		}
		return Action{Kind: Noop, Reason: "primary unhealthy but no healthy replica to hand over to"}
	}
	if v.SyncMode {
		if a, ok := decideSync(v); ok {
			return a
		}
	} else if a, ok := decideAsync(v); ok {
		return a
	}
	return Action{Kind: Noop, Reason: "primary holding the leader key"}
}

// decideAsync leaves synchronous replication when synchronous_mode is off
// (switched off at run time through the spec key): PostgreSQL stops waiting
// first, then the sync key is emptied. Dropping guarantees in this order
// is safe; in elections the key is ignored once the mode is off anyway.
func decideAsync(v View) (Action, bool) {
	switch {
	case len(v.PGSyncStandbys) > 0:
		return Action{Kind: SyncApply, Standbys: nil, Reason: "synchronous_mode off: clearing synchronous_standby_names"}, true
	case len(v.SyncStandbys) > 0:
		return Action{Kind: SyncShrink, Standbys: []string{}, Reason: "synchronous_mode off: emptying the sync key"}, true
	}
	return Action{}, false
}

// decideSync keeps the invariant "every standby PostgreSQL may wait for is in
// the sync key": widen the key before PostgreSQL, shrink it after.
//
// Nodes being removed (not in SpecNodes) are never added and are dropped
// like lost standbys, except the last one: the set never drops to zero.
func decideSync(v View) (Action, bool) {
	target := sorted(syncCandidates(v))
	if len(target) == 0 && len(v.PGSyncStandbys) == 0 {
		// A new primary carries over the standbys of the sync key (they
		// hold every acknowledged commit), so commits wait for them from
		// the first one, before any of them is streaming from us.
		target = sorted(slices.DeleteFunc(slices.Clone(v.SyncStandbys), func(n string) bool { return outsideSpec(v, n) }))
	}
	if len(target) == 0 {
		// Keep waiting for the standbys we have: never drop to zero, commits
		// block rather than being acknowledged without a copy.
		target = sorted(v.PGSyncStandbys)
	}
	key := sorted(v.SyncStandbys)
	if widened := union(key, target); !slices.Equal(widened, key) {
		return Action{Kind: SyncWiden, Standbys: widened, Reason: "new synchronous candidates: widening the sync key before PostgreSQL"}, true
	}
	if !slices.Equal(target, sorted(v.PGSyncStandbys)) {
		return Action{Kind: SyncApply, Standbys: target, Reason: "setting synchronous_standby_names to the healthy streaming replicas"}, true
	}
	if !slices.Equal(target, key) {
		for _, n := range target {
			i := slices.IndexFunc(v.Replicas, func(r Replica) bool { return r.Name == n })
			if i < 0 || v.Replicas[i].FlushLSN < v.SyncAppliedLSN {
				// A standby dropped from the key may hold commits the
				// others do not have yet: an election in between must
				// still find them in the key.
				return Action{Kind: Noop, Reason: fmt.Sprintf("sync shrink waits for standby %s to flush up to %d", n, v.SyncAppliedLSN)}, true
			}
		}
		return Action{Kind: SyncShrink, Standbys: target, Reason: "removing lost standbys from the sync key once the rest has our LSN"}, true
	}
	return Action{}, false
}

// syncCandidates are the replicas that may be synchronous standbys: streaming
// from us, reporting healthy in etcd, promotable (no nofailover tag, priority
// above 0) and kept by the spec.
func syncCandidates(v View) []string {
	var out []string
	for _, r := range v.Replicas {
		i := slices.IndexFunc(v.Members, func(m Member) bool { return m.Name == r.Name })
		if !r.Streaming || i < 0 || outsideSpec(v, r.Name) {
			continue
		}
		if m := v.Members[i]; m.Healthy && !m.NoFailover && m.Priority > 0 {
			out = append(out, r.Name)
		}
	}
	return out
}

func decideFollower(v View) Action {
	switch {
	case v.LocalRole == RoleStopped:
		if v.WasPrimary {
			return Action{Kind: Rejoin, Target: v.Leader, Reason: "former primary: rewinding before following " + v.Leader}
		}
		return Action{Kind: StartReplica, Target: v.Leader, Reason: "starting as replica of " + v.Leader}
	case v.WasPrimary:
		return Action{Kind: Rejoin, Target: v.Leader, Reason: "former primary: rewinding before following " + v.Leader}
	case v.Upstream != v.Leader:
		return Action{Kind: Follow, Target: v.Leader, Reason: "new leader " + v.Leader}
	case !v.Streaming && v.RejoinAfter > 0 && v.NotStreamingFor >= v.RejoinAfter && v.RewoundNotStreaming:
		return Action{Kind: Reclone, Target: v.Leader, Reason: fmt.Sprintf("still not streaming from %s %s after a rewind (the WAL it needs may be gone): re-cloning", v.Leader, v.NotStreamingFor)}
	case !v.Streaming && v.RejoinAfter > 0 && v.NotStreamingFor >= v.RejoinAfter:
		return Action{Kind: Rejoin, Target: v.Leader, Reason: fmt.Sprintf("not streaming from %s for %s: rewinding", v.Leader, v.NotStreamingFor)}
	}
	return Action{Kind: Noop, Reason: "replica following " + v.Leader}
}

func decideElection(v View) Action {
	if !v.Initialized {
		return Action{Kind: Noop, Reason: "cluster not bootstrapped yet"}
	}
	if v.LocalRole == RoleStopped {
		if sw := v.Switchover; sw != nil && sw.Handover && !sw.Expired && sw.From == v.Self {
			// We just handed over: starting now would compete with the
			// target's promotion for CPU and disk, and we rejoin it anyway.
			// If the target never takes the key, the hand-over expires and
			// we stand for election like anyone else.
			return Action{Kind: Noop, Reason: "handed over to " + sw.To + ": waiting for it to take the leader key"}
		}
		if v.WasPrimary || !v.LocalInitialized {
			return Action{Kind: Noop, Reason: "no leader: waiting for one to rejoin or clone from"}
		}
		return Action{Kind: StartReplica, Reason: "no leader: starting read-only to take part in the election"}
	}
	if v.Promised != "" {
		return Action{Kind: Noop, Reason: "no leader; failsafe promise to " + v.Promised + " in force: staying out of the election"}
	}
	if sw := v.Switchover; sw != nil && sw.Handover && !sw.Expired {
		if sw.To != v.Self {
			return Action{Kind: Noop, Reason: "switchover hand-over to " + sw.To + " in progress"}
		}
		if v.LocalLSN < sw.FinalLSN {
			return Action{Kind: Noop, Reason: fmt.Sprintf("switchover: waiting to receive up to the final LSN (%d < %d)", v.LocalLSN, sw.FinalLSN)}
		}
		return Action{Kind: Campaign, Reason: "switchover: received the old primary's final LSN"}
	}
	if why := ineligible(v); why != "" {
		return Action{Kind: Noop, Reason: "no leader; not a candidate: " + why}
	}
	for _, m := range v.Members {
		switch {
		case m.Stale:
		case m.FailsafePromised:
			return Action{Kind: Noop, Reason: "no leader; " + m.Name + " holds a failsafe promise to the primary of this term: waiting for it to re-take its key"}
		case m.Role == RolePrimary && m.Running:
			return Action{Kind: Noop, Reason: "no leader; " + m.Name + " still reports a writable primary: waiting for it to re-take its key or fence"}
		}
	}

	syncSet := v.SyncMode && len(v.SyncStandbys) > 0
	for _, m := range v.Members {
		inSync := syncSet && slices.Contains(v.SyncStandbys, m.Name)
		if inSync && (!m.Fresh || m.Stale) {
			return Action{Kind: Noop, Reason: "no leader; waiting for synchronous standby " + m.Name + " to report its LSN"}
		}
		if inSync && m.LSN > v.LocalLSN && !promotable(v, m) {
			// With ANY 1 of the key, the most advanced member of the key
			// holds every acknowledged commit: nobody behind it may take
			// over, even when it cannot be promoted itself.
			return Action{Kind: Noop, Reason: fmt.Sprintf("no leader; synchronous standby %s is ahead (LSN %d > %d) but cannot be promoted (%s): it may hold the only copy of acknowledged commits, not failing over automatically",
				m.Name, m.LSN, v.LocalLSN, whyNot(v, m))}
		}
		if m.Stale || !promotable(v, m) {
			continue
		}
		if !m.Fresh {
			return Action{Kind: Noop, Reason: "no leader; waiting for " + m.Name + " to report its LSN"}
		}
		if better(m, v) {
			return Action{Kind: Noop, Reason: "no leader; " + m.Name + " is a better candidate"}
		}
	}
	if syncSet {
		for _, s := range v.SyncStandbys {
			if s != v.Self && !slices.ContainsFunc(v.Members, func(m Member) bool { return m.Name == s }) {
				return Action{Kind: Noop, Reason: "no leader; synchronous standby " + s + " is gone and may hold the only copy of acknowledged commits: not failing over automatically"}
			}
		}
	}
	return Action{Kind: Campaign, Reason: "no leader; this node is the most advanced healthy candidate"}
}

// ineligible says why this node may not be promoted automatically ("" = it may).
func ineligible(v View) string {
	switch {
	case v.NoFailover || v.Priority <= 0:
		return "tagged nofailover"
	case removing(v, v.Self):
		return "not in the cluster spec's nodes (being removed)"
	case !v.Healthy:
		return "unhealthy"
	case v.LocalRole != RoleReplica:
		return "not running as a replica"
	case v.WasPrimary:
		return "former primary that has not rejoined"
	case v.SyncMode && len(v.SyncStandbys) > 0 && !slices.Contains(v.SyncStandbys, v.Self):
		return "not a synchronous standby"
	case v.LeaderLSN > v.LocalLSN && int64(v.LeaderLSN-v.LocalLSN) > v.MaxLag:
		return fmt.Sprintf("%d bytes behind the last primary LSN, more than maximum_lag_on_failover %d", v.LeaderLSN-v.LocalLSN, v.MaxLag)
	}
	return ""
}

func promotable(v View, m Member) bool {
	if !m.Healthy || m.NoFailover || m.Priority <= 0 || !m.Running || m.Role != RoleReplica || removing(v, m.Name) {
		return false
	}
	if v.SyncMode && len(v.SyncStandbys) > 0 {
		return slices.Contains(v.SyncStandbys, m.Name)
	}
	return true
}

// whyNot says why promotable(v, m) is false, for logs.
func whyNot(v View, m Member) string {
	switch {
	case !m.Healthy:
		return "unhealthy"
	case m.NoFailover || m.Priority <= 0:
		return "tagged nofailover"
	case !m.Running || m.Role != RoleReplica:
		return "not running as a replica"
	case removing(v, m.Name):
		return "being removed"
	}
	return "not eligible"
}

// outsideSpec reports whether node is missing from a non-empty SpecNodes:
// the control plane is removing it.
func outsideSpec(v View, node string) bool {
	return len(v.SpecNodes) > 0 && !slices.Contains(v.SpecNodes, node)
}

// removing reports whether node is out of the running for promotion
// because the spec is removing it. In synchronous mode with a sync key a
// member of the key stays eligible: it may hold the only copy of
// acknowledged commits, and the most advanced member of the key must be
// able to win. The primary drops such a node from the key (decideSync)
// once the others have its WAL, and from then on the key excludes it.
func removing(v View, node string) bool {
	if !outsideSpec(v, node) {
		return false
	}
	return !(v.SyncMode && len(v.SyncStandbys) > 0 && slices.Contains(v.SyncStandbys, node))
}

// better reports whether m beats the local node: higher LSN, then a node
// the spec keeps over one it removes, then higher priority, then the
// smaller name.
func better(m Member, v View) bool {
	if m.LSN != v.LocalLSN {
		return m.LSN > v.LocalLSN
	}
	if mo, so := outsideSpec(v, m.Name), outsideSpec(v, v.Self); mo != so {
		return so
	}
	if m.Priority != v.Priority {
		return m.Priority > v.Priority
	}
	return m.Name < v.Self
}

// eligibleHandover: a planned switchover never goes to a node the spec
// removes, whatever the sync key says (the primary is alive and picks).
func eligibleHandover(v View, m Member) bool {
	return promotable(v, m) && !outsideSpec(v, m.Name) && m.Streaming && !m.Stale
}

// bestHandover picks the most advanced healthy streaming promotable replica.
func bestHandover(v View) string {
	var best *Member
	for i := range v.Members {
		m := &v.Members[i]
		if !eligibleHandover(v, *m) {
			continue
		}
		if best == nil || m.LSN > best.LSN || (m.LSN == best.LSN && (m.Priority > best.Priority || (m.Priority == best.Priority && m.Name < best.Name))) {
			best = m
		}
	}
	if best == nil {
		return ""
	}
	return best.Name
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

func union(a, b []string) []string { return sorted(append(slices.Clone(a), b...)) }
