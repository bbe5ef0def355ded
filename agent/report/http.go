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

// HTTPTransport POSTs each event as a structured-mode CloudEvent
// (Content-Type: application/cloudevents+json) to one URL.
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: post event %s to %s: %w", ErrPermanent, e.ID, t.redacted, err)
	}
	for k, v := range t.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", proto.MediaType)
	resp, err := t.client.Do(req)
	if err != nil {
		// *url.Error repeats the URL unredacted; report ours.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("post event %s to %s: %w", e.ID, t.redacted, err)
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	_ = resp.Body.Close()

	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		return fmt.Errorf("post event %s to %s: %s", e.ID, t.redacted, resp.Status)
	case code >= 400 && code < 500:
		return fmt.Errorf("%w: post event %s to %s: %s: %s", ErrPermanent, e.ID, t.redacted, resp.Status, oneLine(snippet))
	default:
		return fmt.Errorf("post event %s to %s: %s: %s", e.ID, t.redacted, resp.Status, oneLine(snippet))
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
