// Package proto is dbpilot's wire contract: between the agent and the
// control plane, versioned CloudEvents 1.0 types, their JSON payloads and
// the rules that make an event valid; between the control plane and its
// clients (the dbpilot CLI, fleet hosts), the REST API's request and
// response bodies (the api_*.go files, described for readers who do not
// read Go by openapi.json, which [OpenAPI] embeds).
//
// Every event is a CloudEvents 1.0 structured-mode JSON document (an
// [Envelope]) whose data is one of the payload structs of this package. The
// event type names the payload and its version (for example
// [TypePrimaryChanged] carries a [PrimaryChanged]); a breaking change to a
// payload gets a new type ending in .v2, never an edit of .v1.
//
// Delivery is at least once. Consumers use the event id as an idempotency key
// and order events by (term, revision): an event whose position is lower than
// the one a consumer already holds for the same subject is stale and is
// dropped (see [Envelope.Before]). docs/events.md documents the contract for
// readers who do not read Go.
package proto
