package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// Fleet host maintenance (cordon, uncordon, drain) and the host runner's
// acknowledgements (restart generation, applied agent config).

// nodesPerHost counts the allocations (active and releasing) of each host.
func (a *API) nodesPerHost(ctx context.Context) (map[string]int, error) {
	allocs, err := a.d.Store.ListAllocations(ctx, "")
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, x := range allocs {
		out[x.HostID]++
	}
	return out, nil
}

// fleetHost resolves {host} (id or name) for a platform admin.
func (a *API) fleetHost(r *http.Request, p *principal) (store.Host, error) {
	if !p.platformAdmin() {
		return store.Host{}, forbidden("the fleet needs the admin role on every namespace (\"*\")")
	}
	h, err := a.d.Store.GetHost(r.Context(), r.PathValue("host"))
	if errors.Is(err, store.ErrNotFound) {
		return store.Host{}, &proto.APIError{Status: 404, Code: "not_found", Field: "host", Message: "host: no host with id or name " + r.PathValue("host")}
	}
	return h, err
}

// noBody accepts an empty body or an empty JSON object.
func noBody(r *http.Request) error {
	if r.ContentLength == 0 {
		return nil
	}
	var req struct{}
	return decode(r, &req)
}

// writeHost answers a host with its node count.
func (a *API) writeHost(w http.ResponseWriter, r *http.Request, id string) error {
	h, err := a.d.Store.GetHost(r.Context(), id)
	if err != nil {
		return err
	}
	count, err := a.nodesPerHost(r.Context())
	if err != nil {
		return err
	}
	hj := hostJSON(h)
	hj.Nodes = count[h.ID]
	writeJSON(w, 200, hj)
	return nil
}

// cordonHost stops new allocations on a host; its nodes keep running.
// Idempotent. Platform admin.
func (a *API) cordonHost(w http.ResponseWriter, r *http.Request, p *principal) error {
	h, err := a.fleetHost(r, p)
	if err == nil {
		err = noBody(r)
	}
	if err == nil {
		err = a.d.Store.SetHostState(r.Context(), h.ID, store.HostCordoned)
	}
	if err != nil {
		return err
	}
	a.d.Log.Info("host cordoned", zap.String("host", h.Name), zap.String("by", p.Name))
	return a.writeHost(w, r, h.ID)
}

// uncordonHost lets a cordoned host take allocations again; refused (409)
// while a drain of the host is unfinished. Platform admin.
func (a *API) uncordonHost(w http.ResponseWriter, r *http.Request, p *principal) error {
	h, err := a.fleetHost(r, p)
	if err == nil {
		err = noBody(r)
	}
	if err != nil {
		return err
	}
	if op, ok, err := a.unfinishedDrain(r.Context(), h.ID); err != nil {
		return err
	} else if ok {
		return conflict("host " + h.Name + " is being drained (operation " + op.ID + "); wait for it to end before uncordoning")
	}
	if err := a.d.Store.SetHostState(r.Context(), h.ID, store.HostReady); err != nil {
		return err
	}
	a.d.Log.Info("host uncordoned", zap.String("host", h.Name), zap.String("by", p.Name))
	return a.writeHost(w, r, h.ID)
}

func (a *API) unfinishedDrain(ctx context.Context, hostID string) (store.Operation, bool, error) {
	ops, err := a.d.Store.UnfinishedOperations(ctx)
	if err != nil {
		return store.Operation{}, false, err
	}
	for _, op := range ops {
		if op.Kind == controlplane.KindDrain && op.ClusterID == hostID {
			return op, true, nil
		}
	}
	return store.Operation{}, false, nil
}

// drainHost cordons a host and starts a drain operation that moves every
// node off it (one move operation per node, in the node's cluster; see
// controlplane.KindDrain). 202 with the operation, to poll at
// GET /v1/infra/operations/{id}; 409 while the host is drained already.
// Platform admin.
func (a *API) drainHost(w http.ResponseWriter, r *http.Request, p *principal) error {
	h, err := a.fleetHost(r, p)
	if err == nil {
		err = noBody(r)
	}
	if err != nil {
		return err
	}
	// Cordon now: nothing new lands on the host from this answer on.
	if err := a.d.Store.SetHostState(r.Context(), h.ID, store.HostCordoned); err != nil {
		return err
	}
	now := time.Now().UTC()
	op := store.Operation{ID: newID("op"), ClusterID: h.ID, Kind: controlplane.KindDrain, State: store.OpPending,
		Params: mustParams(controlplane.OpParams{Reason: "drain of host " + h.Name}), CreatedAt: now, UpdatedAt: now}
	if err := a.d.Store.CreateOperation(r.Context(), op, ""); err != nil {
		if errors.Is(err, store.ErrConflict) {
			if cur, ok, _ := a.unfinishedDrain(r.Context(), h.ID); ok {
				err = conflict("host " + h.Name + " is being drained already (operation " + cur.ID + ")")
			} else {
				err = conflict("host " + h.Name + " is being drained already")
			}
		}
		return err
	}
	a.d.Log.Info("host drain requested", zap.String("host", h.Name), zap.String("operation", op.ID), zap.String("by", p.Name))
	a.publishOperation(r.Context(), op)
	w.Header().Set("Location", "/v1/infra/operations/"+op.ID)
	writeJSON(w, 202, operationJSON(op))
	return nil
}

// getInfraOperation returns any operation by id, including the host-level
// ones (drain) that belong to no namespace. Platform admin.
func (a *API) getInfraOperation(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.platformAdmin() {
		return forbidden("the fleet needs the admin role on every namespace (\"*\")")
	}
	o, err := a.d.Store.GetOperation(r.Context(), r.PathValue("id"))
	if err != nil {
		return notFound("operation " + r.PathValue("id"))
	}
	writeJSON(w, 200, operationJSON(o))
	return nil
}

// ackAssignment records what a host applied for one of its nodes (host
// credential): body {"restart_generation", "config_sha256",
// "config_error"}. 204; 404 when the node is not assigned to this host.
func (a *API) ackAssignment(w http.ResponseWriter, r *http.Request) error {
	h, err := a.hostFromCredential(r)
	if err != nil {
		return err
	}
	var req proto.AssignmentAck
	if err := decode(r, &req); err != nil {
		return err
	}
	switch {
	case req.RestartGeneration < 0:
		return badRequest("restart_generation", "must be >= 0 (got %d)", req.RestartGeneration)
	case len(req.ConfigSHA256) > 64:
		return badRequest("config_sha256", "must be a hex SHA-256 (64 characters, got %d)", len(req.ConfigSHA256))
	case len(req.ConfigError) > 4000:
		req.ConfigError = req.ConfigError[:4000]
	}
	cluster, node := r.PathValue("cluster"), r.PathValue("node")
	if err := a.d.Store.AckAllocation(r.Context(), h.ID, cluster, node, req.RestartGeneration, req.ConfigSHA256, req.ConfigError); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = &proto.APIError{Status: 404, Code: "not_found", Message: "no assignment " + cluster + "/" + node + " on this host"}
		}
		return err
	}
	if req.ConfigError != "" {
		a.d.Log.Warn("host refused a node's agent config", zap.String("host", h.Name), zap.String("cluster", cluster), zap.String("node", node),
			zap.String("error", req.ConfigError))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
