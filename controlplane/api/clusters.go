package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/dbpilot/dbpilot/catalog"
	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// Limits on cluster sizes.
const (
	MinReplicas = 1
	MaxReplicas = 9
)

func clusterJSON(c store.Cluster) proto.Cluster {
	return proto.Cluster{ID: c.ID, Namespace: c.Namespace, Project: c.Project, Name: c.Name, Engine: c.Engine, Version: c.Version,
		Template: c.Template, Plan: c.Plan, Provider: c.Provider, Replicas: c.Replicas, SynchronousMode: c.SynchronousMode,
		Phase: c.Phase, Reason: c.Reason, Primary: c.Primary, Term: c.Term, StaleEvents: c.StaleEvents, CreatedAt: c.CreatedAt,
		LastUpdated: ts(c.LastEventAt)}
}

func operationJSON(o store.Operation) proto.Operation {
	var p controlplane.OpParams
	_ = json.Unmarshal(o.Params, &p)
	bid := p.BackupID
	if p.Restore != nil {
		bid = p.Restore.BackupID
	}
	return proto.Operation{ID: o.ID, Namespace: o.Namespace, ClusterID: o.ClusterID, Kind: o.Kind, State: o.State, Step: o.Step,
		Progress: p.Progress, Attempts: o.Attempts, Error: o.Error, BackupID: bid, Reason: p.Reason, Nodes: p.Nodes,
		CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
}

func (a *API) template(ctx context.Context, ns, name string) (catalog.Template, bool) {
	if t, ok := catalog.Lookup(name); ok {
		return t, true
	}
	ut, err := a.d.Store.GetTemplate(ctx, ns, name)
	if err != nil {
		return catalog.Template{}, false
	}
	t, err := catalog.FromJSON(ut.Body)
	return t, err == nil
}

// usableTemplate is template for creating clusters: a namespace template
// must still validate and, when it has platform-admin-only fields, have
// been created by a platform admin (catalog.FromStored).
func (a *API) usableTemplate(ctx context.Context, ns, name string) (catalog.Template, error) {
	if t, ok := catalog.Lookup(name); ok {
		return t, nil
	}
	ut, err := a.d.Store.GetTemplate(ctx, ns, name)
	if err != nil {
		return catalog.Template{}, badRequest("template", "no catalog template %s", proto.Quote(name, 64))
	}
	t, err := catalog.FromStored(ut.Body)
	if err != nil {
		return catalog.Template{}, &proto.APIError{Status: 403, Code: "forbidden", Field: "template", Message: "template: " + err.Error()}
	}
	return t, nil
}

func (a *API) createCluster(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleOperator); err != nil {
		return err
	}
	var req proto.ClusterCreate
	if err := decode(r, &req); err != nil {
		return err
	}
	tpl, replicas, err := a.completeClusterCreate(r.Context(), ns, &req)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	c := store.Cluster{ID: newID("c"), Namespace: ns, Project: req.Project, Name: req.Name, Engine: req.Engine, Version: req.Version,
		Template: tpl.Name, Plan: req.Plan, Provider: req.Provider, Replicas: replicas, SynchronousMode: req.SynchronousMode,
		Phase: store.PhasePending, IngestKeyHash: "hmac", CreatedAt: now, UpdatedAt: now}
	op := store.Operation{ID: newID("op"), Namespace: ns, ClusterID: c.ID, Kind: controlplane.KindCreate, State: store.OpPending,
		CreatedAt: now, UpdatedAt: now}
	if err := a.d.Store.CreateCluster(r.Context(), c, op); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return &proto.APIError{Status: 409, Code: "already_exists", Message: "name: cluster " + req.Project + "/" + req.Name + " already exists", Field: "name"}
		}
		return err
	}
	a.publishOperation(r.Context(), op)
	w.Header().Set("Location", "/v1/namespaces/"+ns+"/operations/"+op.ID)
	writeJSON(w, 202, operationJSON(op))
	return nil
}

