package api

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// Roles, weakest first.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// RoleMetrics is the scrape role, outside the viewer < operator < admin
// ranks: a metrics grant lets its token call GET /v1/prometheus/targets
// (the targets of the grant's namespace; of every namespace on "*") and
// GET /v1/whoami, nothing else. A token with only metrics grants gets 403
// on every other route; beside ranked grants, a metrics grant counts as
// no grant outside the targets. It is what a Prometheus server's
// http_sd_configs bearer token should hold (docs/security.md).
const RoleMetrics = "metrics"

// AllNamespaces in a grant means every namespace: the platform
// administrator (namespaces, tokens, fleet).
const AllNamespaces = "*"

var roleRank = map[string]int{RoleViewer: 1, RoleOperator: 2, RoleAdmin: 3}

// principal is the authenticated caller.
type principal struct {
	TokenID string
	Name    string
	// Grants are the token's ranked grants (viewer, operator, admin): every
	// check but the Prometheus targets' reads these alone.
	Grants []store.Grant
	// scrape are the namespaces of the token's metrics grants ("*": all).
	scrape []string
	// all are every grant of the token, as whoami shows them.
	all []store.Grant
	// hash is the token's hash (streams look the token up again).
	hash string
}

// metricsRoutes are the route patterns a token holding only metrics
// grants may call; every other route answers it 403.
var metricsRoutes = map[string]bool{"GET /v1/prometheus/targets": true, "GET /v1/whoami": true}

// newPrincipal returns the caller tok authenticates as: its metrics
// grants set apart from the ranked ones, so that they open nothing but
// the Prometheus targets.
func newPrincipal(tok store.Token, hash string) *principal {
	p := &principal{TokenID: tok.ID, Name: tok.Name, all: tok.Grants, hash: hash}
	for _, g := range tok.Grants {
		if g.Role == RoleMetrics {
			p.scrape = append(p.scrape, g.Namespace)
			continue
		}
		p.Grants = append(p.Grants, g)
	}
	return p
}

// scrapable returns the namespaces whose Prometheus targets the caller
// may read: those of its metrics grants and those where it is at least
// viewer (nil: every namespace; empty: none).
func (p *principal) scrapable() []string {
	out := []string{}
	for _, ns := range p.scrape {
		if ns == AllNamespaces {
			return nil
		}
		out = append(out, ns)
	}
	for _, g := range p.Grants {
		if roleRank[g.Role] < roleRank[RoleViewer] {
			continue
		}
		if g.Namespace == AllNamespaces {
			return nil
		}
		out = append(out, g.Namespace)
	}
	return out
}

// rank returns the caller's role rank in ns (0: no access).
func (p *principal) rank(ns string) int {
	best := 0
	for _, g := range p.Grants {
		if g.Namespace == ns || g.Namespace == AllNamespaces {
			best = max(best, roleRank[g.Role])
		}
	}
	return best
}

// platformAdmin reports whether the caller is admin of every namespace.
func (p *principal) platformAdmin() bool {
	for _, g := range p.Grants {
		if g.Namespace == AllNamespaces && g.Role == RoleAdmin {
			return true
		}
	}
	return false
}

// visible returns the namespaces the caller has grants in (nil: all).
func (p *principal) visible() []string {
	out := []string{}
	for _, g := range p.Grants {
		if g.Namespace == AllNamespaces {
			return nil
		}
		out = append(out, g.Namespace)
	}
	return out
}

// need checks the caller's role in ns. A caller with no role at all in ns
// gets 404 for the namespace, as if it did not exist (no name leaks); a
// caller who can see ns but lacks the role gets 403.
func (p *principal) need(ns, role string) error {
	r := p.rank(ns)
	if r == 0 {
		return notFound("namespace " + ns)
	}
	if r < roleRank[role] {
		return forbidden("this action needs the " + role + " role in namespace " + ns)
	}
	return nil
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = 200
	}
	return s.ResponseWriter.Write(b)
}

// Flush lets SSE through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// authed authenticates the bearer token and audits every mutation (who,
// what, when, result), including refused ones, and every request that
// fails authentication. A client IP whose failed requests exceed the
// failure limit gets 429 with Retry-After, and those answers are not
// audited.
func (a *API) authed(h authedFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		var p *principal
		limited := false
		defer func() {
			if !limited && (rec.status == http.StatusUnauthorized || (r.Method != http.MethodGet && r.Method != http.MethodHead)) {
				a.audit(r, p, rec.status)
			}
		}()
		refuse := func(challenge, msg string) {
			if ok, wait := a.failures.fail(clientIP(r)); !ok {
				limited = true
				secs := max(1, int(math.Ceil(wait.Seconds())))
				rec.Header().Set("Retry-After", strconv.Itoa(secs))
				writeErr(rec, &proto.APIError{Status: http.StatusTooManyRequests, Code: "rate_limited",
					Message: "too many requests with a missing or invalid token from this address; retry after " + strconv.Itoa(secs) + " s"})
				return
			}
			rec.Header().Set("WWW-Authenticate", challenge)
			writeErr(rec, &proto.APIError{Status: 401, Code: "unauthenticated", Message: msg})
		}
		authz := r.Header.Get("Authorization")
		secret, ok := strings.CutPrefix(authz, "Bearer ")
		if !ok || secret == "" {
			refuse(`Bearer realm="dbpilot"`, "missing bearer token (Authorization: Bearer <token>)")
			return
		}
		hash := controlplane.HashSecret(secret)
		tok, err := a.d.Store.TokenByHash(r.Context(), hash)
		if err != nil {
			refuse(`Bearer realm="dbpilot", error="invalid_token"`, "invalid or revoked token")
			return
		}
		p = newPrincipal(tok, hash)
		if len(p.Grants) == 0 && len(p.scrape) > 0 && !metricsRoutes[r.Pattern] {
			writeErr(rec, forbidden("a token with only the metrics role may call GET /v1/prometheus/targets and GET /v1/whoami, nothing else"))
			return
		}
		if err := checkPathNames(r); err != nil {
			writeErr(rec, err)
			return
		}
		if err := h(rec, r, p); err != nil {
			writeErr(rec, err)
		}
	}
}

// audit records one request. Every text field is bounded (MaxAuditField);
// an anonymous actor names the client address and User-Agent.
func (a *API) audit(r *http.Request, p *principal, status int) {
	actor := "anonymous from " + clientIP(r)
	if ua := r.UserAgent(); ua != "" {
		actor += " (" + ua + ")"
	}
	if p != nil {
		actor = p.TokenID + " (" + p.Name + ")"
	}
	result := "ok"
	if status >= 400 {
		result = http.StatusText(status)
	}
	e := store.AuditEntry{At: time.Now().UTC(), Actor: bounded(actor), Namespace: bounded(r.PathValue("ns")), Action: bounded(auditAction(r)),
		Resource: bounded(r.URL.Path), Status: status, Result: bounded(result)}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := a.d.Store.Audit(ctx, e); err != nil {
		a.d.Log.Error("audit record lost", zap.String("actor", e.Actor), zap.String("action", e.Action), zap.Error(err))
	}
}
