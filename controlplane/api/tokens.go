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
// it grants (platform admin for "*").
func (a *API) createToken(w http.ResponseWriter, r *http.Request, p *principal) {
	var req proto.TokenCreate
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if req.Name == "" || len(req.Name) > 100 || proto.HasControl(req.Name) {
		writeErr(w, badRequest("name", "required, at most 100 characters, no control characters (newlines, tabs, escapes)"))
		return
	}
	if len(req.Grants) == 0 {
		writeErr(w, badRequest("grants", "at least one grant is required"))
		return
	}
	for i, g := range req.Grants {
		f := "grants[" + itoa(int64(i)) + "]"
		if _, ok := roleRank[g.Role]; !ok {
			writeErr(w, badRequest(f+".role", "must be viewer, operator or admin (got %q)", g.Role))
			return
		}
		if g.Namespace == AllNamespaces {
			if !p.platformAdmin() {
				writeErr(w, forbidden("granting \"*\" needs the admin role on every namespace"))
				return
			}
			continue
		}
		if err := p.need(g.Namespace, RoleAdmin); err != nil {
			writeErr(w, err)
			return
		}
		if _, err := a.d.Store.GetNamespace(r.Context(), g.Namespace); err != nil {
			writeErr(w, badRequest(f+".namespace", "no namespace %q", g.Namespace))
			return
		}
	}
	secret := controlplane.NewSecret("dbp_")
	t := store.Token{ID: newID("tok"), Name: req.Name, Hash: controlplane.HashSecret(secret), Grants: storeGrants(req.Grants), CreatedBy: p.TokenID, CreatedAt: time.Now().UTC()}
	if err := a.d.Store.CreateToken(r.Context(), t); err != nil {
		writeErr(w, err)
		return
	}
	out := tokenJSON(t)
	out.Secret = secret
	writeJSON(w, 201, out)
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request, p *principal) {
	if !p.platformAdmin() {
		writeErr(w, forbidden("listing tokens needs the admin role on every namespace (\"*\")"))
		return
	}
	pg, err := pageOf(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	ts, err := a.d.Store.ListTokens(r.Context(), pg)
	if err != nil {
		writeErr(w, err)
		return
	}
	writePage(w, pg, ts, func(t store.Token) proto.Token { return tokenJSON(t) }, func(t store.Token) string { return t.ID })
}

// revokeToken: a token may revoke itself, tokens it created, or (platform
// admin) any token. Others get 404.
func (a *API) revokeToken(w http.ResponseWriter, r *http.Request, p *principal) {
	t, err := a.d.Store.GetToken(r.Context(), r.PathValue("id"))
	if err != nil || !(p.platformAdmin() || t.ID == p.TokenID || t.CreatedBy == p.TokenID) {
		writeErr(w, notFound("token "+r.PathValue("id")))
		return
	}
	if err := a.d.Store.RevokeToken(r.Context(), t.ID); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
