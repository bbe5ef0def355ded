package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/dbpilot/dbpilot/controlplane/alerts"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

var (
	alertIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)
	bindingRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
)

// alertOf resolves {ns} (role) and {id} to a stored alert.
func (a *API) alertOf(r *http.Request, p *principal, role string) (store.Alert, error) {
	ns, id := r.PathValue("ns"), r.PathValue("id")
	if err := p.need(ns, role); err != nil {
		return store.Alert{}, err
	}
	if !alertIDRE.MatchString(id) {
		return store.Alert{}, badRequest("id", "must be an alert id: 16 hex digits (got %s)", proto.Quote(id, 64))
	}
	al, err := a.d.Store.GetAlert(r.Context(), ns, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Alert{}, notFound("alert " + id)
	}
	return al, err
}

// alertJSON is a stored alert with its active silence.
func (a *API) alertJSON(r *http.Request, al store.Alert) (proto.Alert, error) {
	sil, err := a.d.Store.ActiveSilences(r.Context(), al.Namespace, time.Now())
	if err != nil {
		return proto.Alert{}, err
	}
	var sp *store.Silence
	if s, ok := sil[al.ID]; ok {
		sp = &s
	}
	return alerts.ToProto(al, sp), nil
}

// listAlerts answers GET /v1/namespaces/{ns}/alerts?state=&severity=&cluster=&limit=
// (viewer): the namespace's alerts, most recently changed first.
func (a *API) listAlerts(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.AlertFilter{Namespace: ns, State: q.Get("state"), Severity: q.Get("severity"), Cluster: q.Get("cluster"), Limit: 100}
	switch f.State {
	case "", proto.AlertPending, proto.AlertFiring, proto.AlertResolved:
	default:
		return badRequest("state", "must be pending, firing or resolved (got %s)", proto.Quote(f.State, 64))
	}
	switch f.Severity {
	case "", proto.SeverityPage, proto.SeverityTicket, proto.SeverityInfo:
	default:
		return badRequest("severity", "must be page, ticket or info (got %s)", proto.Quote(f.Severity, 64))
	}
	if f.Cluster != "" {
		if err := checkName("cluster", f.Cluster); err != nil {
			return err
		}
	}
	n, err := limitOf(r)
	if err != nil {
		return err
	}
	f.Limit = n
	as, err := a.d.Store.ListAlerts(r.Context(), f)
	if err != nil {
		return err
	}
	sil, err := a.d.Store.ActiveSilences(r.Context(), ns, time.Now())
	if err != nil {
		return err
	}
	out := proto.List[proto.Alert]{Items: make([]proto.Alert, 0, len(as))}
	for _, al := range as {
		var sp *store.Silence
		if s, ok := sil[al.ID]; ok {
			sp = &s
		}
		out.Items = append(out.Items, alerts.ToProto(al, sp))
	}
	writeJSON(w, 200, out)
	return nil
}

// getAlert answers GET /v1/namespaces/{ns}/alerts/{id} (viewer).
func (a *API) getAlert(w http.ResponseWriter, r *http.Request, p *principal) error {
	al, err := a.alertOf(r, p, RoleViewer)
	if err != nil {
		return err
	}
	out, err := a.alertJSON(r, al)
	if err != nil {
		return err
	}
	writeJSON(w, 200, out)
	return nil
}

// ackAlert answers POST /v1/namespaces/{ns}/alerts/{id}/ack (operator): a
// pending or firing alert is acknowledged by the caller's token (a page
// is no longer repeated); 409 when it is resolved.
func (a *API) ackAlert(w http.ResponseWriter, r *http.Request, p *principal) error {
	al, err := a.alertOf(r, p, RoleOperator)
	if err != nil {
		return err
	}
	al, err = a.d.Store.AckAlert(r.Context(), al.Namespace, al.ID, p.TokenID+" ("+p.Name+")", time.Now().UTC())
	if errors.Is(err, store.ErrConflict) {
		return &proto.APIError{Status: 409, Code: "failed_precondition", Message: "alert " + al.ID + " is resolved; only a pending or firing alert can be acknowledged"}
	}
	if err != nil {
		return err
	}
	out, err := a.alertJSON(r, al)
	if err != nil {
		return err
	}
	writeJSON(w, 200, out)
	return nil
}

