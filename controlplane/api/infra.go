package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/catalog"
	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

func hostJSON(h store.Host) proto.Host {
	return proto.Host{ID: h.ID, Name: h.Name, Address: h.Address, Labels: h.Labels, Capacity: proto.Resources(h.Capacity), State: h.State, CreatedAt: h.CreatedAt}
}

func (a *API) createJoinToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.platformAdmin() {
		return forbidden("fleet enrolment needs the admin role on every namespace (\"*\")")
	}
	var req proto.JoinTokenCreate
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.TTLSeconds == 0 {
		req.TTLSeconds = 3600
	}
	if err := checkLabels(req.Labels); err != nil {
		return err
	}
	if req.TTLSeconds < 60 || req.TTLSeconds > 7*24*3600 {
		return badRequest("ttl_seconds", "must be in [60, 604800] (got %d)", req.TTLSeconds)
	}
	secret := controlplane.NewSecret("dbpj_")
	now := time.Now().UTC()
	exp := now.Add(time.Duration(req.TTLSeconds) * time.Second)
	if err := a.d.Store.CreateJoinToken(r.Context(), store.JoinToken{Hash: controlplane.HashSecret(secret), Labels: req.Labels, ExpiresAt: exp, CreatedAt: now}); err != nil {
		return err
	}
	writeJSON(w, 201, proto.JoinToken{ExpiresAt: exp, Secret: secret, Labels: req.Labels})
	return nil
}

// checkLabels applies the host label syntax (catalog.ValidLabel, the
// rule of templates' host_selector) to labels.
func checkLabels(labels map[string]string) error {
	for k, v := range labels {
		if err := catalog.ValidLabel(k, v); err != nil {
			return badRequest("labels", "%v", err)
		}
	}
	return nil
}

// enrollHost is called by a host with a one-time join token (no bearer).
func (a *API) enrollHost(w http.ResponseWriter, r *http.Request) error {
	var req proto.EnrollRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	switch {
	case req.JoinToken == "":
		return badRequest("join_token", "required")
	case checkName("name", req.Name) != nil:
		return checkName("name", req.Name)
	case req.Address == "" || len(req.Address) > 255 || proto.HasControl(req.Address) || strings.ContainsAny(req.Address, " /\\"):
		return badRequest("address", "required: a host name or IP address (got %s)", proto.Quote(req.Address, 64))
	case checkLabels(req.Labels) != nil:
		return checkLabels(req.Labels)
	case req.Capacity.CPU < 1:
		return badRequest("capacity.cpu", "must be >= 1 (got %d)", req.Capacity.CPU)
	case req.Capacity.MemoryMB < 128:
		return badRequest("capacity.memory_mb", "must be >= 128 (got %d)", req.Capacity.MemoryMB)
	case req.Capacity.DiskGB < 1:
		return badRequest("capacity.disk_gb", "must be >= 1 (got %d)", req.Capacity.DiskGB)
	}
	cred := controlplane.NewSecret("dbph_")
	h, err := a.d.Store.EnrollHost(r.Context(), controlplane.HashSecret(req.JoinToken), store.Host{ID: newID("h"), Name: req.Name,
		Address: req.Address, Labels: req.Labels, Capacity: store.Resources(req.Capacity), CredentialHash: controlplane.HashSecret(cred)})
	status := 201
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = &proto.APIError{Status: 401, Code: "unauthenticated", Field: "join_token", Message: "join_token: unknown, used or expired"}
		}
		status = toAPIError(err).Status
	}
	a.d.Log.Info("host enrolment", zap.String("host", req.Name), zap.Int("status", status))
	_ = a.d.Store.Audit(r.Context(), store.AuditEntry{At: time.Now().UTC(), Actor: "host " + req.Name, Action: auditAction(r),
		Resource: r.URL.Path, Status: status, Result: http.StatusText(status)})
	if err != nil {
		return err
	}
	out := hostJSON(h)
	out.Credential = cred
	writeJSON(w, 201, out)
	return nil
}

