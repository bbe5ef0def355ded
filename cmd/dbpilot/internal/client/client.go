// Package client is a small typed client of the dbpilot control plane's
// REST API (/v1). Every call takes a context first and returns either the
// decoded object or an *Error carrying the server's status, code, message
// and field. The wire types are package proto's (the server encodes the
// same ones); the objects returned here embed them and keep the JSON the
// server sent (Raw), so callers can print them verbatim.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dbpilot/dbpilot/proto"
)

// ErrNoServer is returned by New when no server URL is configured.
var ErrNoServer = errors.New("no server configured: run `dbpilot login --server URL`, or set DBPILOT_SERVER or --server")

// Error is an error response from the API: the HTTP status and the
// server's code, message and field ([proto.APIError]), and the request
// that failed.
type Error struct {
	proto.APIError
	// Method and Path are the request that failed.
	Method string
	Path   string
}

// Error returns the server's message with the HTTP status.
func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("%s (HTTP %d)", msg, e.Status)
}

// UnknownEndpoint reports whether the server does not serve the route at
// all (as opposed to a missing resource behind a known route).
func (e *Error) UnknownEndpoint() bool {
	return e.Status == http.StatusNotFound && strings.HasPrefix(e.Message, "no such endpoint")
}

// Client talks to one control plane with one bearer token.
type Client struct {
	base      string
	token     string
	http      *http.Client
	userAgent string
}

// New returns a client of the server at base (http://host:port) using
// token (may be empty for public endpoints).
func New(base, token, userAgent string) (*Client, error) {
	if base == "" {
		return nil, ErrNoServer
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q: must be an http:// or https:// URL", base)
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{}, userAgent: userAgent}, nil
}

// Server returns the base URL.
func (c *Client) Server() string { return c.base }

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	return req, nil
}

// do sends the request and returns the response body of a 2xx answer.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body any) ([]byte, error) {
	req, err := c.newRequest(ctx, method, path, q, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, c.base+path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, apiError(resp.StatusCode, method, path, raw)
	}
	return raw, nil
}

func apiError(status int, method, path string, raw []byte) *Error {
	e := &Error{Method: method, Path: path}
	if err := json.Unmarshal(raw, &e.APIError); err != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(raw))
		if e.Message == "" || len(e.Message) > 200 {
			e.Message = http.StatusText(status)
		}
	}
	e.Status = status
	return e
}

// rawSetter is implemented by *Object (embedded in every API object).
type rawSetter interface{ setRaw(json.RawMessage) }

// Object holds the JSON an API object arrived as.
type Object struct{ raw json.RawMessage }

func (o *Object) setRaw(b json.RawMessage) { o.raw = b }

// Raw returns the object exactly as the server sent it.
func (o Object) Raw() json.RawMessage { return o.raw }

func decode[T any, PT interface {
	*T
	rawSetter
}](raw []byte) (T, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode %s: %w", fmt.Sprintf("%T", v), err)
	}
	PT(&v).setRaw(append(json.RawMessage(nil), raw...))
	return v, nil
}

func get[T any, PT interface {
	*T
	rawSetter
}](ctx context.Context, c *Client, path string) (T, error) {
	raw, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		var zero T
		return zero, err
	}
	return decode[T, PT](raw)
}

func send[T any, PT interface {
	*T
	rawSetter
}](ctx context.Context, c *Client, method, path string, body any) (T, error) {
	raw, err := c.do(ctx, method, path, nil, body)
	if err != nil {
		var zero T
		return zero, err
	}
	return decode[T, PT](raw)
}

