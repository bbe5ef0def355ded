package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dbpilot/dbpilot/proto"
)

// maxErrorBody is how much of a refusal's response body is quoted in the
// error, in bytes.
const maxErrorBody = 256

// maxAnswer is how much of an answer is read for a batch result, in bytes.
const maxAnswer = 256 << 10

// HTTPTransport POSTs each event as a structured-mode CloudEvent
// (Content-Type: application/cloudevents+json) to one URL, or several as
// one batch (application/cloudevents-batch+json, SendBatch). It is a
// BatchTransport.
//
// A 2xx response means delivered. A 4xx response other than 408 (Request
// Timeout) and 429 (Too Many Requests) means the receiver refused the event:
// Send returns an error wrapping ErrPermanent. Any other response, and every
// network error, is retryable.
type HTTPTransport struct {
	url      string // as given
	redacted string // for errors and logs: without a password
	urlErr   error  // non-nil when url does not parse; every Send fails permanently
	headers  map[string]string
	client   *http.Client
}

// NewHTTPTransport returns a transport posting to url. timeout bounds each
// request (connection, headers and body; <= 0 leaves it to the Send
// context). headers are added to every request (for example Authorization);
// the map is copied. A url that does not parse as an absolute http(s) URL is
// not an error here: every Send then fails with ErrPermanent naming it.
func NewHTTPTransport(url string, timeout time.Duration, headers map[string]string) *HTTPTransport {
	t := &HTTPTransport{
		url:     url,
		headers: make(map[string]string, len(headers)),
		client:  &http.Client{Transport: newHTTPRoundTripper()},
	}
	if timeout > 0 {
		t.client.Timeout = timeout
	}
	for k, v := range headers {
		t.headers[k] = v
	}
	t.redacted, t.urlErr = checkURL(url)
	return t
}

// newHTTPRoundTripper returns a connection pool owned by one transport, so
// that Close does not touch other users of http.DefaultTransport.
func newHTTPRoundTripper() http.RoundTripper {
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		return dt.Clone()
	}
	return &http.Transport{Proxy: http.ProxyFromEnvironment}
}

func checkURL(raw string) (redacted string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)", fmt.Errorf("report url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return u.Redacted(), fmt.Errorf("report url %q: must be an absolute http or https URL", u.Redacted())
	}
	return u.Redacted(), nil
}

// Send POSTs e and classifies the outcome (see HTTPTransport).
func (t *HTTPTransport) Send(ctx context.Context, e proto.Envelope) error {
	if t.urlErr != nil {
		return fmt.Errorf("%w: post event %s: %w", ErrPermanent, e.ID, t.urlErr)
	}
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("%w: encode event %s: %w", ErrPermanent, e.ID, err)
	}
	code, status, answer, err := t.post(ctx, proto.MediaType, body)
	if err != nil {
		return fmt.Errorf("post event %s to %s: %w", e.ID, t.redacted, err)
	}
	if code >= 200 && code < 300 {
		return nil
	}
	return classify(code, fmt.Sprintf("post event %s to %s: %s", e.ID, t.redacted, status), answer)
}

// SendBatch POSTs es as one batch (Content-Type
// application/cloudevents-batch+json: a JSON array of structured-mode
// events) and classifies the outcome as Send does; a 2xx answer listing
// refused events (proto.BatchResult) gives a *RejectedError for those.
func (t *HTTPTransport) SendBatch(ctx context.Context, es []proto.Envelope) error {
	what := fmt.Sprintf("post %d events (%s…)", len(es), es[0].ID)
	if t.urlErr != nil {
		return fmt.Errorf("%w: %s: %w", ErrPermanent, what, t.urlErr)
	}
	body, err := json.Marshal(es)
	if err != nil {
		return fmt.Errorf("%w: encode events: %w", ErrPermanent, err)
	}
	code, status, answer, err := t.post(ctx, proto.BatchMediaType, body)
	if err != nil {
		return fmt.Errorf("%s to %s: %w", what, t.redacted, err)
	}
	if code >= 200 && code < 300 {
		var res proto.BatchResult
		if len(bytes.TrimSpace(answer)) == 0 || json.Unmarshal(answer, &res) != nil || len(res.Rejected) == 0 {
			return nil
		}
		rej := &RejectedError{Reasons: make(map[int]string, len(res.Rejected))}
		for _, x := range res.Rejected {
			if x.Index >= 0 && x.Index < len(es) {
				rej.Reasons[x.Index] = x.Error
			}
		}
		if len(rej.Reasons) == 0 {
			return nil
		}
		return rej
	}
	return classify(code, fmt.Sprintf("%s to %s: %s", what, t.redacted, status), answer)
}

// post sends one request and returns the status and up to maxAnswer bytes
// of the answer (the rest is drained so the connection is reused).
func (t *HTTPTransport) post(ctx context.Context, contentType string, body []byte) (code int, status string, answer []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	for k, v := range t.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := t.client.Do(req)
	if err != nil {
		// *url.Error repeats the URL unredacted; report ours.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return 0, "", nil, err
	}
	answer, _ = io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Status, answer, nil
}

// classify turns a non-2xx answer into Send's error classes: 408 and 429
// retryable, other 4xx permanent, the rest retryable.
func classify(code int, what string, answer []byte) error {
	snippet := answer
	if len(snippet) > maxErrorBody {
		snippet = snippet[:maxErrorBody]
	}
	switch {
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		return errors.New(what)
	case code >= 400 && code < 500:
		return fmt.Errorf("%w: %s: %s", ErrPermanent, what, oneLine(snippet))
	default:
		return fmt.Errorf("%s: %s", what, oneLine(snippet))
	}
}

// Close closes the transport's idle connections. It returns nil.
func (t *HTTPTransport) Close() error {
	t.client.CloseIdleConnections()
	return nil
}

// oneLine makes a response body fit in a log line.
func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if s == "" {
		return "(empty body)"
	}
	return s
}
