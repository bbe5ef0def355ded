package api

import (
	"cmp"
	"context"
	"net"
	"net/http"
	"net/url"
	"slices"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// targetReadConcurrency bounds how many clusters GET
// /v1/prometheus/targets reads (store rows and etcd keyspace) at once.
const targetReadConcurrency = 8

// prometheusTargets answers GET /v1/prometheus/targets in Prometheus's
// HTTP service discovery format: a JSON array (never null) of one
// proto.PrometheusTargetGroup per provisioned node of every cluster in
// the namespaces the caller may scrape (metrics grants, or viewer and
// above; "*" is every namespace). The address is the agent's HTTP
// listener: its member key's api_url when etcd has one, else the last one
// this server saw, else what the node's provider handle records
// (Deps.AgentAddress); a node with none of these is left out and logged
// at debug level. Errors: 500 when the store cannot be read.
func (a *API) prometheusTargets(w http.ResponseWriter, r *http.Request, p *principal) error {
	clusters, err := a.scrapeClusters(r.Context(), p.scrapable())
	if err != nil {
		return err
	}
	groups := make([][]proto.PrometheusTargetGroup, len(clusters))
	g, ctx := errgroup.WithContext(r.Context())
	g.SetLimit(targetReadConcurrency)
	for i, c := range clusters {
		g.Go(func() error {
			var err error
			groups[i], err = a.clusterTargets(ctx, c)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if p.scrapable() == nil {
		a.pruneAgentAddrs(clusters)
	}
	out := []proto.PrometheusTargetGroup{}
	for _, gs := range groups {
		out = append(out, gs...)
	}
	slices.SortFunc(out, func(x, y proto.PrometheusTargetGroup) int {
		for _, k := range []string{proto.PromLabelNamespace, proto.PromLabelProject, proto.PromLabelCluster, proto.PromLabelNode} {
			if c := cmp.Compare(x.Labels[k], y.Labels[k]); c != 0 {
				return c
			}
		}
		return 0
	})
	writeJSON(w, http.StatusOK, out)
	return nil
}

// pruneAgentAddrs forgets the agent addresses remembered for clusters
// that no longer exist: all is every cluster in the store.
func (a *API) pruneAgentAddrs(all []store.Cluster) {
	live := make(map[string]bool, len(all))
	for _, c := range all {
		live[c.ID] = true
	}
	a.agentAddrs.Range(func(k, _ any) bool {
		if !live[k.(string)] {
			a.agentAddrs.Delete(k)
		}
		return true
	})
}

// scrapeClusters lists the clusters of namespaces (nil: every namespace).
func (a *API) scrapeClusters(ctx context.Context, namespaces []string) ([]store.Cluster, error) {
	if namespaces != nil {
		slices.Sort(namespaces)
		namespaces = slices.Compact(namespaces)
	} else {
		namespaces = []string{""} // ListClusters: every namespace
	}
	var out []store.Cluster
	for _, ns := range namespaces {
		pg := store.Page{Limit: 1000}
		for {
			cs, err := a.d.Store.ListClusters(ctx, ns, pg)
			if err != nil {
				return nil, err
			}
			out = append(out, cs...)
			if len(cs) < pg.Limit {
				break
			}
			pg.After = cs[len(cs)-1].ID
		}
	}
	return out, nil
}

// clusterTargets returns one target group per member of c that has a
// known agent address.
func (a *API) clusterTargets(ctx context.Context, c store.Cluster) ([]proto.PrometheusTargetGroup, error) {
	ms, rows, live, err := a.memberView(ctx, c)
	if err != nil {
		return nil, err
	}
	// The addresses remembered for c's members (a fresh map replaces the
	// old one, so removed nodes are forgotten).
	var known map[string]string
	if v, ok := a.agentAddrs.Load(c.ID); ok {
		known = v.(map[string]string)
	}
	seen := map[string]string{}
	var out []proto.PrometheusTargetGroup
	for _, m := range ms {
		addr := ""
		if lm, ok := live.Members[m.Name]; ok {
			addr = hostPort(lm.APIURL)
		}
		if addr == "" && live.Leader != nil && live.Leader.Node == m.Name {
			addr = hostPort(live.Leader.APIURL)
		}
		if addr == "" {
			addr = known[m.Name]
		}
		if addr != "" {
			seen[m.Name] = addr
		} else if a.d.AgentAddress != nil {
			addr = a.d.AgentAddress(c.Provider, rows[m.Name].Handle)
		}
		if addr == "" {
			a.d.Log.Debug("prometheus targets: no agent address known yet", zap.String("cluster", c.ID), zap.String("node", m.Name))
			continue
		}
		out = append(out, proto.PrometheusTargetGroup{Targets: []string{addr}, Labels: map[string]string{
			proto.PromLabelNamespace: c.Namespace, proto.PromLabelProject: c.Project, proto.PromLabelCluster: c.Name,
			proto.PromLabelNode: m.Name, proto.PromLabelRole: promRole(m.Role), proto.PromLabelEngine: c.Engine,
			proto.PromLabelTemplate: c.Template,
		}})
	}
	a.agentAddrs.Store(c.ID, seen)
	return out, nil
}

// promRole maps a member's role to the role label: primary, replica or
// unknown (also for a role not yet reported).
func promRole(role string) string {
	if role == proto.RolePrimary || role == proto.RoleReplica {
		return role
	}
	return proto.RoleUnknown
}

// hostPort returns the "host:port" of an agent's api_url
// ("http://10.0.0.5:8008"); "" when it is empty or has no port.
func hostPort(apiURL string) string {
	u, err := url.Parse(apiURL)
	if err != nil || u.Host == "" {
		return ""
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
		return ""
	}
	return u.Host
}
