package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// Query insight: GET …/clusters/{cluster}/top and …/sessions relay the
// current primary's agent answer (GET /v1/statements, GET /v1/sessions on
// the agent's HTTP endpoint, found from the leader key's api_url in etcd).

// insightTimeout bounds the whole relay: the etcd read and the request to
// the agent (whose own budget is 3 s).
const insightTimeout = 5 * time.Second

// maxInsightBody bounds the agent's answer read by the relay, in bytes.
const maxInsightBody = 4 << 20

// agentHTTP is the client of the relay: no redirects are followed (the
// api_url comes from etcd, written by agents).
var agentHTTP = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func (a *API) clusterTop(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, err := a.cluster(r, p, RoleViewer)
	if err != nil {
		return err
	}
	limit, err := statementsLimit(r.URL.Query())
	if err != nil {
		return err
	}
	var out proto.StatementStats
	if err := a.fromPrimary(r.Context(), c, "/v1/statements", url.Values{"limit": {strconv.Itoa(limit)}}, &out); err != nil {
		return err
	}
	writeJSON(w, 200, out)
	return nil
}

func (a *API) clusterSessions(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, err := a.cluster(r, p, RoleViewer)
	if err != nil {
		return err
	}
	var out proto.Sessions
	if err := a.fromPrimary(r.Context(), c, "/v1/sessions", nil, &out); err != nil {
		return err
	}
	writeJSON(w, 200, out)
	return nil
}

// statementsLimit parses ?limit= (default proto.DefaultStatementsLimit,
// 1..proto.MaxStatementsLimit).
func statementsLimit(q url.Values) (int, error) {
	v, given := q["limit"]
	if !given {
		return proto.DefaultStatementsLimit, nil
	}
	n, err := strconv.Atoi(v[0])
	if len(v) != 1 || err != nil || n < 1 || n > proto.MaxStatementsLimit {
		return 0, badRequest("limit", "must be one whole number from 1 to %d (got %q)", proto.MaxStatementsLimit, v)
	}
	return n, nil
}

func unavailable(format string, args ...any) *proto.APIError {
	return &proto.APIError{Status: 503, Code: "unavailable", Message: fmt.Sprintf(format, args...)}
}

// fromPrimary GETs path?query from the agent of c's current primary into out.
// Errors (*proto.APIError): 503 unavailable when no primary is known (no
// etcd configured or answering, no leader key, no api_url) or when the
// agent answers 503 (PostgreSQL or pg_stat_statements not available, its
// message relayed); 502 bad_gateway when the agent cannot be reached or
// answers something else.
func (a *API) fromPrimary(ctx context.Context, c store.Cluster, path string, query url.Values, out any) error {
	ref := c.Namespace + "/" + c.Name
	if a.d.Etcd == nil {
		return unavailable("no primary known for cluster %s: this server reads no cluster state from etcd", ref)
	}
	ctx, cancel := context.WithTimeout(ctx, insightTimeout)
	defer cancel()
	ectx, ecancel := context.WithTimeout(ctx, time.Second)
	live, err := controlplane.ReadLive(ectx, a.d.Etcd, c.Namespace, c.Project, c.Name)
	ecancel()
	if err != nil {
		return unavailable("no primary known for cluster %s: etcd did not answer (%v); retry", ref, err)
	}
	if live.Leader == nil {
		return unavailable("no primary known for cluster %s: no member holds the leader key (failover or start in progress); retry shortly", ref)
	}
	node := live.Leader.Node
	base := live.Leader.APIURL
	if m, ok := live.Members[node]; ok && m.APIURL != "" {
		base = m.APIURL
	}
	u, err := url.Parse(base)
	if base == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return unavailable("the primary %s of cluster %s advertises no usable agent HTTP address (api_url %q): its agent needs http.listen", node, ref, base)
	}
	target := u.JoinPath(path)
	target.RawQuery, target.Fragment = query.Encode(), ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := agentHTTP.Do(req)
	if err != nil {
		return &proto.APIError{Status: 502, Code: "bad_gateway", Message: fmt.Sprintf("the agent of primary %s of cluster %s did not answer: %v", node, ref, err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxInsightBody+1))
	if err == nil && len(body) > maxInsightBody {
		err = errors.New("answer larger than 4 MiB")
	}
	if err != nil {
		return &proto.APIError{Status: 502, Code: "bad_gateway", Message: fmt.Sprintf("the agent of primary %s of cluster %s: reading its answer: %v", node, ref, err)}
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		msg := fmt.Sprintf("the agent of primary %s of cluster %s answered %d: %s", node, ref, resp.StatusCode, proto.Truncate([]byte(e.Error), controlplane.MaxLoggedInput))
		if resp.StatusCode == http.StatusServiceUnavailable {
			return unavailable("%s", msg)
		}
		return &proto.APIError{Status: 502, Code: "bad_gateway", Message: msg}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return &proto.APIError{Status: 502, Code: "bad_gateway", Message: fmt.Sprintf("the agent of primary %s of cluster %s: its answer does not decode: %v", node, ref, err)}
	}
	return nil
}
