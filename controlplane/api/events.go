package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

func eventJSON(e store.Event) proto.Event {
	return proto.Event{Seq: e.Seq, ID: e.ID, Type: e.Type, Namespace: e.Namespace, Project: e.Project, Cluster: e.Cluster, Node: e.Node,
		Term: e.Term, Revision: e.Revision, Time: e.Time, Stale: e.Stale, Data: e.Data}
}

// eventFilter reads cluster, node, type, after and limit.
func eventFilter(r *http.Request, ns string) (store.EventFilter, error) {
	q := r.URL.Query()
	f := store.EventFilter{Namespace: ns, Cluster: q.Get("cluster"), Node: q.Get("node"), Type: q.Get("type"), Limit: 100}
	if s := q.Get("after"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return f, badRequest("after", "must be a non-negative event seq (got %q)", s)
		}
		f.AfterSeq = v
	}
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 1000 {
			return f, badRequest("limit", "must be an integer in [1, 1000] (got %q)", s)
		}
		f.Limit = v
	}
	return f, nil
}

func (a *API) listEvents(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	f, err := eventFilter(r, ns)
	if err != nil {
		return err
	}
	es, err := a.d.Store.ListEvents(r.Context(), f)
	if err != nil {
		return err
	}
	out := proto.List[proto.Event]{Items: []proto.Event{}}
	for _, e := range es {
		out.Items = append(out.Items, eventJSON(e))
	}
	if len(es) == f.Limit {
		out.NextPageToken = strconv.FormatInt(es[len(es)-1].Seq, 10)
	}
	writeJSON(w, 200, out)
	return nil
}

// StreamRecheckInterval is how often an event stream checks that its
// token is still valid, still grants the namespace, and that the
// namespace was not deleted (or deleted and created again); the stream
// ends when not.
const StreamRecheckInterval = 250 * time.Millisecond

// streamRevoked says why p may no longer read ns's stream ("" when it
// still may): its token was revoked, lost its grant, or ns is not the
// namespace the stream was opened on any more.
func (a *API) streamRevoked(ctx context.Context, p *principal, ns store.Namespace) string {
	tok, err := a.d.Store.TokenByHash(ctx, p.hash)
	if errors.Is(err, store.ErrNotFound) {
		return "token revoked"
	}
	if err != nil {
		return "" // a store hiccup: check again next tick
	}
	now := newPrincipal(tok, p.hash)
	if now.rank(ns.Name) < roleRank[RoleViewer] {
		return "token no longer grants namespace " + ns.Name
	}
	cur, err := a.d.Store.GetNamespace(ctx, ns.Name)
	if errors.Is(err, store.ErrNotFound) || (err == nil && cur.ID != ns.ID) {
		return "namespace " + ns.Name + " deleted"
	}
	return ""
}

// streamEvents is Server-Sent Events: one "event: <type>" with "id: <seq>"
// and the proto.Event as data per recorded event, starting after the
// Last-Event-ID header or ?after=; a comment line every 15 s keeps
// proxies from closing the stream. The stream ends (after a comment
// saying why) within StreamRecheckInterval of its token being revoked or
// losing the namespace, or of the namespace being deleted.
func (a *API) streamEvents(w http.ResponseWriter, r *http.Request, p *principal) error {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		return err
	}
	f, err := eventFilter(r, ns)
	if err != nil {
		return err
	}
	if s := r.Header.Get("Last-Event-ID"); s != "" {
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			f.AfterSeq = v
		}
	}
	cur, err := a.d.Store.GetNamespace(r.Context(), ns)
	if err != nil {
		return notFound("namespace " + ns)
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		return &proto.APIError{Status: 500, Code: "internal", Message: "streaming unsupported"}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(200)
	fl.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	recheck := time.NewTicker(StreamRecheckInterval)
	defer recheck.Stop()
	closed := func() bool {
		why := a.streamRevoked(r.Context(), p, cur)
		if why != "" {
			_, _ = fmt.Fprintf(w, ": stream closed: %s\n\n", why)
			fl.Flush()
		}
		return why != ""
	}
	for {
		select { // also while a backlog is sent page by page, or events keep coming
		case <-recheck.C:
			if closed() {
				return nil
			}
		default:
		}
		changed := a.d.Projection.Changed()
		es, err := a.d.Store.ListEvents(r.Context(), f)
		if err != nil {
			return nil
		}
		for _, e := range es {
			b, _ := json.Marshal(eventJSON(e))
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, b); err != nil {
				return nil
			}
			f.AfterSeq = e.Seq
		}
		fl.Flush()
		if len(es) == f.Limit {
			continue
		}
		// Wait for new events; the token checks in between do not list.
		poll := time.After(time.Second) // events recorded by another server replica
	wait:
		for {
			select {
			case <-r.Context().Done():
				return nil
			case <-changed:
				break wait
			case <-poll:
				break wait
			case <-keepalive.C:
				if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
					return nil
				}
				fl.Flush()
			case <-recheck.C:
				if closed() {
					return nil
				}
			}
		}
	}
}
