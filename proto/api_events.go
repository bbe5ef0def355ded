package proto

import (
	"encoding/json"
	"time"
)

// Event is a recorded event as the API serves it (OpenAPI schema Event):
// one element of GET /v1/namespaces/{ns}/events, and the data of each
// Server-Sent Event of …/events/stream (whose SSE id is Seq). It flattens
// the CloudEvent's attributes (see [Envelope]) and adds the order of
// arrival.
type Event struct {
	// Seq is the event's number in its namespace (1, 2, … in arrival
	// order; other namespaces' events take no numbers of it); ?after= and
	// Last-Event-ID resume after it.
	Seq int64 `json:"seq"`
	// ID is the CloudEvent id (the idempotency key).
	ID string `json:"id"`
	// Type is the CloudEvent type (TypePrimaryChanged, …, or a control
	// plane type such as io.dbpilot.controlplane.node_repair.v1).
	Type string `json:"type"`
	// Namespace, Project and Cluster name the cluster the event is about.
	Namespace string `json:"namespace"`
	// Project: see Namespace.
	Project string `json:"project"`
	// Cluster is the cluster's name.
	Cluster string `json:"cluster"`
	// Node is the emitting node ("" for control-plane events about the
	// cluster).
	Node string `json:"node"`
	// Term is the event's cluster term (dbpilotterm).
	Term uint64 `json:"term"`
	// Revision is the etcd revision the event was derived from
	// (dbpilotrevision).
	Revision int64 `json:"revision"`
	// Time is when the event happened.
	Time time.Time `json:"time"`
	// Stale is true when the projection dropped the event as older than
	// what it held (it is kept in the log all the same).
	Stale bool `json:"stale"`
	// Data is the payload, the JSON object of the struct Type names.
	Data json.RawMessage `json:"data"`
}

// Audit is an audit log entry (OpenAPI schema Audit), in GET /v1/audit
// and GET /v1/namespaces/{ns}/audit: one per mutating request, refused
// ones included, one per request refused for a missing or invalid token
// (within the per-address failure limit), and one per action the control
// plane takes on its own (a repair). Text fields hold at most 256 bytes.
type Audit struct {
	// Seq orders the entries (increasing): the entry's number in its
	// namespace in a namespace's audit log, the server-wide number in
	// GET /v1/audit.
	Seq int64 `json:"seq"`
	// At is when the request was answered.
	At time.Time `json:"at"`
	// Actor is "{token id} ({token name})", "host {name}" for an
	// enrolment, "dbpilot-server/{instance} (repair)", or "anonymous from
	// {client IP} ({User-Agent})".
	Actor string `json:"actor"`
	// Namespace is the namespace in the path; omitted when none is.
	Namespace string `json:"namespace,omitempty"`
	// Action is the route ("POST /v1/namespaces/{ns}/clusters"), or the
	// control plane's own action ("repair").
	Action string `json:"action"`
	// Resource is the request path as sent.
	Resource string `json:"resource"`
	// Status is the HTTP status of the answer.
	Status int `json:"status"`
	// Result is "ok" (a host enrolment: "Created"), the status text of a
	// 4xx or 5xx ("Forbidden"), or for a repair "operation {id}: {why}".
	Result string `json:"result"`
}
