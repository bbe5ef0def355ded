// Package controlplane is dbpilot's control plane: the event consumers that
// project agent events into the store, the provisioning workflows of the
// Infrastructure Service, the etcd desired-state writer and the wiring of
// the server (see docs/controlplane.md).
//
// Services talk through events: the API publishes
// TypeOperationRequested on TopicControlPlane, the workflow engine consumes
// it; agents publish on TopicAgentEvents, the projection consumes them. The
// same handlers are subscribed to a Dapr sidecar (DaprBus) or called in
// process (EmbeddedBus).
package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dbpilot/dbpilot/proto"
)

// Topics.
const (
	// TopicAgentEvents carries the agents' events (proto types).
	TopicAgentEvents = "dbpilot-events"
	// TopicControlPlane carries events between control-plane services.
	TopicControlPlane = "dbpilot-controlplane"
)

// TypeOperationRequested asks the Infrastructure Service to run (or
// resume) an operation; its data is OperationRequested.
const TypeOperationRequested = "io.dbpilot.controlplane.operation_requested.v1"

// OperationRequested is the payload of TypeOperationRequested.
type OperationRequested struct {
	OperationID string `json:"operation_id"`
	Kind        string `json:"kind"`
	Namespace   string `json:"namespace"`
	ClusterID   string `json:"cluster_id"`
}

// ErrMalformed marks an event that can never be processed: the consumer
// drops it (Dapr: DROP status) instead of asking for a redelivery.
var ErrMalformed = errors.New("malformed event")

// Handler processes one structured-mode CloudEvent. A nil error acks it;
// an error wrapping ErrMalformed drops it; any other error asks for
// redelivery.
type Handler func(ctx context.Context, event []byte) error

// Bus publishes events to topics.
type Bus interface {
	Publish(ctx context.Context, topic string, event []byte) error
}

// EmbeddedBus delivers each published event synchronously to the handlers
// subscribed to its topic, in the publisher's goroutine: Publish returns
// only once every handler acked (or dropped) it, so a publisher that gets
// an error retries, exactly as with Dapr's at-least-once delivery.
type EmbeddedBus struct {
	mu       sync.RWMutex
	handlers map[string][]Handler
}

// NewEmbeddedBus returns a bus with no subscribers.
func NewEmbeddedBus() *EmbeddedBus { return &EmbeddedBus{handlers: map[string][]Handler{}} }

// Subscribe adds h to topic.
func (b *EmbeddedBus) Subscribe(topic string, h Handler) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handlers[topic] = append(b.handlers[topic], h)
}

// Publish delivers event to topic's handlers.
func (b *EmbeddedBus) Publish(ctx context.Context, topic string, event []byte) error {
	b.mu.RLock()
	hs := b.handlers[topic]
	b.mu.RUnlock()
	var errs []error
	for _, h := range hs {
		if err := h(ctx, event); err != nil && !errors.Is(err, ErrMalformed) {
			errs = append(errs, err)
		} else if err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// newControlEvent builds a control-plane CloudEvent. It reuses
// proto.Envelope (same wire shape, same strict decoder) with source
// "dbpilot-server/{instance}" and term/revision 0.
func newControlEvent(instance, typ string, data any) ([]byte, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	e := proto.Envelope{
		SpecVersion: proto.SpecVersion, ID: newID("ev"), Source: "dbpilot-server/" + instance, Type: typ,
		Time: time.Now().UTC(), DataContentType: proto.DataContentType, Data: raw,
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", typ, err)
	}
	return b, nil
}

// decodeControlEvent strictly parses a control-plane event of type typ
// into out.
func decodeControlEvent(b []byte, typ string, out any) (proto.Envelope, error) {
	var e proto.Envelope
	if err := e.UnmarshalJSON(b); err != nil {
		return e, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if e.Type != typ || e.ID == "" {
		return e, fmt.Errorf("%w: type %q id %q on the control-plane topic", ErrMalformed, e.Type, e.ID)
	}
	if err := strictJSON(e.Data, out); err != nil {
		return e, fmt.Errorf("%w: data: %w", ErrMalformed, err)
	}
	return e, nil
}

// NewOperationRequested builds a TypeOperationRequested event.
func NewOperationRequested(instance string, req OperationRequested) ([]byte, error) {
	return newControlEvent(instance, TypeOperationRequested, req)
}

// EventBelongsTo reports whether raw is an agent event whose source names
// namespace/cluster (ingest refuses events for other clusters).
func EventBelongsTo(raw []byte, namespace, cluster string) bool {
	// A light read of one attribute: the consumer's strict decoding rejects
	// anything malformed (a duplicated "source" included), so this check
	// need not repeat it.
	var e struct {
		Source string `json:"source"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return true // malformed: let the consumer reject it with a reason
	}
	prefix := proto.AgentSourcePrefix + namespace + "/" + cluster + "/"
	return len(e.Source) > len(prefix) && e.Source[:len(prefix)] == prefix
}