// silenceAlert answers POST /v1/namespaces/{ns}/alerts/{id}/silence
// (operator) with body proto.SilenceRequest: the alert notifies nothing
// until the silence ends (it stays visible, and fires and resolves as
// usual).
func (a *API) silenceAlert(w http.ResponseWriter, r *http.Request, p *principal) error {
	al, err := a.alertOf(r, p, RoleOperator)
	if err != nil {
		return err
	}
	var req proto.SilenceRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	d, err := time.ParseDuration(req.Duration)
	if err != nil || d < time.Minute || d > 720*time.Hour {
		return badRequest("duration", "must be a duration from 1m to 720h, like \"2h\" (got %s)", proto.Quote(req.Duration, 64))
	}
	if req.Reason == "" || len(req.Reason) > 200 || proto.HasControl(req.Reason) {
		return badRequest("reason", "required: why the alert is silenced, one line of at most 200 characters")
	}
	now := time.Now().UTC()
	if err := a.d.Store.CreateSilence(r.Context(), store.Silence{ID: newID("sil"), Namespace: al.Namespace, AlertID: al.ID, Until: now.Add(d),
		Reason: req.Reason, CreatedBy: p.TokenID + " (" + p.Name + ")", CreatedAt: now}); err != nil {
		return err
	}
	out, err := a.alertJSON(r, al)
	if err != nil {
		return err
	}
	writeJSON(w, 200, out)
	return nil
}

func channelJSON(c store.Channel) proto.NotificationChannel {
	return proto.NotificationChannel{Name: c.Name, Kind: c.Kind, URL: c.URL, Binding: c.Binding, Operation: c.Operation,
		HasSecret: c.Secret != "", CreatedAt: ts(c.CreatedAt)}
}

// listChannels answers GET /v1/namespaces/{ns}/notification-channels
// (viewer); secrets are never returned.
func (a *API) listChannels(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	cs, err := a.d.Store.ListChannels(r.Context(), ns)
	if err != nil {
		return err
	}
	out := proto.List[proto.NotificationChannel]{Items: make([]proto.NotificationChannel, 0, len(cs))}
	for _, c := range cs {
		out.Items = append(out.Items, channelJSON(c))
	}
	writeJSON(w, 200, out)
	return nil
}

// createChannel answers POST /v1/namespaces/{ns}/notification-channels
// (admin) with 201 and the channel (without its secret). A dapr_binding
// channel needs a server with a Dapr sidecar (409 otherwise).
func (a *API) createChannel(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleAdmin); err != nil {
		return err
	}
	var req proto.NotificationChannel
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := checkName("name", req.Name); err != nil {
		return err
	}
	switch req.Kind {
	case proto.ChannelWebhook:
		u, err := url.Parse(req.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || len(req.URL) > 2000 {
			return badRequest("url", "required for a webhook: an http:// or https:// URL without credentials, at most 2000 characters (got %s)", proto.Quote(req.URL, 128))
		}
		if len(req.Secret) < 16 || len(req.Secret) > 256 || proto.HasControl(req.Secret) {
			return badRequest("secret", "required for a webhook: 16 to 256 characters without control characters (the HMAC key of X-Dbpilot-Signature)")
		}
		if req.Binding != "" || req.Operation != "" {
			return badRequest("binding", "only for kind dapr_binding")
		}
	case proto.ChannelDaprBinding:
		if !bindingRE.MatchString(req.Binding) {
			return badRequest("binding", "required for dapr_binding: the Dapr output binding's component name (letters, digits, '_', '.', '-'; got %s)", proto.Quote(req.Binding, 64))
		}
		if req.Operation != "" && !bindingRE.MatchString(req.Operation) {
			return badRequest("operation", "must be a binding operation like create or post (got %s)", proto.Quote(req.Operation, 64))
		}
		if req.URL != "" || req.Secret != "" {
			return badRequest("url", "url and secret are only for kind webhook")
		}
		if !a.d.DaprBindings {
			return &proto.APIError{Status: 409, Code: "failed_precondition", Field: "kind",
				Message: "kind: dapr_binding needs a control plane with a Dapr sidecar (server config bus.kind: dapr); this one has none: use a webhook channel"}
		}
	default:
		return badRequest("kind", "must be webhook or dapr_binding (got %s)", proto.Quote(req.Kind, 64))
	}
	if req.HasSecret || req.CreatedAt != nil {
		return badRequest("has_secret", "has_secret and created_at are set by the server; remove them")
	}
	c := store.Channel{Namespace: ns, Name: req.Name, Kind: req.Kind, URL: req.URL, Secret: req.Secret, Binding: req.Binding,
		Operation: req.Operation, CreatedAt: time.Now().UTC()}
	if err := a.d.Store.CreateChannel(r.Context(), c); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return &proto.APIError{Status: 409, Code: "already_exists", Field: "name", Message: "name: notification channel " + req.Name + " already exists; delete it first"}
		}
		return err
	}
	w.Header().Set("Location", "/v1/namespaces/"+ns+"/notification-channels/"+c.Name)
	writeJSON(w, 201, channelJSON(c))
	return nil
}

