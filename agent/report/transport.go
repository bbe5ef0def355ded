// Package report delivers the agent's events (proto.Envelope) to the control
// plane: a bounded in-memory queue that never blocks the HA loop, one
// delivery goroutine that keeps events in order and retries with
// exponential backoff, and transports for HTTP and Dapr pub/sub.
//
// Delivery is at least once: a transport that times out after the receiver
// accepted an event makes the Reporter send it again, with the same id.
package report

import (
	"context"
	"errors"

	"github.com/dbpilot/dbpilot/proto"
)

// ErrPermanent marks a delivery failure that retrying cannot fix (the
// receiver refused the event). Transports wrap it; the Reporter drops such an
// event, logs it at ERROR and counts it in Stats.Dropped and Stats.Rejected.
// Every other error from Transport.Send is retried.
var ErrPermanent = errors.New("permanent delivery failure")

// Transport delivers one event.
type Transport interface {
	// Send delivers e once, within ctx. It returns nil when the receiver
	// accepted the event, an error wrapping ErrPermanent when it refused it
	// for good, and any other error when a later attempt may succeed.
	Send(ctx context.Context, e proto.Envelope) error
	// Close releases the transport's connections. Send must not be called
	// after Close.
	Close() error
}

// NopTransport accepts and discards every event; it is used when no
// reporting endpoint is configured. The Reporter's DEBUG "event delivered"
// line is the only trace an event leaves.
type NopTransport struct{}

// NewNopTransport returns a transport that discards every event.
func NewNopTransport() NopTransport { return NopTransport{} }

// Send discards e and returns nil.
func (NopTransport) Send(context.Context, proto.Envelope) error { return nil }

// Close does nothing and returns nil.
func (NopTransport) Close() error { return nil }
