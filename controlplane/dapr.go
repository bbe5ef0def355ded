package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/dapr/go-sdk/service/common"
	daprhttp "github.com/dapr/go-sdk/service/http"
	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/proto"
)

// DaprBus publishes events to a Dapr pub/sub component through the
// server's sidecar (gRPC API, go-sdk client). Events are sent as the
// structured-mode CloudEvent itself (content type proto.MediaType), so Dapr
// keeps their id, type, time and extensions and subscribers receive the
// same bytes the embedded bus would deliver, plus Dapr's own attributes
// (topic, pubsubname, trace ids), which the decoders tolerate.
type DaprBus struct {
	client dapr.Client
	pubsub string
}

// NewDaprBus connects to the sidecar at grpcAddress ("host:port") and
// publishes to the pub/sub component pubsub. It blocks until the sidecar
// answers, retrying until ctx ends (each attempt is bounded by the go-sdk's
// DAPR_CLIENT_TIMEOUT_SECONDS, default 5 s).
func NewDaprBus(ctx context.Context, grpcAddress, pubsub string) (*DaprBus, error) {
	if grpcAddress == "" || pubsub == "" {
		return nil, errors.New("dapr bus: grpc_address and pubsub are required")
	}
	for {
		c, err := dapr.NewClientWithAddressContext(ctx, grpcAddress)
		if err == nil {
			return &DaprBus{client: c, pubsub: pubsub}, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dapr bus: connect to sidecar at %s: %w", grpcAddress, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Publish hands event to the sidecar. A nil error means the broker
// accepted it (Dapr then delivers it at least once to every subscriber).
func (b *DaprBus) Publish(ctx context.Context, topic string, event []byte) error {
	if err := b.client.PublishEvent(ctx, b.pubsub, topic, event, dapr.PublishEventWithContentType(proto.MediaType)); err != nil {
		return fmt.Errorf("publish to %s/%s: %w", b.pubsub, topic, err)
	}
	return nil
}

// InvokeBinding invokes the Dapr output binding name with operation
// (e.g. "create", "post"), data and metadata through the sidecar
// (go-sdk client.InvokeOutputBinding). Errors are the sidecar's: an
// unknown binding, a refused operation, the component's failure.
func (b *DaprBus) InvokeBinding(ctx context.Context, name, operation string, data []byte, metadata map[string]string) error {
	return b.client.InvokeOutputBinding(ctx, &dapr.InvokeBindingRequest{Name: name, Operation: operation, Data: data, Metadata: metadata})
}

// Close closes the sidecar connection.
func (b *DaprBus) Close() { b.client.Close() }

type rawBodyKey struct{}

// DaprSubscriber serves the app side of a Dapr sidecar with the go-sdk
// HTTP service: it answers /dapr/subscribe with one topic subscription per
// Subscribe call and delivers each event to its Handler. The Handler gets
// the CloudEvent exactly as Dapr posted it (the go-sdk's TopicEvent drops
// the time and the dbpilotterm/dbpilotrevision extensions, so a middleware
// keeps the raw body). Handler results map to Dapr statuses: nil →
// SUCCESS, ErrMalformed → DROP, any other error → RETRY (Dapr redelivers).
type DaprSubscriber struct {
	pubsub string
	addr   string
	svc    common.Service
	log    *zap.Logger
	served chan error
}

// NewDaprSubscriber returns a subscriber for the pub/sub component pubsub
// that will listen on address ("host:port"; daprd's --app-port must point
// at it). Call Subscribe for each topic, then Start.
func NewDaprSubscriber(address, pubsub string, log *zap.Logger) *DaprSubscriber {
	mux := chi.NewRouter()
	mux.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/events/") && !daprDeliveryMediaType(r.Header.Get("Content-Type")) {
				http.Error(w, "Content-Type must be "+proto.MediaType+" (Dapr's pub/sub delivery)", http.StatusUnsupportedMediaType)
				return
			}
			if r.Method == http.MethodPost && r.Body != nil {
				body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
				r = r.WithContext(context.WithValue(r.Context(), rawBodyKey{}, body))
			}
			next.ServeHTTP(w, r)
		})
	})
	return &DaprSubscriber{pubsub: pubsub, addr: address, svc: daprhttp.NewServiceWithMux(address, mux),
		log: log.Named("dapr-subscriber")}
}

// daprDeliveryMediaType reports whether ct is what daprd sends a
// subscription route: application/cloudevents+json for one message (daprd's
// publishMessageHTTP), application/json or the CloudEvents batch type for
// bulk deliveries.
func daprDeliveryMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == proto.MediaType || mt == proto.BatchMediaType || mt == "application/json")
}

// Subscribe routes topic's events to h (route /events/{topic}).
func (s *DaprSubscriber) Subscribe(topic string, h Handler) error {
	sub := &common.Subscription{PubsubName: s.pubsub, Topic: topic, Route: "/events/" + topic}
	return s.svc.AddTopicEventHandler(sub, func(ctx context.Context, e *common.TopicEvent) (retry bool, err error) {
		raw, _ := ctx.Value(rawBodyKey{}).([]byte)
		if len(raw) == 0 {
			return false, fmt.Errorf("%w: empty delivery on %s", ErrMalformed, topic)
		}
		err = h(ctx, raw)
		switch {
		case err == nil:
			return false, nil
		case errors.Is(err, ErrMalformed):
			s.log.Warn("event dropped", zap.String("topic", topic), zap.String("id", e.ID), zap.Error(err))
			return false, err
		default:
			s.log.Info("event redelivery requested", zap.String("topic", topic), zap.String("id", e.ID), zap.Error(err))
			return true, err
		}
	})
}

// Start serves the subscriptions (and the go-sdk's /dapr/subscribe and
// /healthz) in the background and waits until the address accepts
// connections, at most 10 s.
func (s *DaprSubscriber) Start() error {
	s.served = make(chan error, 1)
	go func() { s.served <- s.svc.Start() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-s.served:
			return fmt.Errorf("dapr subscriber on %s: %w", s.addr, err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dapr subscriber on %s: not listening after 10s: %w", s.addr, err)
		}
	}
}

// Close stops serving (in-flight deliveries get 5 s; unacked events are
// redelivered by Dapr).
func (s *DaprSubscriber) Close() {
	if s.served == nil {
		return
	}
	_ = s.svc.GracefulStop()
	<-s.served
}
