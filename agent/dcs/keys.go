// Package dcs is the agent's session with etcd: its HA lease, the member
// and leader keys bound to it, the bootstrap and failover locks and the
// compare-and-swap writes that make leadership safe. Its sibling
// agent/dcs/admin is the admin side (the control plane, the CLI, the test
// bed): it reads clusters and writes the keys operators may write. Both
// use the one declaration of the keyspace in proto/keyspace; the names
// below are aliases of it, so agent code reads dcs.Member as before.
//
// Keyspace: see proto/keyspace and docs/keyspace.md.
package dcs

import "github.com/dbpilot/dbpilot/proto/keyspace"

// Root is the prefix of every dbpilot key in etcd (keyspace.Root).
const Root = keyspace.Root

// Keys computes the etcd keys of one cluster (keyspace.Keys).
type Keys = keyspace.Keys

// NewKeys returns the keys of cluster namespace/project/name (keyspace.NewKeys).
func NewKeys(namespace, project, cluster string) Keys {
	return keyspace.NewKeys(namespace, project, cluster)
}
