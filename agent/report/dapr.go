package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dbpilot/dbpilot/proto"
)

// DaprTransport publishes each event to a Dapr pub/sub topic through the
// sidecar's gRPC API.
//
// The event is published as the raw structured-mode CloudEvent JSON with
// data content type application/cloudevents+json. Dapr then keeps our id,
// source, type, time, data and the dbpilotterm/dbpilotrevision extensions
// and only adds its own attributes (topic, pubsubname, traceid, ...). The
// rawPayload metadata is deliberately not set: it would make subscribers
// receive the event wrapped in a second, Dapr-generated CloudEvent.
//
// Errors: InvalidArgument (malformed event, unknown pubsub component),
// PermissionDenied (topic not allowed for this app id) and Unimplemented
// wrap ErrPermanent, since retrying the same event cannot succeed before an
// operator acts; they are logged per event and counted as dropped. Every
// other error (sidecar unreachable, broker failure, deadline) is retryable.
//
// The sidecar may be down when the transport is made, or restart later: the
// connection is made by the first Send that finds none (and kept; gRPC
// reconnects it by itself), so a missing sidecar only makes Send fail with a
// retryable error and the Reporter queue the events until it is back.
type DaprTransport struct {
	address string
	pubsub  string
	topic   string

	mu     sync.Mutex // guards client and closed; held while connecting
	client dapr.Client
	closed bool
}

// NewDaprTransport returns a transport publishing to topic of the pub/sub
// component pubsubName through the Dapr sidecar at grpcAddress ("host:port",
// or "unix://" path). It does not connect: it never blocks and does not fail
// when the sidecar is down (see DaprTransport); ctx is not used and is kept
// for compatibility. Each connection attempt (in Send) lasts at most
// DAPR_CLIENT_TIMEOUT_SECONDS (default 5 s) or Send's context. The
// DAPR_API_TOKEN environment variable, when set, is sent with every call.
// Errors: an empty argument.
func NewDaprTransport(_ context.Context, grpcAddress, pubsubName, topic string) (*DaprTransport, error) {
	var errs []error
	if grpcAddress == "" {
		errs = append(errs, errors.New("dapr grpc address: required"))
	}
	if pubsubName == "" {
		errs = append(errs, errors.New("dapr pubsub name: required"))
	}
	if topic == "" {
		errs = append(errs, errors.New("dapr topic: required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new dapr transport: %w", err)
	}
	return &DaprTransport{address: grpcAddress, pubsub: pubsubName, topic: topic}, nil
}

// errClosed is returned by Send after Close.
var errClosed = errors.New("dapr transport closed")

// connect returns the client, connecting first if there is none. Errors:
// the sidecar did not answer within the SDK's timeout or ctx (retryable), or
// the transport is closed (permanent).
func (t *DaprTransport) connect(ctx context.Context) (dapr.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("%w: %w", ErrPermanent, errClosed)
	}
	if t.client != nil {
		return t.client, nil
	}
	c, err := dapr.NewClientWithAddressContext(ctx, t.address)
	if err != nil {
		return nil, fmt.Errorf("connect to dapr sidecar at %s: %w", t.address, err)
	}
	t.client = c
	return c, nil
}

// Send publishes e (see DaprTransport for how errors are classified).
func (t *DaprTransport) Send(ctx context.Context, e proto.Envelope) error {
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("%w: encode event %s: %w", ErrPermanent, e.ID, err)
	}
	c, err := t.connect(ctx)
	if err != nil {
		return fmt.Errorf("publish event %s: %w", e.ID, err)
	}
	err = c.PublishEvent(ctx, t.pubsub, t.topic, body,
		dapr.PublishEventWithContentType(proto.MediaType))
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unimplemented:
		return fmt.Errorf("%w: publish event %s to %s/%s: %w", ErrPermanent, e.ID, t.pubsub, t.topic, err)
	default:
		return fmt.Errorf("publish event %s to %s/%s: %w", e.ID, t.pubsub, t.topic, err)
	}
}

// Close closes the connection to the sidecar, if any; later Sends fail
// permanently. It returns nil.
func (t *DaprTransport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil {
		t.client.Close()
		t.client = nil
	}
	t.closed = true
	return nil
}