// completeClusterCreate fills in the defaults of a create request in
// namespace ns (project "default", template postgres-15, the template's
// engine and version, plan "small", 3 replicas, synchronous_mode "off",
// the first configured provider) and checks every field, in that order.
// It returns the template and the replica count; the error is a 400
// naming the first bad field, or the template's refusal (usableTemplate).
func (a *API) completeClusterCreate(ctx context.Context, ns string, req *proto.ClusterCreate) (catalog.Template, int, error) {
	if err := checkName("name", req.Name); err != nil {
		return catalog.Template{}, 0, err
	}
	if req.Project == "" {
		req.Project = "default"
	}
	if _, err := a.d.Store.GetProject(ctx, ns, req.Project); err != nil {
		return catalog.Template{}, 0, badRequest("project", "no project %q in namespace %s", req.Project, ns)
	}
	if req.Template == "" {
		req.Template = "postgres-15"
	}
	tpl, err := a.usableTemplate(ctx, ns, req.Template)
	if err != nil {
		return catalog.Template{}, 0, err
	}
	if req.Engine == "" {
		req.Engine = tpl.Engine
	}
	if req.Engine != tpl.Engine {
		return catalog.Template{}, 0, badRequest("engine", "template %s is for %s (got %q)", tpl.Name, tpl.Engine, req.Engine)
	}
	if req.Version == "" {
		req.Version = tpl.EngineVersion
	}
	if req.Version != tpl.EngineVersion {
		return catalog.Template{}, 0, badRequest("version", "template %s provides %s %s (got %q)", tpl.Name, tpl.Engine, tpl.EngineVersion, req.Version)
	}
	if req.Plan == "" {
		req.Plan = "small"
	}
	if _, ok := tpl.Plans[req.Plan]; !ok {
		plans := make([]string, 0, len(tpl.Plans))
		for k := range tpl.Plans {
			plans = append(plans, k)
		}
		sort.Strings(plans)
		return catalog.Template{}, 0, badRequest("plan", "template %s has plans %v (got %q)", tpl.Name, plans, req.Plan)
	}
	replicas := 3
	if req.Replicas != nil {
		replicas = *req.Replicas
	}
	if replicas < MinReplicas || replicas > MaxReplicas {
		return catalog.Template{}, 0, badRequest("replicas", "must be in [%d, %d] (got %d)", MinReplicas, MaxReplicas, replicas)
	}
	if req.SynchronousMode == "" {
		req.SynchronousMode = "off"
	}
	if req.SynchronousMode != "on" && req.SynchronousMode != "off" {
		return catalog.Template{}, 0, badRequest("synchronous_mode", "must be \"on\" or \"off\" (got %q)", req.SynchronousMode)
	}
	if req.Provider == "" && len(a.d.Providers) > 0 {
		req.Provider = a.d.Providers[0]
	}
	known := false
	for _, pn := range a.d.Providers {
		known = known || pn == req.Provider
	}
	if !known {
		return catalog.Template{}, 0, badRequest("provider", "must be one of %v (got %q)", a.d.Providers, req.Provider)
	}
	return tpl, replicas, nil
}

// cluster resolves {cluster} (an id or a name) inside {ns}.
func (a *API) cluster(r *http.Request, p *principal, role string) (store.Cluster, error) {
	ns, ref := r.PathValue("ns"), r.PathValue("cluster")
	if err := p.need(ns, role); err != nil {
		return store.Cluster{}, err
	}
	if c, err := a.d.Store.GetCluster(r.Context(), ref); err == nil && c.Namespace == ns {
		return c, nil
	}
	cs, err := a.d.Store.FindClusters(r.Context(), ns, r.URL.Query().Get("project"), ref)
	if err != nil {
		return store.Cluster{}, err
	}
	switch len(cs) {
	case 0:
		return store.Cluster{}, notFound("cluster " + ref)
	case 1:
		return cs[0], nil
	}
	return store.Cluster{}, &proto.APIError{Status: 409, Code: "ambiguous", Field: "project",
		Message: "project: cluster name " + ref + " exists in several projects; add ?project= or use the id"}
}

func (a *API) listClusters(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	pg, err := pageOf(r)
	if err != nil {
		return err
	}
	cs, err := a.d.Store.ListClusters(r.Context(), ns, pg)
	if err != nil {
		return err
	}
	writePage(w, pg, cs, func(c store.Cluster) proto.Cluster { return clusterJSON(c) }, func(c store.Cluster) string { return c.ID })
	return nil
}

// members merges the projection's provisioned nodes with a live etcd read
// (bounded; the projection alone is served when etcd does not answer).
func (a *API) members(ctx context.Context, c store.Cluster) ([]proto.Member, error) {
	ms, _, _, err := a.memberView(ctx, c)
	return ms, err
}