// list fetches every page of a list endpoint (items + next_page_token).
func list[T any, PT interface {
	*T
	rawSetter
}](ctx context.Context, c *Client, path string, q url.Values) ([]T, error) {
	if q == nil {
		q = url.Values{}
	}
	out := []T{}
	for {
		raw, err := c.do(ctx, http.MethodGet, path, q, nil)
		if err != nil {
			return nil, err
		}
		var page proto.List[json.RawMessage]
		if err := json.Unmarshal(raw, &page); err != nil {
			return nil, fmt.Errorf("decode list %s: %w", path, err)
		}
		for _, it := range page.Items {
			v, err := decode[T, PT](it)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		if page.NextPageToken == "" || len(page.Items) == 0 {
			return out, nil
		}
		q.Set("page_token", page.NextPageToken)
	}
}

func nsPath(ns string, parts ...string) string {
	p := "/v1/namespaces/" + url.PathEscape(ns)
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// ---- server ----

// ServerVersion is GET /v1/version.
type ServerVersion struct {
	proto.ServerVersion
	Object
}

// Version returns the server's version (no token needed).
func (c *Client) Version(ctx context.Context) (ServerVersion, error) {
	return get[ServerVersion](ctx, c, "/v1/version")
}

// WhoAmI is GET /v1/whoami: the caller's token.
type WhoAmI struct {
	proto.WhoAmI
	Object
}

// WhoAmI checks the token and returns who it belongs to.
func (c *Client) WhoAmI(ctx context.Context) (WhoAmI, error) {
	return get[WhoAmI](ctx, c, "/v1/whoami")
}

// ---- clusters ----

// Member is one member of a cluster (GET …/nodes).
type Member struct {
	proto.Member
	Object
}

// Cluster is a database cluster.
type Cluster struct {
	proto.Cluster
	Object
}

// Operation is a long-running operation; poll it until Done.
type Operation struct {
	proto.Operation
	Object
}

// ListClusters lists the clusters of ns (every page).
func (c *Client) ListClusters(ctx context.Context, ns string) ([]Cluster, error) {
	return list[Cluster](ctx, c, nsPath(ns, "clusters"), nil)
}

// GetCluster returns a cluster by name or id, with its members.
func (c *Client) GetCluster(ctx context.Context, ns, ref string) (Cluster, error) {
	return get[Cluster](ctx, c, nsPath(ns, "clusters", ref))
}

// CreateCluster starts provisioning a cluster.
func (c *Client) CreateCluster(ctx context.Context, ns string, req proto.ClusterCreate) (Operation, error) {
	return send[Operation](ctx, c, http.MethodPost, nsPath(ns, "clusters"), req)
}

// DeleteCluster starts deleting a cluster.
func (c *Client) DeleteCluster(ctx context.Context, ns, ref string) (Operation, error) {
	return send[Operation](ctx, c, http.MethodDelete, nsPath(ns, "clusters", ref), nil)
}

// ScaleCluster starts changing the number of nodes.
func (c *Client) ScaleCluster(ctx context.Context, ns, ref string, replicas int) (Operation, error) {
	return send[Operation](ctx, c, http.MethodPost, nsPath(ns, "clusters", ref, "scale"), proto.ScaleRequest{Replicas: &replicas})
}

// UpdateCluster starts changing settings of a live cluster (an operation of
// kind update).
func (c *Client) UpdateCluster(ctx context.Context, ns, ref string, req proto.ClusterUpdate) (Operation, error) {
	return send[Operation](ctx, c, http.MethodPatch, nsPath(ns, "clusters", ref), req)
}

// Switchover starts a planned switchover.
func (c *Client) Switchover(ctx context.Context, ns, ref string, req proto.SwitchoverRequest) (Operation, error) {
	return send[Operation](ctx, c, http.MethodPost, nsPath(ns, "clusters", ref, "switchover"), req)
}

// Failover starts a manual failover to req.To.
func (c *Client) Failover(ctx context.Context, ns, ref string, req proto.SwitchoverRequest) (Operation, error) {
	return send[Operation](ctx, c, http.MethodPost, nsPath(ns, "clusters", ref, "failover"), req)
}

// Restart starts a rolling restart (replicas first, then the primary).
func (c *Client) Restart(ctx context.Context, ns, ref string) (Operation, error) {
	return send[Operation](ctx, c, http.MethodPost, nsPath(ns, "clusters", ref, "restart"), struct{}{})
}

// ListNodes lists a cluster's members.
func (c *Client) ListNodes(ctx context.Context, ns, ref string) ([]Member, error) {
	return list[Member](ctx, c, nsPath(ns, "clusters", ref, "nodes"), nil)
}

// StatementStats is the current primary's top statements
// (pg_stat_statements), as GET …/clusters/{cluster}/top answers.
type StatementStats struct {
	proto.StatementStats
	Object
}

// Sessions is the current primary's client sessions (pg_stat_activity),
// as GET …/clusters/{cluster}/sessions answers.
type Sessions struct {
	proto.Sessions
	Object
}

// TopStatements returns the primary's top limit statements by total time
// (limit <= 0: the server's default, 20; at most 100).
func (c *Client) TopStatements(ctx context.Context, ns, ref string, limit int) (StatementStats, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	raw, err := c.do(ctx, http.MethodGet, nsPath(ns, "clusters", ref, "top"), q, nil)
	if err != nil {
		return StatementStats{}, err
	}
	return decode[StatementStats](raw)
}

// ClusterSessions returns the primary's client sessions, longest first.
func (c *Client) ClusterSessions(ctx context.Context, ns, ref string) (Sessions, error) {
	return get[Sessions](ctx, c, nsPath(ns, "clusters", ref, "sessions"))
}

// GetOperation returns an operation.
func (c *Client) GetOperation(ctx context.Context, ns, id string) (Operation, error) {
	return get[Operation](ctx, c, nsPath(ns, "operations", id))
}

// ---- backups (issue 4's endpoints; a server without them answers 404) ----

// Backup is a backup record of a cluster.
type Backup struct {
	proto.Backup
	Object
}

// ListBackups lists a cluster's backups.
func (c *Client) ListBackups(ctx context.Context, ns, ref string) ([]Backup, error) {
	return list[Backup](ctx, c, nsPath(ns, "clusters", ref, "backups"), nil)
}

// RunBackup starts a backup now.
func (c *Client) RunBackup(ctx context.Context, ns, ref string) (Operation, error) {
	return send[Operation](ctx, c, http.MethodPost, nsPath(ns, "clusters", ref, "backups"), proto.BackupRunRequest{})
}

// Restore starts a restore of cluster ref's backups into req.Target.
func (c *Client) Restore(ctx context.Context, ns, ref string, req proto.RestoreRequest) (Operation, error) {
	return send[Operation](ctx, c, http.MethodPost, nsPath(ns, "clusters", ref, "restore"), req)
}

// ---- events ----

// Event is a recorded agent or control-plane event.
type Event struct {
	proto.Event
	Object
}

// EventFilter selects events; zero fields match everything.
type EventFilter struct {
	Cluster, Node, Type string
	// After is the sequence number to start after.
	After int64
}

func (f EventFilter) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"cluster": f.Cluster, "node": f.Node, "type": f.Type} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.After > 0 {
		q.Set("after", strconv.FormatInt(f.After, 10))
	}
	return q
}