func (a *API) listHosts(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.platformAdmin() {
		return forbidden("the fleet needs the admin role on every namespace (\"*\")")
	}
	hs, err := a.d.Store.ListHosts(r.Context())
	if err != nil {
		return err
	}
	count, err := a.nodesPerHost(r.Context())
	if err != nil {
		return err
	}
	out := proto.List[proto.Host]{Items: []proto.Host{}}
	for _, h := range hs {
		hj := hostJSON(h)
		hj.Nodes = count[h.ID]
		out.Items = append(out.Items, hj)
	}
	writeJSON(w, 200, out)
	return nil
}

// hostFromCredential authenticates a fleet host by its bearer credential.
func (a *API) hostFromCredential(r *http.Request) (store.Host, error) {
	cred, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return store.Host{}, &proto.APIError{Status: 401, Code: "unauthenticated", Message: "missing host credential"}
	}
	h, err := a.d.Store.HostByCredential(r.Context(), controlplane.HashSecret(cred))
	if err != nil {
		return store.Host{}, &proto.APIError{Status: 401, Code: "unauthenticated", Message: "invalid host credential"}
	}
	if err := checkPathNames(r); err != nil {
		return store.Host{}, err
	}
	return h, nil
}

// hostAssignments returns the agent configurations a fleet host must run
// (authenticated with the host credential from enrolment). Each poll
// records the host as seen.
func (a *API) hostAssignments(w http.ResponseWriter, r *http.Request) error {
	h, err := a.hostFromCredential(r)
	if err != nil {
		return err
	}
	_ = a.d.Store.TouchHost(r.Context(), h.ID)
	as, err := a.d.Store.ListAllocations(r.Context(), h.ID)
	if err != nil {
		return err
	}
	out := proto.List[proto.Assignment]{Items: []proto.Assignment{}}
	for _, x := range as {
		as := proto.Assignment{ClusterID: x.ClusterID, Node: x.Node, State: x.State, Resources: proto.Resources(x.Resources), AgentConfig: x.Config,
			RestartGeneration: x.RestartGeneration, AppliedRestartGeneration: x.RestartApplied, AppliedConfigSHA256: x.ConfigApplied,
			ConfigError: x.ConfigError}
		if x.State == store.AllocActive {
			if as.Credentials, err = a.d.Store.GetClusterCredentials(r.Context(), x.ClusterID); err != nil {
				return err
			}
			if a.d.AgentEtcdPassword != nil {
				as.EtcdPassword = a.d.AgentEtcdPassword(x.ClusterID)
			}
		}
		out.Items = append(out.Items, as)
	}
	writeJSON(w, 200, out)
	return nil
}

