package proto

// The REST API's wire types (/v1, JSON; proto/openapi.json is the OpenAPI
// document). The control plane's handlers (controlplane/api) encode and
// decode these structs, and the CLI's client (cmd/dbpilot/internal/client)
// decodes and encodes the same ones: a field added, renamed or re-typed
// here changes both sides at once. Field order is the order of the JSON
// object on the wire. Times are RFC 3339 strings (UTC as the server sends
// them); durations and sizes carry their unit in the field name (_ms,
// _seconds, _bytes, _mb, _gb).

// APIError is an error answer of the REST API (OpenAPI schema Error): the
// HTTP status, and the JSON body {"code", "message", "field"}. The control
// plane answers every 4xx and 5xx with it; it is also an error value.
type APIError struct {
	// Status is the HTTP status code the error is answered with (not part
	// of the body).
	Status int `json:"-"`
	// Code is the stable machine-readable cause: unauthenticated,
	// forbidden, not_found, invalid_argument, unknown_field,
	// malformed_json, conflict, already_exists, ambiguous,
	// failed_precondition, too_large, unsupported_media_type,
	// not_implemented, unavailable or internal.
	Code string `json:"code"`
	// Message is a sentence for a human; it starts with the field
	// ("replicas: must be in [1, 9] (got 12)") when there is one.
	Message string `json:"message"`
	// Field is the request field at fault (a JSON path such as
	// "grants[0].role", or a query parameter), empty when none is.
	Field string `json:"field,omitempty"`
}

// Error returns the message.
func (e *APIError) Error() string { return e.Message }

// List is the envelope of every list answer: {"items": [...],
// "next_page_token": "..."}. Items is never null (an empty list is []).
// NextPageToken, when set, is passed back as ?page_token= for the next
// page (keyset pagination, limit 1..1000, default 100); it is omitted on
// the last page. Event lists set it to the last seq (read it back as
// ?after=).
type List[T any] struct {
	// Items are the page's objects, in the list's order.
	Items []T `json:"items"`
	// NextPageToken is an opaque cursor; empty on the last page.
	NextPageToken string `json:"next_page_token,omitempty"`
}

// ServerVersion is the answer of GET /v1/version (no token needed).
type ServerVersion struct {
	// API is the API version the server speaks: "v1".
	API string `json:"api"`
	// Version is the server's build version (git describe).
	Version string `json:"version"`
}
