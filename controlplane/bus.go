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
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"

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

// BatchHandler processes several events of one topic in the given order,
// in one call; the i-th error is the i-th event's result, with Handler's
// meaning.
type BatchHandler func(ctx context.Context, events [][]byte) []error

// Bus publishes events to topics.
type Bus interface {
	Publish(ctx context.Context, topic string, event []byte) error
}

// BatchPublisher is a Bus that publishes several events in one call, in
// order. The i-th error is the i-th event's result, as Publish would
// return it.
type BatchPublisher interface {
	PublishBatch(ctx context.Context, topic string, events [][]byte) []error
}

// PublishAll publishes events in order, in one call when b is a
// BatchPublisher, else one by one; after the first failure the remaining
// events are not attempted and get the same error (so a retry keeps their
// order). The i-th error is the i-th event's result.
func PublishAll(ctx context.Context, b Bus, topic string, events [][]byte) []error {
	if bp, ok := b.(BatchPublisher); ok {
		return bp.PublishBatch(ctx, topic, events)
	}
	errs := make([]error, len(events))
	for i, ev := range events {
		if errs[i] = b.Publish(ctx, topic, ev); errs[i] != nil && !errors.Is(errs[i], ErrMalformed) {
			for j := i + 1; j < len(events); j++ {
				errs[j] = fmt.Errorf("not published after an earlier event failed: %w", errs[i])
			}
			break
		}
	}
	return errs
}

// EmbeddedBus delivers each published event synchronously to the handlers
// subscribed to its topic, in the publisher's goroutine: Publish returns
// only once every handler acked (or dropped) it, so a publisher that gets
// an error retries, exactly as with Dapr's at-least-once delivery.
type EmbeddedBus struct {
	mu       sync.RWMutex
	handlers map[string][]BatchHandler
}

// NewEmbeddedBus returns a bus with no subscribers.
func NewEmbeddedBus() *EmbeddedBus { return &EmbeddedBus{handlers: map[string][]BatchHandler{}} }

// Subscribe adds h to topic; a batch is handed to h one event at a time.
func (b *EmbeddedBus) Subscribe(topic string, h Handler) {
	b.SubscribeBatch(topic, func(ctx context.Context, events [][]byte) []error {
		errs := make([]error, len(events))
		for i, ev := range events {
			errs[i] = h(ctx, ev)
		}
		return errs
	})
}

// SubscribeBatch adds h to topic; PublishBatch hands it whole batches.
func (b *EmbeddedBus) SubscribeBatch(topic string, h BatchHandler) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handlers[topic] = append(b.handlers[topic], h)
}

// Publish delivers event to topic's handlers.
func (b *EmbeddedBus) Publish(ctx context.Context, topic string, event []byte) error {
	return b.PublishBatch(ctx, topic, [][]byte{event})[0]
}

// PublishBatch delivers events, in order, to topic's handlers. An event a
// handler dropped as malformed gets that error; otherwise its error joins
// the handlers' other errors (nil: every handler acked it).
func (b *EmbeddedBus) PublishBatch(ctx context.Context, topic string, events [][]byte) []error {
	b.mu.RLock()
	hs := b.handlers[topic]
	b.mu.RUnlock()
	out := make([]error, len(events))
	malformed := make([]bool, len(events))
	others := make([][]error, len(events))
	for _, h := range hs {
		for i, err := range h(ctx, events) {
			switch {
			case err == nil:
			case errors.Is(err, ErrMalformed):
				if !malformed[i] {
					malformed[i], out[i] = true, err
				}
			default:
				others[i] = append(others[i], err)
			}
		}
	}
	for i := range out {
		if !malformed[i] {
			out[i] = errors.Join(others[i]...)
		}
	}
	return out
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

// EventBelongsTo reports whether raw is an agent event of cluster
// namespace/project/cluster: its source names namespace/cluster and its
// data's project (absent: "default") is project. Ingest refuses events for
// other clusters, including a same-named cluster of another project.
func EventBelongsTo(raw []byte, namespace, project, cluster string) bool {
	// A light read of two members (the other values are skipped, not
	// decoded): the consumer's strict decoding rejects anything malformed
	// (a duplicated member included), so this check need not repeat it.
	dec := jsontext.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return true // malformed: let the consumer reject it with a reason
	}
	sourceOK, haveSource := false, false
	dataProject := "default"
	for dec.PeekKind() == '"' {
		name, err := dec.ReadToken()
		if err != nil {
			return true
		}
		switch name.String() {
		case "source":
			v, err := dec.ReadToken()
			if err != nil || v.Kind() != '"' {
				return true
			}
			prefix := proto.AgentSourcePrefix + namespace + "/" + cluster + "/"
			src := v.String()
			haveSource, sourceOK = true, len(src) > len(prefix) && src[:len(prefix)] == prefix
		case "data":
			p, ok := memberString(dec, "project")
			if !ok {
				return true
			}
			if p != "" {
				dataProject = p
			}
		default:
			if dec.SkipValue() != nil {
				return true
			}
		}
	}
	return haveSource && sourceOK && dataProject == project
}

// memberString reads the next value from dec, which should be an object,
// and returns its string member name ("" when absent). ok is false when
// the value is not an object or not well-formed.
func memberString(dec *jsontext.Decoder, name string) (string, bool) {
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return "", false
	}
	out := ""
	for dec.PeekKind() == '"' {
		k, err := dec.ReadToken()
		if err != nil {
			return "", false
		}
		if k.String() == name && dec.PeekKind() == '"' {
			v, err := dec.ReadToken()
			if err != nil {
				return "", false
			}
			out = v.String()
			continue
		}
		if dec.SkipValue() != nil {
			return "", false
		}
	}
	if _, err := dec.ReadToken(); err != nil { // the closing '}'
		return "", false
	}
	return out, true
}