// releaseAssignment is a host's acknowledgement that it stopped a
// releasing node and removed its folder: the capacity is freed.
func (a *API) releaseAssignment(w http.ResponseWriter, r *http.Request) error {
	h, err := a.hostFromCredential(r)
	if err != nil {
		return err
	}
	if err := a.d.Store.ReleaseOnHost(r.Context(), h.ID, r.PathValue("cluster"), r.PathValue("node")); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = &proto.APIError{Status: 404, Code: "not_found", Message: "no releasing assignment " + r.PathValue("cluster") + "/" + r.PathValue("node") + " on this host"}
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ingestCacheTTL bounds how long ingest trusts a cached cluster lookup;
// after a delete, events are still accepted for at most this long (the
// projection then drops them as unknown).
const ingestCacheTTL = 5 * time.Second

type ingestEntry struct {
	c       store.Cluster
	expires time.Time
}

func (a *API) ingestCluster(ctx context.Context, id string) (store.Cluster, error) {
	if v, ok := a.ingestClusters.Load(id); ok {
		if e := v.(ingestEntry); time.Now().Before(e.expires) {
			return e.c, nil
		}
	}
	c, err := a.d.Store.GetCluster(ctx, id)
	if err != nil {
		a.ingestClusters.Delete(id)
		return c, err
	}
	a.ingestClusters.Store(id, ingestEntry{c: c, expires: time.Now().Add(ingestCacheTTL)})
	return c, nil
}

// ingest receives agent events over HTTP (the embedded default). Agents
// authenticate with HTTP basic auth: user = cluster id, password = the
// cluster's ingest key; an event for another cluster is refused.
//
// The body is one structured-mode CloudEvent (Content-Type
// application/cloudevents+json: 202 once stored, 400 when malformed), or a
// batch (application/cloudevents-batch+json: a JSON array of structured
// events, CloudEvents HTTP binding "batched content mode", at most
// maxIngestBatch). A batch is published in order; the answer is 202 with
// proto.BatchResult when every event was stored or refused for good (the
// refused ones are listed and never worth a retry), 503 when an event
// could not be stored (retry the whole batch: events are de-duplicated by
// id).
func (a *API) ingest(w http.ResponseWriter, r *http.Request) error {
	select {
	case a.ingestSlots <- struct{}{}:
		defer func() { <-a.ingestSlots }()
	case <-r.Context().Done():
		return nil
	}
	id, key, ok := r.BasicAuth()
	if !ok || controlplane.IngestKey(a.d.IngestSecret, id) != key {
		return &proto.APIError{Status: 401, Code: "unauthenticated", Message: "invalid ingest credentials"}
	}
	c, err := a.ingestCluster(r.Context(), id)
	if err != nil {
		// The cluster was deleted: accept and drop, so agents that are
		// still shutting down do not retry forever.
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	batch, ok := ingestMediaType(r.Header.Get("Content-Type"))
	if !ok {
		return &proto.APIError{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: fmt.Sprintf("Content-Type must be %s (one event) or %s (a batch) (got %s)", proto.MediaType, proto.BatchMediaType, proto.Quote(r.Header.Get("Content-Type"), 64))}
	}
	limit := int64(maxBody)
	if batch {
		limit = maxIngestBatchBody
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return badRequest("", "read body: %v", err)
	}
	if int64(len(body)) > limit {
		return &proto.APIError{Status: 413, Code: "too_large", Message: fmt.Sprintf("body: larger than %d bytes; send fewer events per batch", limit)}
	}
	if !batch {
		return a.ingestOne(w, r, c, body)
	}
	events, err := splitBatch(body)
	if err != nil {
		return badRequest("", "%v", err)
	}
	res := proto.BatchResult{Rejected: []proto.BatchRejection{}}
	var publish [][]byte
	var at []int
	for i, ev := range events {
		if !controlplane.EventBelongsTo(ev, c.Namespace, c.Project, c.Name) {
			res.Rejected = append(res.Rejected, proto.BatchRejection{Index: i, Error: "forbidden: event is not for cluster " + c.Namespace + "/" + c.Project + "/" + c.Name})
			continue
		}
		publish = append(publish, ev)
		at = append(at, i)
	}
	retry := 0
	for j, err := range controlplane.PublishAll(r.Context(), a.d.Bus, controlplane.TopicAgentEvents, publish) {
		switch {
		case err == nil:
			res.Accepted++
		case errors.Is(err, controlplane.ErrMalformed):
			res.Rejected = append(res.Rejected, proto.BatchRejection{Index: at[j], Error: err.Error()})
		default:
			retry++
			if retry == 1 {
				a.d.Log.Warn("ingest: publish failed; the agent retries the batch", zap.String("cluster", c.ID), zap.Error(err))
			}
		}
	}
	slices.SortFunc(res.Rejected, func(x, y proto.BatchRejection) int { return x.Index - y.Index })
	if retry > 0 {
		return &proto.APIError{Status: 503, Code: "unavailable", Message: fmt.Sprintf("%d of %d events not stored; retry the batch", retry, len(events))}
	}
	writeJSON(w, http.StatusAccepted, res)
	return nil
}

// ingestOne handles a single structured-mode event.
func (a *API) ingestOne(w http.ResponseWriter, r *http.Request, c store.Cluster, body []byte) error {
	if !controlplane.EventBelongsTo(body, c.Namespace, c.Project, c.Name) {
		return &proto.APIError{Status: 403, Code: "forbidden", Message: "event is not for cluster " + c.Namespace + "/" + c.Project + "/" + c.Name + " (source and data.project must name it)"}
	}
	if err := a.d.Bus.Publish(r.Context(), controlplane.TopicAgentEvents, body); err != nil {
		if errors.Is(err, controlplane.ErrMalformed) {
			return badRequest("", "%v", err)
		}
		a.d.Log.Warn("ingest: publish failed; the agent retries", zap.Error(err))
		return &proto.APIError{Status: 503, Code: "unavailable", Message: "event not stored; retry"}
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// Ingest batch limits.
const (
	// maxIngestBatch is the most events one batch may hold.
	maxIngestBatch = 1000
	// maxIngestBatchBody bounds a batch request's body, in bytes.
	maxIngestBatchBody = 8 << 20
)

// ingestMediaType reads an ingest request's Content-Type: ok only for the
// CloudEvents HTTP binding's structured (application/cloudevents+json)
// and batched (application/cloudevents-batch+json) modes, which are what
// agents send; batch tells which. (Dapr does not deliver here: the
// control plane's Dapr subscription has its own route, DaprSubscriber.)
func ingestMediaType(ct string) (batch, ok bool) {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false, false
	}
	switch mt {
	case proto.BatchMediaType:
		return true, true
	case proto.MediaType:
		return false, true
	}
	return false, false
}

// splitBatch splits a JSON array into its elements (copies), each of
// which must be an object.
func splitBatch(body []byte) ([][]byte, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	tok, err := dec.ReadToken()
	if err != nil || tok.Kind() != '[' {
		return nil, errors.New("body: a batch must be a JSON array of structured-mode CloudEvents")
	}
	var out [][]byte
	for dec.PeekKind() != ']' {
		v, err := dec.ReadValue()
		if err != nil {
			return nil, fmt.Errorf("body: not JSON at event %d: %v", len(out), err)
		}
		if v.Kind() != '{' {
			return nil, fmt.Errorf("body: event %d must be a JSON object (a structured-mode CloudEvent)", len(out))
		}
		if len(out) == maxIngestBatch {
			return nil, fmt.Errorf("body: more than %d events in one batch; send fewer", maxIngestBatch)
		}
		out = append(out, v.Clone())
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, fmt.Errorf("body: not JSON: %v", err)
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, errors.New("body: trailing data after the batch array")
	}
	if len(out) == 0 {
		return nil, errors.New("body: empty batch; send at least one event")
	}
	return out, nil
}

// nodeCloudInit renders a node's #cloud-config user-data for an IaaS
// machine. It holds the cluster credentials, so it needs the admin role in
// the namespace. JSON by default ({cluster, node, user_data}); ?format=raw
// answers the document itself (text/cloud-config).
func (a *API) nodeCloudInit(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, err := a.cluster(r, p, RoleAdmin)
	if err != nil {
		return err
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" && format != "raw" {
		return badRequest("format", "must be json or raw (got %q)", format)
	}
	node := r.PathValue("node")
	nodes, err := a.d.Store.ListNodes(r.Context(), c.ID)
	if err != nil {
		return err
	}
	found := false
	for _, n := range nodes {
		found = found || (n.Name == node && n.Provisioned())
	}
	if !found {
		return &proto.APIError{Status: 404, Code: "not_found", Field: "node", Message: "node: no node " + node + " in cluster " + c.Name}
	}
	if a.d.CloudInit == nil {
		return &proto.APIError{Status: 501, Code: "not_implemented", Message: "cloud-init rendering is not configured on this server"}
	}
	b, err := a.d.CloudInit(r.Context(), c, node)
	if err != nil {
		return err
	}
	if format == "raw" {
		w.Header().Set("Content-Type", "text/cloud-config; charset=utf-8")
		_, _ = w.Write(b)
		return nil
	}
	writeJSON(w, 200, proto.CloudInit{Cluster: c.Name, Node: node, UserData: string(b)})
	return nil
}
