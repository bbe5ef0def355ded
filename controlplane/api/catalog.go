package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dbpilot/dbpilot/catalog"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

func (a *API) listCatalog(w http.ResponseWriter, _ *http.Request, _ *principal) error {
	ts, err := catalog.Shipped()
	if err != nil {
		return err
	}
	writeJSON(w, 200, proto.List[catalog.Template]{Items: ts})
	return nil
}

func (a *API) getCatalog(w http.ResponseWriter, r *http.Request, _ *principal) error {
	t, ok := catalog.Lookup(r.PathValue("name"))
	if !ok {
		return notFound("template " + r.PathValue("name"))
	}
	writeJSON(w, 200, t)
	return nil
}

// listNSTemplates lists the shipped templates and the namespace's own.
func (a *API) listNSTemplates(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	out, err := catalog.Shipped()
	if err != nil {
		return err
	}
	uts, err := a.d.Store.ListTemplates(r.Context(), ns)
	if err != nil {
		return err
	}
	for _, ut := range uts {
		if t, err := catalog.FromJSON(ut.Body); err == nil {
			out = append(out, t)
		}
	}
	writeJSON(w, 200, proto.List[catalog.Template]{Items: out})
	return nil
}

func (a *API) getNSTemplate(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	t, ok := a.template(r.Context(), ns, r.PathValue("name"))
	if !ok {
		return notFound("template " + r.PathValue("name"))
	}
	writeJSON(w, 200, t)
	return nil
}

// createTemplate validates and stores a user template (same rules as the
// shipped ones; a shipped name cannot be shadowed).
func (a *API) createTemplate(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleAdmin); err != nil {
		return err
	}
	var t catalog.Template
	if err := decode(r, &t); err != nil {
		return err
	}
	t.Builtin = false
	// Templates choose what runs on the database hosts as the agent's
	// user: only a platform admin may set the fields that decide it
	// (docs/security.md, "Templates and privilege"). Tenants pick
	// approved templates and set only validated fields.
	approvedBy := ""
	if priv := catalog.PrivilegedFields(t); len(priv) > 0 {
		if !p.platformAdmin() {
			return &proto.APIError{Status: 403, Code: "forbidden", Field: priv[0],
				Message: fmt.Sprintf("%s: only a platform admin (admin on every namespace, \"*\") may set %s in a template: they decide what runs on the database hosts; remove them, or ask a platform admin to create the template", priv[0], strings.Join(priv, ", "))}
		}
		approvedBy = p.TokenID
	}
	if err := catalog.Validate(t); err != nil {
		var fe catalog.FieldError
		if errors.As(err, &fe) {
			return badRequest(fe.Field, "%s", strings.TrimPrefix(err.Error(), fe.Field+": "))
		}
		return badRequest("", "%v", err)
	}
	if _, ok := catalog.Lookup(t.Name); ok {
		return &proto.APIError{Status: 409, Code: "already_exists", Field: "name", Message: "name: " + t.Name + " is a shipped template"}
	}
	body, err := catalog.ToStored(t, approvedBy)
	if err != nil {
		return err
	}
	if err := a.d.Store.PutTemplate(r.Context(), store.Template{Namespace: ns, Name: t.Name, Body: body, CreatedAt: time.Now().UTC()}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return &proto.APIError{Status: 409, Code: "already_exists", Field: "name", Message: "name: template " + t.Name + " exists"}
		}
		return err
	}
	writeJSON(w, 201, t)
	return nil
}

func (a *API) deleteTemplate(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleAdmin); err != nil {
		return err
	}
	name := r.PathValue("name")
	// A cluster's later operations (scale, restore, node replacement)
	// render from its template: refuse while clusters use it.
	var users []string
	for page := (store.Page{Limit: 1000}); ; {
		cs, err := a.d.Store.ListClusters(r.Context(), ns, page)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if c.Template == name {
				users = append(users, c.Name)
			}
		}
		if len(cs) < page.Limit {
			break
		}
		page.After = cs[len(cs)-1].ID
	}
	if len(users) > 0 {
		return &proto.APIError{Status: 409, Code: "conflict", Field: "name",
			Message: fmt.Sprintf("name: template %s is used by clusters %s; delete those clusters first", name, strings.Join(users, ", "))}
	}
	if err := a.d.Store.DeleteTemplate(r.Context(), ns, name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
