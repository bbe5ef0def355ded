package dcs

import (
	"time"

	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// The documents of the keyspace, declared in proto/keyspace.
type (
	// LeaderRecord is the value of the leader key (keyspace.LeaderRecord).
	LeaderRecord = keyspace.LeaderRecord
	// Member is the value of a member key (keyspace.Member).
	Member = keyspace.Member
	// Spec is the value of the spec key (keyspace.Spec).
	Spec = keyspace.Spec
	// HistoryRecord is the value of history/{term} (keyspace.HistoryRecord).
	HistoryRecord = keyspace.HistoryRecord
	// SyncState is the value of the sync key (keyspace.SyncState).
	SyncState = keyspace.SyncState
	// Switchover is the value of the switchover key (keyspace.Switchover).
	Switchover = keyspace.Switchover
	// ClusterDocument is the value of the state key (keyspace.ClusterDocument).
	ClusterDocument = keyspace.ClusterDocument
	// DocumentNode is one node of the cluster document (keyspace.DocumentNode).
	DocumentNode = keyspace.DocumentNode
	// Snapshot is one consistent, decoded read of the cluster prefix
	// (keyspace.Snapshot).
	Snapshot = keyspace.Snapshot
)

// Switchover states (keyspace.SwitchoverRequested, keyspace.SwitchoverHandover).
const (
	SwitchoverRequested = keyspace.SwitchoverRequested
	SwitchoverHandover  = keyspace.SwitchoverHandover
)

func nowMS() int64 { return time.Now().UnixMilli() }