// deleteChannel answers DELETE …/notification-channels/{name} (admin)
// with 204; its delivery log goes with it.
func (a *API) deleteChannel(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if err := p.need(ns, RoleAdmin); err != nil {
		return err
	}
	if err := checkName("name", name); err != nil {
		return err
	}
	if err := a.d.Store.DeleteChannel(r.Context(), ns, name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("notification channel " + name)
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listDeliveries answers GET …/notification-channels/{name}/deliveries
// (viewer): the newest deliveries first (?limit=, default 100).
func (a *API) listDeliveries(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	n, err := limitOf(r)
	if err != nil {
		return err
	}
	if err := checkName("name", name); err != nil {
		return err
	}
	if _, err := a.d.Store.GetChannel(r.Context(), ns, name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("notification channel " + name)
		}
		return err
	}
	ds, err := a.d.Store.ListDeliveries(r.Context(), ns, name, n)
	if err != nil {
		return err
	}
	out := proto.List[proto.NotificationDelivery]{Items: make([]proto.NotificationDelivery, 0, len(ds))}
	for _, d := range ds {
		out.Items = append(out.Items, proto.NotificationDelivery{ID: d.ID, Channel: d.Channel, AlertID: d.AlertID, Transition: d.Transition,
			Status: d.Status, Attempts: d.Attempts, LastError: d.LastError, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt})
	}
	writeJSON(w, 200, out)
	return nil
}

// getAlertThresholds answers GET …/clusters/{cluster}/alert-thresholds
// (viewer): the cluster's overrides ({} when none).
func (a *API) getAlertThresholds(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, err := a.cluster(r, p, RoleViewer)
	if err != nil {
		return err
	}
	var out proto.AlertThresholds
	b, err := a.d.Store.GetAlertThresholds(r.Context(), c.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err == nil {
		_ = json.Unmarshal(b, &out)
	}
	writeJSON(w, 200, out)
	return nil
}

// putAlertThresholds answers PUT …/clusters/{cluster}/alert-thresholds
// (operator): the body (proto.AlertThresholds) replaces the cluster's
// overrides; the engine applies them within 10 s. 400 names the field.
func (a *API) putAlertThresholds(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, req, err := clusterRequest[proto.AlertThresholds](a, r, p, RoleOperator)
	if err != nil {
		return err
	}
	var bad *proto.APIError
	req.Check("", func(f, problem string) {
		if bad == nil {
			bad = badRequest(f, "%s", problem)
		}
	})
	if bad != nil {
		return bad
	}
	b, _ := json.Marshal(req)
	if err := a.d.Store.PutAlertThresholds(r.Context(), c.ID, b); err != nil {
		return err
	}
	writeJSON(w, 200, req)
	return nil
}

// limitOf parses ?limit= (1..1000, default 100).
func limitOf(r *http.Request) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 1000 {
		return 0, badRequest("limit", "must be an integer in [1, 1000] (got %q)", s)
	}
	return n, nil
}