// memberView returns c's members (see members), the store's rows of
// those members by name and the live keyspace read they were merged with
// (zero when etcd is not configured or the read failed within 500 ms).
func (a *API) memberView(ctx context.Context, c store.Cluster) ([]proto.Member, map[string]store.Node, controlplane.Live, error) {
	nodes, err := a.d.Store.ListNodes(ctx, c.ID)
	if err != nil {
		return nil, nil, controlplane.Live{}, err
	}
	var live controlplane.Live
	if a.d.Etcd != nil && len(nodes) > 0 {
		ectx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		live, _ = controlplane.ReadLive(ectx, a.d.Etcd, c.Namespace, c.Project, c.Name)
		cancel()
	}
	out := []proto.Member{}
	rows := map[string]store.Node{}
	for _, n := range nodes {
		if !n.Provisioned() || !proto.ValidName(n.Name) {
			continue // a legacy row learnt from an event: not a member
		}
		rows[n.Name] = n
		m := proto.Member{Name: n.Name, Role: n.Role, State: n.MemberState, Healthy: n.Healthy, LSN: n.LSN, LagBytes: n.LagBytes,
			Timeline: n.Timeline, Term: n.Term, ProviderState: n.State, LastUpdated: ts(n.UpdatedAt)}
		if lm, ok := live.Members[n.Name]; ok {
			// etcd is fresher than the last event: the member key is
			// rewritten every health interval.
			s := lm.Streaming
			m.Streaming = &s
			m.Role, m.State, m.Healthy, m.LagBytes, m.Timeline = lm.Role, lm.State, lm.Healthy, lm.LagBytes, lm.Timeline
			m.LSN = fmt.Sprintf("%X/%X", lm.LSN>>32, uint32(lm.LSN)) // PostgreSQL's pg_lsn text form
			if lag := lm.LagSeconds; lag >= 0 {
				m.LagSeconds = &lag
			}
		} else if live.Revision != 0 {
			// No member key: the agent's lease expired (host lost, agent
			// stopped). The last event no longer describes it.
			m.State, m.Healthy, m.Streaming = "offline", false, nil
			if live.Leader == nil || live.Leader.Node != n.Name {
				m.Role = "unknown"
			}
		}
		out = append(out, m)
	}
	return out, rows, live, nil
}

func (a *API) getCluster(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, err := a.cluster(r, p, RoleViewer)
	if err != nil {
		return err
	}
	cj := clusterJSON(c)
	if cj.Members, err = a.members(r.Context(), c); err != nil {
		return err
	}
	writeJSON(w, 200, cj)
	return nil
}

func (a *API) listNodes(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, err := a.cluster(r, p, RoleViewer)
	if err != nil {
		return err
	}
	ms, err := a.members(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, 200, proto.List[proto.Member]{Items: ms})
	return nil
}

// startOperation persists and publishes an operation on c.
func (a *API) startOperation(w http.ResponseWriter, r *http.Request, c store.Cluster, kind, phase string, params controlplane.OpParams) error {
	b, _ := json.Marshal(params)
	now := time.Now().UTC()
	op := store.Operation{ID: newID("op"), Namespace: c.Namespace, ClusterID: c.ID, Kind: kind, State: store.OpPending,
		Params: b, CreatedAt: now, UpdatedAt: now}
	if err := a.d.Store.CreateOperation(r.Context(), op, phase); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return conflict("another operation on cluster " + c.Name + " is in progress; wait for it to finish")
		}
		return err
	}
	a.publishOperation(r.Context(), op)
	w.Header().Set("Location", "/v1/namespaces/"+c.Namespace+"/operations/"+op.ID)
	writeJSON(w, 202, operationJSON(op))
	return nil
}

func (a *API) deleteCluster(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, err := a.cluster(r, p, RoleOperator)
	if err != nil {
		return err
	}
	return a.startOperation(w, r, c, controlplane.KindDelete, store.PhaseDeleting, controlplane.OpParams{})
}

func (a *API) scaleCluster(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, req, err := clusterRequest[proto.ScaleRequest](a, r, p, RoleOperator)
	if err != nil {
		return err
	}
	if req.Replicas == nil {
		return badRequest("replicas", "required")
	}
	if *req.Replicas < MinReplicas || *req.Replicas > MaxReplicas {
		return badRequest("replicas", "must be in [%d, %d] (got %d)", MinReplicas, MaxReplicas, *req.Replicas)
	}
	return a.startOperation(w, r, c, controlplane.KindScale, store.PhaseProvisioning, controlplane.OpParams{Replicas: *req.Replicas})
}

