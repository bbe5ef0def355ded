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
	"fmt"
	"slices"
	"strings"

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

// BatchTransport is a Transport that can also deliver several events in
// one call (one request); the Reporter then sends up to its batch size of
// queued events at a time.
type BatchTransport interface {
	Transport
	// SendBatch delivers es, in order, once, within ctx. It returns nil
	// when the receiver accepted every event; a *RejectedError when it
	// refused some for good and accepted the others; any other error
	// wrapping ErrPermanent when it refused the whole batch for good; and
	// any other error when a later attempt of the whole batch may succeed.
	SendBatch(ctx context.Context, es []proto.Envelope) error
}

// RejectedError reports the events of a batch the receiver refused for
// good; the batch's other events were accepted. It wraps ErrPermanent.
type RejectedError struct {
	// Reasons maps an event's position in the batch (from 0) to the
	// receiver's reason.
	Reasons map[int]string
}

// Error lists the refused positions and reasons.
func (e *RejectedError) Error() string {
	idx := make([]int, 0, len(e.Reasons))
	for i := range e.Reasons {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	parts := make([]string, len(idx))
	for k, i := range idx {
		parts[k] = fmt.Sprintf("event %d: %s", i, e.Reasons[i])
	}
	return fmt.Sprintf("%d events of the batch refused: %s", len(idx), strings.Join(parts, "; "))
}

// Unwrap returns ErrPermanent.
func (e *RejectedError) Unwrap() error { return ErrPermanent }

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
