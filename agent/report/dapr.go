package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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
type DaprTransport struct {
	client dapr.Client
	pubsub string
	topic  string
}

// NewDaprTransport connects to the Dapr sidecar at grpcAddress ("host:port",
// or "unix://" path) and returns a transport publishing to topic of the
// pub/sub component pubsubName. The connection attempt blocks until the
// sidecar answers, for at most DAPR_CLIENT_TIMEOUT_SECONDS (default 5 s) or
// until ctx is done. The DAPR_API_TOKEN environment variable, when set, is
// sent with every call. Errors: an empty argument, or no sidecar reachable.
func NewDaprTransport(ctx context.Context, grpcAddress, pubsubName, topic string) (*DaprTransport, error) {
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
	c, err := dapr.NewClientWithAddressContext(ctx, grpcAddress)
	if err != nil {
		return nil, fmt.Errorf("connect to dapr sidecar at %s: %w", grpcAddress, err)
	}
	return &DaprTransport{client: c, pubsub: pubsubName, topic: topic}, nil
}

// Send publishes e (see DaprTransport for how errors are classified).
func (t *DaprTransport) Send(ctx context.Context, e proto.Envelope) error {
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("%w: encode event %s: %w", ErrPermanent, e.ID, err)
	}
	err = t.client.PublishEvent(ctx, t.pubsub, t.topic, body,
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

// Close closes the connection to the sidecar. It returns nil.
func (t *DaprTransport) Close() error {
	t.client.Close()
	return nil
}