// ListEvents returns every recorded event matching f, oldest first.
func (c *Client) ListEvents(ctx context.Context, ns string, f EventFilter) ([]Event, error) {
	out := []Event{}
	for {
		q := f.query()
		q.Set("limit", "1000")
		raw, err := c.do(ctx, http.MethodGet, nsPath(ns, "events"), q, nil)
		if err != nil {
			return nil, err
		}
		var page proto.List[json.RawMessage]
		if err := json.Unmarshal(raw, &page); err != nil {
			return nil, fmt.Errorf("decode events: %w", err)
		}
		for _, it := range page.Items {
			e, err := decode[Event](it)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
			f.After = e.Seq
		}
		if len(page.Items) < 1000 {
			return out, nil
		}
	}
}

// StreamEvents follows the Server-Sent Events stream of ns, calling fn for
// each event in order, until ctx ends (returns nil), fn fails or the
// connection breaks: then it reconnects with Last-Event-ID after a short
// pause, so no event is skipped or repeated. An API error (401, 404, 400)
// is returned at once.
func (c *Client) StreamEvents(ctx context.Context, ns string, f EventFilter, fn func(Event) error) error {
	last := f.After
	for {
		err := c.streamOnce(ctx, ns, f, &last, fn)
		if ctx.Err() != nil {
			return nil
		}
		var ae *Error
		if errors.As(err, &ae) || errors.Is(err, errCallback) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

var errCallback = errors.New("event callback failed")

func (c *Client) streamOnce(ctx context.Context, ns string, f EventFilter, last *int64, fn func(Event) error) error {
	f.After = *last
	req, err := c.newRequest(ctx, http.MethodGet, nsPath(ns, "events", "stream"), f.query(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(*last, 10))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return apiError(resp.StatusCode, http.MethodGet, req.URL.Path, raw)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var data []byte
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if len(data) == 0 {
				continue
			}
			e, err := decode[Event](data)
			data = nil
			if err != nil {
				return err
			}
			if e.Seq <= *last {
				continue
			}
			if err := fn(e); err != nil {
				return fmt.Errorf("%w: %w", errCallback, err)
			}
			*last = e.Seq
		case strings.HasPrefix(line, "data:"):
			d := strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, d...)
		}
		// id:, event: and ": keepalive" comments need no handling: the id
		// is inside the data.
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// ---- catalog ----

// Template is a Service Catalog image template.
type Template struct {
	proto.Template
	Object
}

// ListTemplates lists the shipped templates and, with ns, the namespace's
// own ones.
func (c *Client) ListTemplates(ctx context.Context, ns string) ([]Template, error) {
	if ns == "" {
		return list[Template](ctx, c, "/v1/catalog/templates", nil)
	}
	return list[Template](ctx, c, nsPath(ns, "templates"), nil)
}

// GetTemplate returns a template by name (shipped, or the namespace's).
func (c *Client) GetTemplate(ctx context.Context, ns, name string) (Template, error) {
	if ns == "" {
		return get[Template](ctx, c, "/v1/catalog/templates/"+url.PathEscape(name))
	}
	return get[Template](ctx, c, nsPath(ns, "templates", name))
}

// ---- fleet ----

// Host is an enrolled fleet host.
type Host struct {
	proto.Host
	Object
}

// JoinToken is a one-time fleet enrolment token.
type JoinToken struct {
	proto.JoinToken
	Object
}

// CreateJoinToken issues a one-time join token (platform admin).
func (c *Client) CreateJoinToken(ctx context.Context, labels map[string]string, ttl time.Duration) (JoinToken, error) {
	req := proto.JoinTokenCreate{Labels: labels}
	if ttl > 0 {
		req.TTLSeconds = int(ttl.Seconds())
	}
	return send[JoinToken](ctx, c, http.MethodPost, "/v1/infra/join-tokens", req)
}

// EnrollHost enrols a host; the response carries its credential once.
func (c *Client) EnrollHost(ctx context.Context, req proto.EnrollRequest) (Host, error) {
	return send[Host](ctx, c, http.MethodPost, "/v1/infra/hosts/enroll", req)
}

// ListHosts lists the fleet (platform admin).
func (c *Client) ListHosts(ctx context.Context) ([]Host, error) {
	return list[Host](ctx, c, "/v1/infra/hosts", nil)
}

func hostPath(ref, action string) string {
	return "/v1/infra/hosts/" + url.PathEscape(ref) + "/" + action
}

// CordonHost stops new allocations on a host (id or name); its nodes keep
// running (platform admin).
func (c *Client) CordonHost(ctx context.Context, ref string) (Host, error) {
	return send[Host](ctx, c, http.MethodPost, hostPath(ref, "cordon"), struct{}{})
}

// UncordonHost lets a cordoned host take allocations again (platform
// admin; 409 while a drain of it runs).
func (c *Client) UncordonHost(ctx context.Context, ref string) (Host, error) {
	return send[Host](ctx, c, http.MethodPost, hostPath(ref, "uncordon"), struct{}{})
}

// DrainHost cordons a host and starts moving every node off it; poll the
// operation with GetInfraOperation (platform admin).
func (c *Client) DrainHost(ctx context.Context, ref string) (Operation, error) {
	return send[Operation](ctx, c, http.MethodPost, hostPath(ref, "drain"), struct{}{})
}

// GetInfraOperation returns any operation by id, including host
// operations (drain) that belong to no namespace (platform admin).
func (c *Client) GetInfraOperation(ctx context.Context, id string) (Operation, error) {
	return get[Operation](ctx, c, "/v1/infra/operations/"+url.PathEscape(id))
}

// ---- tokens ----

// Token is an API token; Token (the secret) is only set at creation.
type Token struct {
	proto.Token
	Object
}

// CreateToken issues a token with grants.
func (c *Client) CreateToken(ctx context.Context, name string, grants []proto.Grant) (Token, error) {
	return send[Token](ctx, c, http.MethodPost, "/v1/tokens", proto.TokenCreate{Grants: grants, Name: name})
}

// ListTokens lists every token (platform admin).
func (c *Client) ListTokens(ctx context.Context) ([]Token, error) {
	return list[Token](ctx, c, "/v1/tokens", nil)
}

// RevokeToken revokes a token by id.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil)
	return err
}

// ---- alerts ----

// Alert is an alert of a namespace.
type Alert struct {
	proto.Alert
	Object
}

// NotificationChannel is a namespace's notification channel (no secret).
type NotificationChannel struct {
	proto.NotificationChannel
	Object
}

// NotificationDelivery is one notification sent to a channel.
type NotificationDelivery struct {
	proto.NotificationDelivery
	Object
}

// AlertFilter selects alerts; empty fields match all.
type AlertFilter struct {
	State, Severity, Cluster string
	Limit                    int
}

// ListAlerts lists a namespace's alerts, most recently changed first.
func (c *Client) ListAlerts(ctx context.Context, ns string, f AlertFilter) ([]Alert, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": f.State, "severity": f.Severity, "cluster": f.Cluster} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return list[Alert](ctx, c, nsPath(ns, "alerts"), q)
}

// GetAlert returns one alert by id (fingerprint).
func (c *Client) GetAlert(ctx context.Context, ns, id string) (Alert, error) {
	return get[Alert](ctx, c, nsPath(ns, "alerts", id))
}

// AckAlert acknowledges an alert.
func (c *Client) AckAlert(ctx context.Context, ns, id string) (Alert, error) {
	return send[Alert](ctx, c, http.MethodPost, nsPath(ns, "alerts", id, "ack"), nil)
}

// SilenceAlert silences an alert for req.Duration.
func (c *Client) SilenceAlert(ctx context.Context, ns, id string, req proto.SilenceRequest) (Alert, error) {
	return send[Alert](ctx, c, http.MethodPost, nsPath(ns, "alerts", id, "silence"), req)
}

// ListChannels lists a namespace's notification channels.
func (c *Client) ListChannels(ctx context.Context, ns string) ([]NotificationChannel, error) {
	return list[NotificationChannel](ctx, c, nsPath(ns, "notification-channels"), nil)
}

// CreateChannel adds a notification channel.
func (c *Client) CreateChannel(ctx context.Context, ns string, ch proto.NotificationChannel) (NotificationChannel, error) {
	return send[NotificationChannel](ctx, c, http.MethodPost, nsPath(ns, "notification-channels"), ch)
}

// DeleteChannel removes a notification channel.
func (c *Client) DeleteChannel(ctx context.Context, ns, name string) error {
	_, err := c.do(ctx, http.MethodDelete, nsPath(ns, "notification-channels", name), nil, nil)
	return err
}

// ListDeliveries lists a channel's newest deliveries.
func (c *Client) ListDeliveries(ctx context.Context, ns, name string) ([]NotificationDelivery, error) {
	return list[NotificationDelivery](ctx, c, nsPath(ns, "notification-channels", name, "deliveries"), nil)
}
