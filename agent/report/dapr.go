package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/dbpilot/dbpilot/proto"
)

// DaprTransport publishes each event to a Dapr pub/sub topic through the
// sidecar's HTTP publish API (POST /v1.0/publish/{pubsub}/{topic}; see
// https://docs.dapr.io/reference/api/pubsub_api/), on net/http: the agent
// links neither the Dapr SDK nor gRPC for it.
//
// The body is the event itself in structured mode, sent with Content-Type
// application/cloudevents+json: Dapr then keeps our id, source, type, time,
// data and the dbpilotterm/dbpilotrevision extensions and only adds its own
// attributes (topic, pubsubname, traceid, ...). The rawPayload metadata is
// deliberately not set: it would make subscribers receive the event wrapped
// in a second, Dapr-made CloudEvent.
//
// Errors are classified by Dapr's error code (the errorCode of the JSON
// error body), else by HTTP status (see DaprPermanent): an unknown pub/sub
// component, a topic this app id may not publish to, and an event Dapr
// cannot read wrap ErrPermanent, since retrying the same event cannot
// succeed before an operator acts; the Reporter logs and counts them as
// dropped. Every other failure (sidecar unreachable or restarting, broker
// failure, deadline) is retryable.
//
// Nothing is dialled before the first Send, and a connection is opened by
// whichever Send finds none: a sidecar that is down when the agent starts,
// or restarts later, only makes Send fail with a retryable error, and the
// Reporter queues the events, in order, until it answers again.
type DaprTransport struct {
	http   *HTTPTransport
	closed atomic.Bool
}

// daprAPITokenHeader carries DAPR_API_TOKEN to the sidecar
// (https://docs.dapr.io/operations/security/api-token/).
const daprAPITokenHeader = "dapr-api-token"

// NewDaprTransport returns a transport publishing to topic of the pub/sub
// component pubsubName through the Dapr sidecar whose HTTP API listens on
// httpAddress ("host:port", daprd's --dapr-http-port, e.g.
// 127.0.0.1:3500). It does not connect, so it never blocks and does not fail
// when the sidecar is down (see DaprTransport). Each request is bounded by
// Send's context only (the Reporter's send timeout). The DAPR_API_TOKEN
// environment variable, when set, is sent with every request.
// Errors: an empty argument, or an address that is not host:port with a
// numeric port 1-65535; the error names each.
func NewDaprTransport(httpAddress, pubsubName, topic string) (*DaprTransport, error) {
	var errs []error
	if httpAddress == "" {
		errs = append(errs, errors.New("dapr http address: required; the sidecar's --dapr-http-port address, e.g. 127.0.0.1:3500"))
	} else if host, port, err := net.SplitHostPort(httpAddress); err != nil || host == "" || !validPort(port) {
		errs = append(errs, fmt.Errorf("dapr http address %q: must be host:port with a port 1-65535, e.g. 127.0.0.1:3500", httpAddress))
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
	u := (&url.URL{Scheme: "http", Host: httpAddress, Path: "/v1.0/publish/" + pubsubName + "/" + topic}).String()
	var headers map[string]string
	if tok := os.Getenv("DAPR_API_TOKEN"); tok != "" {
		headers = map[string]string{daprAPITokenHeader: tok}
	}
	h := NewHTTPTransport(u, 0, headers)
	// The sidecar is local (or at least addressed directly): never send
	// its requests through an HTTP proxy from the environment.
	h.client.Transport.(*http.Transport).Proxy = nil
	return &DaprTransport{http: h}, nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536
}

// errClosed is returned by Send after Close.
var errClosed = errors.New("dapr transport closed")

// Send publishes e (see DaprTransport for how errors are classified).
func (t *DaprTransport) Send(ctx context.Context, e proto.Envelope) error {
	if t.closed.Load() {
		return fmt.Errorf("%w: publish event %s: %w", ErrPermanent, e.ID, errClosed)
	}
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("%w: encode event %s: %w", ErrPermanent, e.ID, err)
	}
	what := fmt.Sprintf("publish event %s to dapr %s", e.ID, t.http.redacted)
	code, status, answer, err := t.http.post(ctx, proto.MediaType, body)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if code >= 200 && code < 300 {
		return nil
	}
	errCode, msg := daprError(answer)
	detail := oneLine(answer)
	if errCode != "" {
		detail = errCode + ": " + msg
	}
	if DaprPermanent(code, errCode) {
		return fmt.Errorf("%w: %s: %s: %s", ErrPermanent, what, status, detail)
	}
	return fmt.Errorf("%s: %s: %s", what, status, detail)
}

// daprError reads Dapr's JSON error body ({"errorCode": ..., "message":
// ...}); both are "" when the body is not one.
func daprError(body []byte) (code, message string) {
	var e struct {
		ErrorCode string `json:"errorCode"`
		Message   string `json:"message"`
	}
	if json.Unmarshal(bytes.TrimSpace(body), &e) != nil {
		return "", ""
	}
	return e.ErrorCode, e.Message
}

// daprPermanentCodes are the Dapr error codes of a publish that cannot
// succeed on retry (daprd pkg/api/errors/pubsub.go, Dapr 1.14): the
// component is unknown or unnamed, the topic is empty or not allowed for
// this app id, or the event or its metadata cannot be read. Dapr returns
// ERR_PUBSUB_CLOUD_EVENTS_SER with HTTP 500, hence a list by code before
// the HTTP status.
var daprPermanentCodes = map[string]bool{
	"ERR_PUBSUB_NOT_FOUND":        true, // 404 unknown component; 400 topic not found
	"ERR_PUBSUB_EMPTY":            true, // 404
	"ERR_TOPIC_NAME_EMPTY":        true, // 404
	"ERR_PUBSUB_FORBIDDEN":        true, // 403 topic not allowed (scopes)
	"ERR_PUBSUB_CLOUD_EVENTS_SER": true, // 500 our body is not a CloudEvent Dapr can read
	"ERR_PUBSUB_EVENTS_SER":       true, // 400
	"ERR_PUBSUB_REQUEST_METADATA": true, // 400
}

// daprRetryableCodes are Dapr error codes that may clear without changing
// the event: the broker failed (ERR_PUBSUB_PUBLISH_MESSAGE, 500), or the
// sidecar has no pub/sub building block loaded yet
// (ERR_PUBSUB_NOT_CONFIGURED, 400).
var daprRetryableCodes = map[string]bool{
	"ERR_PUBSUB_PUBLISH_MESSAGE": true,
	"ERR_PUBSUB_NOT_CONFIGURED":  true,
}

// DaprPermanent reports whether a publish the sidecar answered with HTTP
// status code and Dapr error code errCode ("" when the body had none)
// failed for good: by errCode when Dapr gave a known one, else by status:
// 408 and 429 retryable, any other 4xx permanent (401: DAPR_API_TOKEN
// refused; 404 without a Dapr code: not a Dapr sidecar's HTTP port), 5xx
// and the rest retryable.
func DaprPermanent(code int, errCode string) bool {
	switch {
	case daprPermanentCodes[errCode]:
		return true
	case daprRetryableCodes[errCode]:
		return false
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		return false
	default:
		return code >= 400 && code < 500
	}
}

// Close closes the idle connection to the sidecar; later Sends fail with
// ErrPermanent. It returns nil.
func (t *DaprTransport) Close() error {
	t.closed.Store(true)
	return t.http.Close()
}
