package api

import (
	"net/http"
	"time"

	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

func tokenJSON(t store.Token) proto.Token {
	return proto.Token{ID: t.ID, Name: t.Name, Grants: grantsJSON(t.Grants), CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, RevokedAt: ts(t.RevokedAt)}
}

// grantsJSON returns a token's grants as the API sends them (nil stays
// nil).
func grantsJSON(gs []store.Grant) []proto.Grant {
	if gs == nil {
		return nil
	}
	out := make([]proto.Grant, len(gs))
	for i, g := range gs {
		out[i] = proto.Grant{Namespace: g.Namespace, Role: g.Role}
	}
	return out
}

// storeGrants returns requested grants as the store keeps them.
func storeGrants(gs []proto.Grant) []store.Grant {
	out := make([]store.Grant, len(gs))
	for i, g := range gs {
		out[i] = store.Grant{Namespace: g.Namespace, Role: g.Role}
	}
	return out
}

// createToken issues a token. The caller must be admin of every namespace
// it grants (platform admin for "*"), the metrics role included.
func (a *API) createToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req proto.TokenCreate
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Name == "" || len(req.Name) > 100 || proto.HasControl(req.Name) {
		return badRequest("name", "required, at most 100 characters, no control characters (newlines, tabs, escapes)")
	}
	if len(req.Grants) == 0 {
		return badRequest("grants", "at least one grant is required")
	}
	for i, g := range req.Grants {
		f := "grants[" + itoa(int64(i)) + "]"
		if _, ok := roleRank[g.Role]; !ok && g.Role != RoleMetrics {
			return badRequest(f+".role", "must be viewer, operator, admin or metrics (got %q)", g.Role)
		}
		if g.Namespace == AllNamespaces {
			if !p.platformAdmin() {
				return forbidden("granting \"*\" needs the admin role on every namespace")
			}
			continue
		}
		if err := p.need(g.Namespace, RoleAdmin); err != nil {
			return err
		}
		if _, err := a.d.Store.GetNamespace(r.Context(), g.Namespace); err != nil {
			return badRequest(f+".namespace", "no namespace %q", g.Namespace)
		}
	}
	secret := controlplane.NewSecret("dbp_")
	t := store.Token{ID: newID("tok"), Name: req.Name, Hash: controlplane.HashSecret(secret), Grants: storeGrants(req.Grants), CreatedBy: p.TokenID, CreatedAt: time.Now().UTC()}
	if err := a.d.Store.CreateToken(r.Context(), t); err != nil {
		return err
	}
	out := tokenJSON(t)
	out.Secret = secret
	writeJSON(w, 201, out)
	return nil
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.platformAdmin() {
		return forbidden("listing tokens needs the admin role on every namespace (\"*\")")
	}
	pg, err := pageOf(r)
	if err != nil {
		return err
	}
	ts, err := a.d.Store.ListTokens(r.Context(), pg)
	if err != nil {
		return err
	}
	writePage(w, pg, ts, func(t store.Token) proto.Token { return tokenJSON(t) }, func(t store.Token) string { return t.ID })
	return nil
}

// revokeToken: a token may revoke itself, tokens it created, or (platform
// admin) any token. Others get 404.
func (a *API) revokeToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := a.d.Store.GetToken(r.Context(), r.PathValue("id"))
	if err != nil || !(p.platformAdmin() || t.ID == p.TokenID || t.CreatedBy == p.TokenID) {
		return notFound("token " + r.PathValue("id"))
	}
	if err := a.d.Store.RevokeToken(r.Context(), t.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
