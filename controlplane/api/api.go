// Package api is the control plane's REST API (/v1, JSON): routing on
// net/http's method-and-wildcard patterns, bearer-token authentication,
// per-namespace roles, strict request decoding, JSON errors naming the
// field, keyset pagination and an audit record of every mutation. The
// OpenAPI 3 document is proto/openapi.json, served at /v1/openapi.json.
package api

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/internal/buildinfo"
	"github.com/dbpilot/dbpilot/proto"
)

// Deps is what the API needs from the server.
type Deps struct {
	Store      *store.Store
	Bus        controlplane.Bus
	Projection *controlplane.Projection
	// Etcd is the admin side of the clusters' etcd (nil: members are
	// served from the projection alone).
	Etcd *admin.Admin
	// Instance names this server replica (event source).
	Instance string
	// IngestSecret derives the per-cluster agent ingest keys.
	IngestSecret []byte
	// AgentEtcdPassword returns the password of a cluster's own etcd user
	// for fleet assignments (nil: etcd without authentication).
	AgentEtcdPassword func(clusterID string) string
	// Providers lists the configured provider names; the first is the default.
	Providers []string
	// AgentAddress returns the agent HTTP address ("host:port") a node's
	// provider handle records, given the cluster's provider name; "" when
	// it does not say (nil: never). Prometheus service discovery uses it
	// while the node's member key is absent.
	AgentAddress func(provider string, handle json.RawMessage) string
	// CloudInit renders a node's #cloud-config user-data (nil: the
	// endpoint answers 501).
	CloudInit func(ctx context.Context, c store.Cluster, node string) ([]byte, error)
	Log       *zap.Logger
	// FailedAuthRate and FailedAuthBurst limit, per client IP, the
	// requests that fail authentication (per second, at once; <= 0:
	// DefaultFailedAuthRate, DefaultFailedAuthBurst).
	FailedAuthRate  float64
	FailedAuthBurst int
	// DaprBindings is true when the server has a Dapr sidecar, so
	// dapr_binding notification channels can be created.
	DaprBindings bool
}

// API serves /v1.
type API struct {
	d        Deps
	mux      *http.ServeMux
	patterns []string
	// ingestClusters caches cluster id → namespace/name for ingest (one
	// store read per event otherwise); entries expire after ingestCacheTTL.
	ingestClusters sync.Map
	// ingestSlots bounds how many ingest requests are processed at once, so
	// thousands of agents posting events cannot starve API readers of CPU
	// (the rest wait, not runnable); group commit still batches up to this
	// many events per transaction.
	ingestSlots chan struct{}
	// failures limits failed authentications per client IP.
	failures *clientLimiter
	// agentAddrs remembers, per cluster id, a map of node name → the
	// agent HTTP address ("host:port") last read from its member key, for
	// the Prometheus targets while the key is gone (agent down). A stored
	// map is never modified: it is replaced.
	agentAddrs sync.Map
}

// maxConcurrentIngest is the size of ingestSlots.
const maxConcurrentIngest = 64