// updateCluster changes synchronous_mode on a live cluster (operator): it
// answers 202 with an operation of kind update that writes the spec key,
// records the mode and waits until the primary reports it in effect.
// Errors: 400 naming synchronous_mode when it is missing or not "on"/"off";
// 409 while another operation runs on the cluster.
func (a *API) updateCluster(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, req, err := clusterRequest[proto.ClusterUpdate](a, r, p, RoleOperator)
	if err != nil {
		return err
	}
	if req.SynchronousMode == nil {
		return badRequest("synchronous_mode", "required: the setting to change (\"on\" or \"off\"; the only one that can change on a live cluster)")
	}
	if m := *req.SynchronousMode; m != "on" && m != "off" {
		return badRequest("synchronous_mode", "must be \"on\" or \"off\" (got %q)", m)
	}
	return a.startOperation(w, r, c, controlplane.KindUpdate, "", controlplane.OpParams{SynchronousMode: *req.SynchronousMode})
}

func (a *API) switchover(w http.ResponseWriter, r *http.Request, p *principal) error {
	return a.changePrimary(w, r, p, controlplane.KindSwitchover)
}

func (a *API) failover(w http.ResponseWriter, r *http.Request, p *principal) error {
	return a.changePrimary(w, r, p, controlplane.KindFailover)
}

func (a *API) changePrimary(w http.ResponseWriter, r *http.Request, p *principal, kind string) error {
	c, req, err := clusterRequest[proto.SwitchoverRequest](a, r, p, RoleOperator)
	if err != nil {
		return err
	}
	if kind == controlplane.KindFailover {
		if req.To == "" {
			return badRequest("to", "required: the replica to promote")
		}
		if req.From != "" {
			return badRequest("from", "not allowed for a failover (the current primary may be gone)")
		}
	}
	nodes, err := a.d.Store.ListNodes(r.Context(), c.ID)
	if err != nil {
		return err
	}
	// Only nodes the control plane provisioned: a member that merely
	// appeared in etcd or in an event is never a target.
	has := func(n string) bool {
		for _, x := range nodes {
			if x.Name == n && x.Provisioned() {
				return true
			}
		}
		return false
	}
	if req.To != "" && !has(req.To) {
		return badRequest("to", "cluster %s has no provisioned node %s", c.Name, proto.Quote(req.To, 64))
	}
	if req.From != "" && !has(req.From) {
		return badRequest("from", "cluster %s has no provisioned node %s", c.Name, proto.Quote(req.From, 64))
	}
	if len(req.Reason) > 200 || proto.HasControl(req.Reason) {
		return badRequest("reason", "must be at most 200 characters without control characters (got %d)", len(req.Reason))
	}
	return a.startOperation(w, r, c, kind, "", controlplane.OpParams{From: req.From, To: req.To, Reason: req.Reason})
}

func (a *API) restart(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, err := a.cluster(r, p, RoleOperator)
	if err != nil {
		return err
	}
	if r.ContentLength > 0 {
		var req struct{}
		if err := decode(r, &req); err != nil {
			return err
		}
	}
	return a.startOperation(w, r, c, controlplane.KindRestart, "", controlplane.OpParams{})
}

func (a *API) listOperations(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	pg, err := pageOf(r)
	if err != nil {
		return err
	}
	ops, err := a.d.Store.ListOperations(r.Context(), ns, r.URL.Query().Get("cluster_id"), pg)
	if err != nil {
		return err
	}
	writePage(w, pg, ops, func(o store.Operation) proto.Operation { return operationJSON(o) }, func(o store.Operation) string { return o.ID })
	return nil
}

func (a *API) getOperation(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	o, err := a.d.Store.GetOperation(r.Context(), r.PathValue("id"))
	if err != nil || o.Namespace != ns {
		return notFound("operation " + r.PathValue("id"))
	}
	writeJSON(w, 200, operationJSON(o))
	return nil
}

func mustParams(p controlplane.OpParams) []byte {
	b, _ := json.Marshal(p)
	return b
}

func newID(prefix string) string {
	s := controlplane.NewSecret("")
	return prefix + "-" + s[:16]
}

func parseInt(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
