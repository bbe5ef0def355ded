package api

import (
	"net/http"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// checkName applies the one name rule (proto.NamePattern) to a request
// field.
func checkName(field, v string) error {
	if !proto.ValidName(v) {
		return badRequest(field, "must be 1-40 lowercase letters, digits or '-', starting and ending with a letter or digit (got %s)", proto.Quote(v, 64))
	}
	return nil
}

// namePathValues are the path wildcards that carry a namespace, project,
// cluster (name or id) or node name.
var namePathValues = []string{"ns", "project", "cluster", "node"}

// checkPathNames applies the name rule to every name wildcard of r's path:
// a name that could never have been created is refused before any store,
// etcd or provider call sees it.
func checkPathNames(r *http.Request) error {
	for _, k := range namePathValues {
		if v := r.PathValue(k); v != "" {
			if err := checkName(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *API) whoami(w http.ResponseWriter, _ *http.Request, p *principal) error {
	writeJSON(w, 200, proto.WhoAmI{Grants: grantsJSON(p.all), Name: p.Name, TokenID: p.TokenID})
	return nil
}

func (a *API) listNamespaces(w http.ResponseWriter, r *http.Request, p *principal) error {
	pg, err := pageOf(r)
	if err != nil {
		return err
	}
	ns, err := a.d.Store.ListNamespaces(r.Context(), pg, p.visible())
	if err != nil {
		return err
	}
	writePage(w, pg, ns, func(n store.Namespace) proto.Namespace { return proto.Namespace{Name: n.Name, CreatedAt: n.CreatedAt} }, func(n store.Namespace) string { return n.Name })
	return nil
}

func (a *API) createNamespace(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.platformAdmin() {
		return forbidden("creating namespaces needs the admin role on every namespace (\"*\")")
	}
	var req proto.NameRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := checkName("name", req.Name); err != nil {
		return err
	}
	n, err := a.d.Store.CreateNamespace(r.Context(), req.Name)
	if err != nil {
		return err
	}
	writeJSON(w, 201, proto.Namespace{Name: n.Name, CreatedAt: n.CreatedAt})
	return nil
}

func (a *API) getNamespace(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	n, err := a.d.Store.GetNamespace(r.Context(), ns)
	if err != nil {
		return notFound("namespace " + ns)
	}
	writeJSON(w, 200, proto.Namespace{Name: n.Name, CreatedAt: n.CreatedAt})
	return nil
}

func (a *API) deleteNamespace(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	if !p.platformAdmin() {
		return forbidden("deleting namespaces needs the admin role on every namespace (\"*\")")
	}
	if err := a.d.Store.DeleteNamespace(r.Context(), ns); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) listProjects(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	pg, err := pageOf(r)
	if err != nil {
		return err
	}
	ps, err := a.d.Store.ListProjects(r.Context(), ns, pg)
	if err != nil {
		return err
	}
	writePage(w, pg, ps, func(x store.Project) proto.Project {
		return proto.Project{Namespace: ns, Name: x.Name, CreatedAt: x.CreatedAt}
	}, func(x store.Project) string { return x.Name })
	return nil
}

func (a *API) createProject(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleAdmin); err != nil {
		return err
	}
	var req proto.NameRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := checkName("name", req.Name); err != nil {
		return err
	}
	x, err := a.d.Store.CreateProject(r.Context(), ns, req.Name)
	if err != nil {
		return err
	}
	writeJSON(w, 201, proto.Project{Namespace: ns, Name: x.Name, CreatedAt: x.CreatedAt})
	return nil
}

func (a *API) getProject(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	x, err := a.d.Store.GetProject(r.Context(), ns, r.PathValue("project"))
	if err != nil {
		return notFound("project " + r.PathValue("project"))
	}
	writeJSON(w, 200, proto.Project{Namespace: ns, Name: x.Name, CreatedAt: x.CreatedAt})
	return nil
}

func (a *API) writeAudit(w http.ResponseWriter, r *http.Request, ns string) error {
	pg, err := pageOf(r)
	if err != nil {
		return err
	}
	var after int64
	if pg.After != "" {
		after, _ = parseInt(pg.After)
	}
	es, err := a.d.Store.ListAudit(r.Context(), ns, after, pg.Limit)
	if err != nil {
		return err
	}
	writePage(w, pg, es, func(e store.AuditEntry) proto.Audit { return proto.Audit(e) }, func(e store.AuditEntry) string { return itoa(e.Seq) })
	return nil
}

func (a *API) listNSAudit(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleAdmin); err != nil {
		return err
	}
	return a.writeAudit(w, r, ns)
}

func (a *API) listAudit(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.platformAdmin() {
		return forbidden("the global audit log needs the admin role on every namespace (\"*\")")
	}
	return a.writeAudit(w, r, "")
}