// New returns the API handler.
func New(d Deps) *API {
	a := &API{d: d, mux: http.NewServeMux(), ingestSlots: make(chan struct{}, maxConcurrentIngest),
		failures: newClientLimiter(d.FailedAuthRate, d.FailedAuthBurst)}
	a.routes()
	return a
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Routes lists every "METHOD /path" pattern the API serves (the OpenAPI
// document is tested against it).
func (a *API) Routes() []string { return append([]string(nil), a.patterns...) }

// handlerFunc is a handler that answers a failure by returning it: its
// ServeHTTP writes a returned error with writeErr (the JSON error body;
// the status of a *proto.APIError, 404 for store.ErrNotFound, 409 for
// store.ErrConflict, else 500 "internal"). A handler returns an error only
// before it has written anything.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// ServeHTTP implements http.Handler: it runs h and writes its error.
func (h handlerFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h(w, r); err != nil {
		writeErr(w, err)
	}
}

// authedFunc is a handler of an authenticated request (see API.authed):
// like handlerFunc, a returned error is written as the JSON error body.
type authedFunc func(w http.ResponseWriter, r *http.Request, p *principal) error

func (a *API) handle(pattern string, h http.Handler) {
	a.patterns = append(a.patterns, pattern)
	a.mux.Handle(pattern, h)
}

func (a *API) routes() {
	pub := func(p string, h handlerFunc) { a.handle(p, h) }
	auth := func(p string, h authedFunc) { a.handle(p, a.authed(h)) }
	pub("GET /healthz", func(w http.ResponseWriter, _ *http.Request) error {
		writeJSON(w, 200, map[string]string{"status": "ok"})
		return nil
	})
	pub("GET /v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(proto.OpenAPI)
		return nil
	})
	pub("GET /v1/version", func(w http.ResponseWriter, _ *http.Request) error {
		writeJSON(w, 200, proto.ServerVersion{API: "v1", Version: buildinfo.String()})
		return nil
	})
	pub("POST /v1/ingest/events", a.ingest)
	pub("POST /v1/infra/hosts/enroll", a.enrollHost)
	pub("GET /v1/infra/hosts/self/assignments", a.hostAssignments)
	pub("DELETE /v1/infra/hosts/self/assignments/{cluster}/{node}", a.releaseAssignment)
	pub("POST /v1/infra/hosts/self/assignments/{cluster}/{node}/ack", a.ackAssignment)

	auth("GET /v1/whoami", a.whoami)
	auth("GET /v1/namespaces", a.listNamespaces)
	auth("POST /v1/namespaces", a.createNamespace)
	auth("GET /v1/namespaces/{ns}", a.getNamespace)
	auth("DELETE /v1/namespaces/{ns}", a.deleteNamespace)
	auth("GET /v1/namespaces/{ns}/projects", a.listProjects)
	auth("POST /v1/namespaces/{ns}/projects", a.createProject)
	auth("GET /v1/namespaces/{ns}/projects/{project}", a.getProject)
	auth("GET /v1/namespaces/{ns}/clusters", a.listClusters)
	auth("POST /v1/namespaces/{ns}/clusters", a.createCluster)
	auth("GET /v1/namespaces/{ns}/clusters/{cluster}", a.getCluster)
	auth("DELETE /v1/namespaces/{ns}/clusters/{cluster}", a.deleteCluster)
	auth("PATCH /v1/namespaces/{ns}/clusters/{cluster}", a.updateCluster)
	auth("POST /v1/namespaces/{ns}/clusters/{cluster}/scale", a.scaleCluster)
	auth("POST /v1/namespaces/{ns}/clusters/{cluster}/switchover", a.switchover)
	auth("POST /v1/namespaces/{ns}/clusters/{cluster}/failover", a.failover)
	auth("POST /v1/namespaces/{ns}/clusters/{cluster}/restart", a.restart)
	auth("GET /v1/namespaces/{ns}/clusters/{cluster}/nodes", a.listNodes)
	auth("GET /v1/namespaces/{ns}/clusters/{cluster}/top", a.clusterTop)
	auth("GET /v1/namespaces/{ns}/clusters/{cluster}/sessions", a.clusterSessions)
	auth("GET /v1/namespaces/{ns}/clusters/{cluster}/nodes/{node}/cloud-init", a.nodeCloudInit)
	auth("GET /v1/namespaces/{ns}/clusters/{cluster}/backups", a.listBackups)
	auth("POST /v1/namespaces/{ns}/clusters/{cluster}/backups", a.runBackup)
	auth("POST /v1/namespaces/{ns}/clusters/{cluster}/restore", a.restore)
	auth("GET /v1/namespaces/{ns}/operations", a.listOperations)
	auth("GET /v1/namespaces/{ns}/operations/{id}", a.getOperation)
	auth("GET /v1/namespaces/{ns}/events", a.listEvents)
	auth("GET /v1/namespaces/{ns}/events/stream", a.streamEvents)
	auth("GET /v1/namespaces/{ns}/templates", a.listNSTemplates)
	auth("POST /v1/namespaces/{ns}/templates", a.createTemplate)
	auth("GET /v1/namespaces/{ns}/templates/{name}", a.getNSTemplate)
	auth("DELETE /v1/namespaces/{ns}/templates/{name}", a.deleteTemplate)
	auth("GET /v1/namespaces/{ns}/audit", a.listNSAudit)
	auth("GET /v1/namespaces/{ns}/alerts", a.listAlerts)
	auth("GET /v1/namespaces/{ns}/alerts/{id}", a.getAlert)
	auth("POST /v1/namespaces/{ns}/alerts/{id}/ack", a.ackAlert)
	auth("POST /v1/namespaces/{ns}/alerts/{id}/silence", a.silenceAlert)
	auth("GET /v1/namespaces/{ns}/notification-channels", a.listChannels)
	auth("POST /v1/namespaces/{ns}/notification-channels", a.createChannel)
	auth("DELETE /v1/namespaces/{ns}/notification-channels/{name}", a.deleteChannel)
	auth("GET /v1/namespaces/{ns}/notification-channels/{name}/deliveries", a.listDeliveries)
	auth("GET /v1/namespaces/{ns}/clusters/{cluster}/alert-thresholds", a.getAlertThresholds)
	auth("PUT /v1/namespaces/{ns}/clusters/{cluster}/alert-thresholds", a.putAlertThresholds)
	auth("GET /v1/catalog/templates", a.listCatalog)
	auth("GET /v1/catalog/templates/{name}", a.getCatalog)
	auth("POST /v1/tokens", a.createToken)
	auth("GET /v1/tokens", a.listTokens)
	auth("DELETE /v1/tokens/{id}", a.revokeToken)
	auth("GET /v1/audit", a.listAudit)
	auth("POST /v1/infra/join-tokens", a.createJoinToken)
	auth("GET /v1/infra/hosts", a.listHosts)
	auth("POST /v1/infra/hosts/{host}/cordon", a.cordonHost)
	auth("POST /v1/infra/hosts/{host}/uncordon", a.uncordonHost)
	auth("POST /v1/infra/hosts/{host}/drain", a.drainHost)
	auth("GET /v1/infra/operations/{id}", a.getInfraOperation)
	auth("GET /v1/prometheus/targets", a.prometheusTargets)
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, &proto.APIError{Status: 404, Code: "not_found", Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
}

// ---- errors and JSON ----

func badRequest(field, format string, args ...any) *proto.APIError {
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	return &proto.APIError{Status: 400, Code: "invalid_argument", Message: msg, Field: field}
}

func notFound(what string) *proto.APIError {
	return &proto.APIError{Status: 404, Code: "not_found", Message: what + " not found"}
}

func forbidden(msg string) *proto.APIError {
	return &proto.APIError{Status: 403, Code: "forbidden", Message: msg}
}

func conflict(msg string) *proto.APIError {
	return &proto.APIError{Status: 409, Code: "conflict", Message: msg}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeErr writes err as the JSON error body; errors that are not
// *proto.APIError are mapped from store sentinels, else 500.
func writeErr(w http.ResponseWriter, err error) {
	ae := toAPIError(err)
	writeJSON(w, ae.Status, ae)
}

// toAPIError maps err to the JSON error it is answered with.
func toAPIError(err error) *proto.APIError {
	var ae *proto.APIError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, store.ErrNotFound):
		ae = &proto.APIError{Status: 404, Code: "not_found", Message: err.Error()}
	case errors.Is(err, store.ErrConflict):
		ae = &proto.APIError{Status: 409, Code: "conflict", Message: err.Error()}
	default:
		ae = &proto.APIError{Status: 500, Code: "internal", Message: "internal error"}
	}
	return ae
}

// auditAction is the audit log's action for r: the route pattern, which
// starts with the method ("POST /v1/namespaces/{ns}/clusters").
func auditAction(r *http.Request) string {
	if r.Pattern == "" || strings.HasPrefix(r.Pattern, r.Method+" ") {
		return cmp.Or(r.Pattern, r.Method+" "+r.URL.Path)
	}
	return r.Method + " " + r.Pattern
}

const maxBody = 1 << 20

// decode strictly decodes the request body into v: one JSON object, no
// unknown fields, no trailing data; errors name the field.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return &proto.APIError{Status: 415, Code: "unsupported_media_type", Message: "Content-Type must be application/json"}
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return badRequest("", "request body is empty; a JSON object is required")
		case errors.As(err, &se):
			return &proto.APIError{Status: 400, Code: "malformed_json", Message: fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)}
		case errors.As(err, &te):
			f := te.Field
			if f == "" {
				return &proto.APIError{Status: 400, Code: "malformed_json", Message: "request body must be a JSON object"}
			}
			return badRequest(f, "must be a %s (got %s)", te.Type.String(), te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return &proto.APIError{Status: 400, Code: "unknown_field", Message: f + ": unknown field", Field: f}
		case errors.Is(err, io.ErrUnexpectedEOF):
			return &proto.APIError{Status: 400, Code: "malformed_json", Message: "malformed JSON: unexpected end of input"}
		default:
			return &proto.APIError{Status: 400, Code: "malformed_json", Message: "malformed JSON: " + err.Error()}
		}
	}
	if dec.More() {
		return &proto.APIError{Status: 400, Code: "malformed_json", Message: "trailing data after the JSON object"}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &proto.APIError{Status: 400, Code: "malformed_json", Message: "trailing data after the JSON object"}
	}
	return nil
}

