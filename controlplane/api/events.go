package api

import (
	"encoding/json"
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

func (a *API) listEvents(w http.ResponseWriter, r *http.Request, p *principal) {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		writeErr(w, err)
		return
	}
	f, err := eventFilter(r, ns)
	if err != nil {
		writeErr(w, err)
		return
	}
	es, err := a.d.Store.ListEvents(r.Context(), f)
	if err != nil {
		writeErr(w, err)
		return
	}
	out := proto.List[proto.Event]{Items: []proto.Event{}}
	for _, e := range es {
		out.Items = append(out.Items, eventJSON(e))
	}
	if len(es) == f.Limit {
		out.NextPageToken = strconv.FormatInt(es[len(es)-1].Seq, 10)
	}
	writeJSON(w, 200, out)
}

// streamEvents is Server-Sent Events: one "event: <type>" with "id: <seq>"
// and the proto.Event as data per recorded event, starting after the
// Last-Event-ID header or ?after=; a comment line every 15 s keeps
// proxies from closing the stream.
func (a *API) streamEvents(w http.ResponseWriter, r *http.Request, p *principal) {
	ns := r.PathValue("ns")
	if err := p.need(ns, RoleViewer); err != nil {
		writeErr(w, err)
		return
	}
	f, err := eventFilter(r, ns)
	if err != nil {
		writeErr(w, err)
		return
	}
	if s := r.Header.Get("Last-Event-ID"); s != "" {
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			f.AfterSeq = v
		}
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeErr(w, &proto.APIError{Status: 500, Code: "internal", Message: "streaming unsupported"})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(200)
	fl.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		changed := a.d.Projection.Changed()
		es, err := a.d.Store.ListEvents(r.Context(), f)
		if err != nil {
			return
		}
		for _, e := range es {
			b, _ := json.Marshal(eventJSON(e))
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, b); err != nil {
				return
			}
			f.AfterSeq = e.Seq
		}
		fl.Flush()
		if len(es) == f.Limit {
			continue
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		case <-time.After(time.Second): // events recorded by another server replica
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