// ---- pagination ----

// pageOf parses limit (1..1000, default 100) and page_token.
func pageOf(r *http.Request) (store.Page, error) {
	p := store.Page{Limit: 100}
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return p, badRequest("limit", "must be an integer in [1, 1000] (got %q)", s)
		}
		p.Limit = n
	}
	if s := r.URL.Query().Get("page_token"); s != "" {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return p, badRequest("page_token", "not a token this API returned")
		}
		p.After = string(b)
	}
	return p, nil
}

// clusterRequest resolves the cluster a request names (for role; see
// API.cluster) and then strictly decodes its body into a T. The error is
// API.cluster's or decode's, to be returned to the handler adapter.
func clusterRequest[T any](a *API, r *http.Request, p *principal, role string) (c store.Cluster, req T, err error) {
	c, err = a.cluster(r, p, role)
	if err == nil {
		err = decode(r, &req)
	}
	return c, req, err
}

// writePage answers 200 with one page of a list: items converted by conv,
// and next_page_token (from key of the last item) when the page is full.
func writePage[S, T any](w http.ResponseWriter, pg store.Page, items []S, conv func(S) T, key func(S) string) {
	out := proto.List[T]{Items: make([]T, 0, len(items))}
	for _, x := range items {
		out.Items = append(out.Items, conv(x))
	}
	if len(items) > 0 {
		out.NextPageToken = nextToken(len(items), pg.Limit, key(items[len(items)-1]))
	}
	writeJSON(w, 200, out)
}

func nextToken(n, limit int, last string) string {
	if n < limit || last == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(last))
}

// ---- helpers ----

func ts(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// publishOperation tells the Infrastructure Service to run op.
func (a *API) publishOperation(ctx context.Context, op store.Operation) {
	ev, err := controlplane.NewOperationRequested(a.d.Instance, controlplane.OperationRequested{
		OperationID: op.ID, Kind: op.Kind, Namespace: op.Namespace, ClusterID: op.ClusterID})
	if err == nil {
		err = a.d.Bus.Publish(ctx, controlplane.TopicControlPlane, ev)
	}
	if err != nil {
		// The operation is persisted: the engine's sweep runs it anyway.
		a.d.Log.Warn("publish operation request; the sweep will pick it up", zap.String("operation", op.ID), zap.Error(err))
	}
}
