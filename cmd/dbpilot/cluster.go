package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/cmd/dbpilot/internal/client"
	"github.com/dbpilot/dbpilot/proto"
)

func newClusterCmd(a *app) *cobra.Command {
	cmd := group("cluster", "Create, inspect and operate database clusters", []string{"clusters"})
	cmd.AddCommand(newClusterCreateCmd(a), newClusterListCmd(a), newClusterGetCmd(a), newClusterDeleteCmd(a),
		newClusterScaleCmd(a), newClusterSetCmd(a), newClusterSwitchoverCmd(a), newClusterFailoverCmd(a), newClusterRestartCmd(a),
		newClusterTopCmd(a), newClusterSessionsCmd(a))
	return cmd
}

// completeClusters completes cluster names from the API (first argument
// only).
func (a *app) completeClusters(cmd *cobra.Command, argv []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(argv) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, ns, err := a.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	cs, err := cl.ListClusters(ctx, ns)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Name+"\t"+c.Phase+", "+fmt.Sprint(c.Replicas)+" nodes")
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// waitFlags are --wait on a long operation.
type waitFlags struct{ wait bool }

func (w *waitFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&w.wait, "wait", "w", false, "wait until the operation finishes, showing progress (bounded by --timeout)")
}

// operate runs a cluster operation: start it, then either print the
// operation, or wait and print the cluster.
func (a *app) operate(cmd *cobra.Command, wf waitFlags, ws *waitSpec, start func(ctx context.Context, cl *client.Client, ns string) (client.Operation, error)) error {
	cl, ns, err := a.client()
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	op, err := start(ctx, cl, ns)
	if err != nil {
		return err
	}
	ws.ns = ns
	if !wf.wait {
		return a.printObject(op.Raw(), func(w io.Writer) {
			fmt.Fprintf(w, "%s: operation %s (%s) accepted.\n", ws.label, op.ID, op.Kind)
			fmt.Fprintf(w, "Follow it with `dbpilot cluster get %s`, or pass --wait.\n", ws.cluster)
		})
	}
	op, err = a.wait(ctx, cl, op, *ws)
	if err != nil {
		return err
	}
	if op.Kind == "delete" {
		return a.printObject(op.Raw(), func(w io.Writer) { fmt.Fprintf(w, "Cluster %s deleted.\n", ws.cluster) })
	}
	if op.Kind == "backup" {
		// The result is the backup, not a change of the cluster.
		return a.printObject(op.Raw(), func(w io.Writer) {
			fmt.Fprintf(w, "Backup %s of %s: %s.\n", orDash(op.BackupID), ws.cluster, orDash(op.Progress))
		})
	}
	c, err := a.settle(ctx, cl, ns, *ws)
	if err != nil {
		return err
	}
	return a.printObject(c.Raw(), func(w io.Writer) { a.topology(ctx, w, cl, c) })
}

// settle reads the cluster after a successful operation. The cluster's
// status is a projection of agent events, which can trail the operation by
// a moment: poll (up to 15 s) until it shows the outcome (ws.settled, and
// phase Ready), then return the newest view either way.
func (a *app) settle(ctx context.Context, cl *client.Client, ns string, ws waitSpec) (client.Cluster, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := cl.GetCluster(ctx, ns, ws.cluster)
		if err != nil {
			return c, err
		}
		if (c.Phase == proto.PhaseReady && (ws.settled == nil || ws.settled(c))) || time.Now().After(deadline) {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return c, nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// primaryMoved is a settled check for switchover and failover: the
// cluster's primary is no longer from (and is to, when given).
func primaryMoved(from, to string) func(client.Cluster) bool {
	return func(c client.Cluster) bool {
		return c.Primary != "" && c.Primary != from && (to == "" || c.Primary == to)
	}
}

func newClusterCreateCmd(a *app) *cobra.Command {
	var req proto.ClusterCreate
	var replicas int
	var wf waitFlags
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a cluster (1 primary and replicas) from a catalog template",
		Example: `  dbpilot cluster create demo --replicas 3 --wait
  dbpilot cluster create billing --template postgres-15 --plan small --sync on`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			req.Name = argv[0]
			if cmd.Flags().Changed("replicas") {
				req.Replicas = &replicas
			}
			return a.operate(cmd, wf, &waitSpec{cluster: req.Name, label: "create " + req.Name, nodes: replicas,
				settled: func(c client.Cluster) bool { return ready(c) == c.Replicas }},
				func(ctx context.Context, cl *client.Client, ns string) (client.Operation, error) {
					return cl.CreateCluster(ctx, ns, req)
				})
		},
	}
	f := cmd.Flags()
	f.IntVarP(&replicas, "replicas", "r", 3, "number of nodes (1 primary + replicas)")
	f.StringVar(&req.Template, "template", "", "catalog template (default: the server's, postgres-15)")
	f.StringVar(&req.Plan, "plan", "", "resource plan of the template (default: small)")
	f.StringVar(&req.Engine, "engine", "", "engine (default: the template's)")
	f.StringVar(&req.Version, "version", "", "engine version (default: the template's)")
	f.StringVar(&req.SynchronousMode, "sync", "", "synchronous replication: on or off (default: off)")
	f.StringVar(&req.Project, "project", "", "project in the namespace (default: default)")
	f.StringVar(&req.Provider, "provider", "", "infrastructure provider (default: the server's first)")
	_ = cmd.RegisterFlagCompletionFunc("sync", cobra.FixedCompletions([]string{"on", "off"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("template", a.completeTemplates)
	wf.add(cmd)
	return cmd
}

func newClusterListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List the clusters of the namespace", Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			cs, err := cl.ListClusters(ctx, ns)
			if err != nil {
				return err
			}
			now := a.now()
			return printList(a, cs, func(w io.Writer) {
				if len(cs) == 0 {
					fmt.Fprintf(w, "No clusters in namespace %s.\n", ns)
					return
				}
				row(w, "NAME", "PROJECT", "ENGINE", "REPLICAS", "PHASE", "PRIMARY", "TERM", "AGE")
				for _, c := range cs {
					row(w, c.Name, c.Project, c.Engine+" "+c.Version, c.Replicas, phaseReason(c), orDash(c.Primary), c.Term, age(now, c.CreatedAt))
				}
			})
		},
	}
}

func phaseReason(c client.Cluster) string {
	if c.Reason != "" && c.Phase == proto.PhaseFailed {
		r := c.Reason
		if len(r) > 60 {
			r = r[:57] + "..."
		}
		return c.Phase + " (" + r + ")"
	}
	return c.Phase
}

func newClusterGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "get NAME",
		Short:             "Show a cluster's topology: members, roles, timeline and term, LSN, lag, last failover",
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			c, err := cl.GetCluster(ctx, ns, argv[0])
			if err != nil {
				return err
			}
			return a.printObject(c.Raw(), func(w io.Writer) { a.topology(ctx, w, cl, c) })
		},
	}
}

// sortMembers puts the primary first, then the others by name.
func sortMembers(ms []proto.Member) []proto.Member {
	out := append([]proto.Member(nil), ms...)
	sort.SliceStable(out, func(i, j int) bool {
		pi, pj := out[i].Role == "primary", out[j].Role == "primary"
		if pi != pj {
			return pi
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// topology prints the cluster the way an operator reads it.
func (a *app) topology(ctx context.Context, w io.Writer, cl *client.Client, c client.Cluster) {
	now := a.now()
	row(w, "Cluster:", fmt.Sprintf("%s (%s) in %s/%s", c.Name, c.ID, c.Namespace, c.Project))
	row(w, "Engine:", fmt.Sprintf("%s %s, template %s, plan %s, provider %s", c.Engine, c.Version, c.Template, c.Plan, c.Provider))
	row(w, "Phase:", phaseReasonFull(c))
	row(w, "Nodes:", fmt.Sprintf("%d ready of %d, synchronous mode %s", ready(c), c.Replicas, c.SynchronousMode))
	row(w, "Primary:", fmt.Sprintf("%s (term %d)", orDash(c.Primary), c.Term))
	if c.LastUpdated != nil {
		row(w, "Updated:", fmt.Sprintf("%s (%s ago)", c.LastUpdated.Local().Format("2006-01-02 15:04:05 MST"), short(now.Sub(*c.LastUpdated))))
	}
	fmt.Fprintln(w)
	if len(c.Members) == 0 {
		fmt.Fprintln(w, "No members reported yet.")
	} else {
		memberTable(w, c, c.Members)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Last failover: "+a.lastFailover(ctx, cl, c))
}

func phaseReasonFull(c client.Cluster) string {
	if c.Reason != "" {
		return c.Phase + ": " + c.Reason
	}
	return c.Phase
}

// memberTable prints members; c (when known) flags stale primaries.
func memberTable(w io.Writer, c client.Cluster, ms []proto.Member) {
	stale := false
	defer func() {
		if stale {
			fmt.Fprintf(w, "\nprimary? = the node's last report says primary, but the cluster's primary is %s (term %d): it stopped reporting.\n", c.Primary, c.Term)
		}
	}()
	row(w, "MEMBER", "ROLE", "STATE", "HEALTHY", "TIMELINE", "TERM", "LSN", "LAG", "LAG TIME", "STREAMING")
	for _, m := range sortMembers(ms) {
		lag, lagT, streaming := "-", "-", "-"
		if m.Role != "primary" {
			lag = bytesHuman(m.LagBytes)
			if m.LagSeconds != nil {
				lagT = fmt.Sprintf("%.1fs", *m.LagSeconds)
			}
			if m.Streaming != nil {
				streaming = yesNo(*m.Streaming)
			}
		}
		role := m.Role
		if stalePrimary(c, m) {
			role = "primary?"
			stale = true
		}
		row(w, m.Name, role, orDash(m.State), yesNo(m.Healthy), m.Timeline, m.Term, orDash(m.LSN), lag, lagT, streaming)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// Event types the CLI summarises.
const (
	evPrimaryChanged  = proto.TypePrimaryChanged
	evMemberState     = proto.TypeMemberState
	evFenced          = proto.TypeFenced
	evFailoverStarted = proto.TypeFailoverStarted
	evSwitchover      = proto.TypeSwitchover
	evHandler         = proto.TypeHandlerResult
	// evNodeRepair is the control plane's own event about a node repair
	// (controlplane.TypeNodeRepair).
	evNodeRepair = "io.dbpilot.controlplane.node_repair.v1"
	// evAlertFiring and evAlertResolved are the alert engine's transitions
	// (controlplane/alerts; the CLI does not link the control plane).
	evAlertFiring   = "io.dbpilot.controlplane.alert_firing.v1"
	evAlertResolved = "io.dbpilot.controlplane.alert_resolved.v1"
)

// lastFailover describes the newest primary change after bootstrap, from
// the event log: who took over from whom, why, and how long it took.
func (a *app) lastFailover(ctx context.Context, cl *client.Client, c client.Cluster) string {
	pcs, err := cl.ListEvents(ctx, c.Namespace, client.EventFilter{Cluster: c.Name, Type: evPrimaryChanged})
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	for i := len(pcs) - 1; i >= 0; i-- {
		var p proto.PrimaryChanged
		if json.Unmarshal(pcs[i].Data, &p) != nil || p.Reason == proto.ReasonBootstrap {
			continue
		}
		why := p.Reason
		if p.Reason == proto.ReasonFailover {
			// The failover_started event of the same attempt says why.
			if fs, err := cl.ListEvents(ctx, c.Namespace, client.EventFilter{Cluster: c.Name, Type: evFailoverStarted}); err == nil {
				for j := len(fs) - 1; j >= 0; j-- {
					var d proto.FailoverStarted
					if fs[j].Seq < pcs[i].Seq && json.Unmarshal(fs[j].Data, &d) == nil && d.Reason != "" {
						why += ": " + d.Reason
						break
					}
				}
			}
		}
		return fmt.Sprintf("%s -> %s at %s (term %d, timeline %d), reason %s, took %s",
			orDash(p.PreviousPrimary), p.Primary, pcs[i].Time.Local().Format("2006-01-02 15:04:05 MST"), pcs[i].Term, p.Timeline,
			why, (time.Duration(p.DurationMS) * time.Millisecond).String())
	}
	return "none"
}

func newClusterDeleteCmd(a *app) *cobra.Command {
	var yes bool
	var wf waitFlags
	cmd := &cobra.Command{
		Use:               "delete NAME",
		Aliases:           []string{"rm"},
		Short:             "Delete a cluster, its nodes and their data (asks on a terminal; --yes otherwise)",
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			if err := a.confirm(yes, fmt.Sprintf("Delete cluster %s with all its nodes and data?", argv[0])); err != nil {
				return err
			}
			return a.operate(cmd, wf, &waitSpec{cluster: argv[0], label: "delete " + argv[0]},
				func(ctx context.Context, cl *client.Client, ns string) (client.Operation, error) {
					return cl.DeleteCluster(ctx, ns, argv[0])
				})
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	wf.add(cmd)
	return cmd
}

func newClusterScaleCmd(a *app) *cobra.Command {
	var replicas int
	var wf waitFlags
	cmd := &cobra.Command{
		Use:               "scale NAME --replicas N",
		Short:             "Change the number of nodes (the primary is kept)",
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			return a.operate(cmd, wf, &waitSpec{cluster: argv[0], label: fmt.Sprintf("scale %s to %d", argv[0], replicas), nodes: replicas,
				settled: func(c client.Cluster) bool { return len(c.Members) == replicas && ready(c) == replicas }},
				func(ctx context.Context, cl *client.Client, ns string) (client.Operation, error) {
					return cl.ScaleCluster(ctx, ns, argv[0], replicas)
				})
		},
	}
	cmd.Flags().IntVarP(&replicas, "replicas", "r", 0, "number of nodes wanted")
	_ = cmd.MarkFlagRequired("replicas")
	wf.add(cmd)
	return cmd
}

func newClusterSetCmd(a *app) *cobra.Command {
	var mode string
	var wf waitFlags
	cmd := &cobra.Command{
		Use:   "set NAME --synchronous-mode on|off",
		Short: "Change settings of a running cluster (synchronous replication), without a restart",
		Long: `Change settings of a running cluster. --synchronous-mode on makes every commit
wait until a replica has flushed it (no acknowledged write is lost on
failover); off returns to asynchronous replication. The primary applies the
change live; with --wait the command returns once it is in effect.`,
		Example: `  dbpilot cluster set billing --synchronous-mode on --wait
  dbpilot cluster set billing --synchronous-mode off`,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			if !cmd.Flags().Changed("synchronous-mode") {
				return usagef("nothing to change: pass --synchronous-mode on|off")
			}
			return a.operate(cmd, wf, &waitSpec{cluster: argv[0], label: fmt.Sprintf("set %s synchronous mode %s", argv[0], mode),
				settled: func(c client.Cluster) bool { return c.SynchronousMode == mode }},
				func(ctx context.Context, cl *client.Client, ns string) (client.Operation, error) {
					return cl.UpdateCluster(ctx, ns, argv[0], proto.ClusterUpdate{SynchronousMode: &mode})
				})
		},
	}
	cmd.Flags().StringVar(&mode, "synchronous-mode", "", "synchronous replication: on or off")
	_ = cmd.RegisterFlagCompletionFunc("synchronous-mode", cobra.FixedCompletions([]string{"on", "off"}, cobra.ShellCompDirectiveNoFileComp))
	wf.add(cmd)
	return cmd
}

func newClusterSwitchoverCmd(a *app) *cobra.Command {
	var req proto.SwitchoverRequest
	var wf waitFlags
	cmd := &cobra.Command{
		Use:               "switchover NAME [--to NODE]",
		Short:             "Hand the primary role to a replica in a planned way (no data loss)",
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			ws := waitSpec{cluster: argv[0], label: "switchover " + argv[0]}
			return a.operate(cmd, wf, &ws,
				func(ctx context.Context, cl *client.Client, ns string) (client.Operation, error) {
					if c, err := cl.GetCluster(ctx, ns, argv[0]); err == nil {
						ws.settled = primaryMoved(c.Primary, req.To)
					}
					return cl.Switchover(ctx, ns, argv[0], req)
				})
		},
	}
	cmd.Flags().StringVar(&req.To, "to", "", "replica to promote (default: the healthiest)")
	cmd.Flags().StringVar(&req.From, "from", "", "expected current primary (refused if it is not)")
	cmd.Flags().StringVar(&req.Reason, "reason", "", "why, recorded with the request")
	_ = cmd.RegisterFlagCompletionFunc("to", a.completeNodes)
	_ = cmd.RegisterFlagCompletionFunc("from", a.completeNodes)
	wf.add(cmd)
	return cmd
}

func newClusterFailoverCmd(a *app) *cobra.Command {
	var req proto.SwitchoverRequest
	var yes bool
	var wf waitFlags
	cmd := &cobra.Command{
		Use:               "failover NAME --to NODE",
		Short:             "Promote a replica now, even if the primary is unreachable (asks on a terminal; --yes otherwise)",
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			if err := a.confirm(yes, fmt.Sprintf("Fail cluster %s over to %s? Transactions not yet replicated may be lost.", argv[0], req.To)); err != nil {
				return err
			}
			ws := waitSpec{cluster: argv[0], label: "failover " + argv[0] + " to " + req.To}
			return a.operate(cmd, wf, &ws,
				func(ctx context.Context, cl *client.Client, ns string) (client.Operation, error) {
					if c, err := cl.GetCluster(ctx, ns, argv[0]); err == nil {
						ws.settled = primaryMoved(c.Primary, req.To)
					}
					return cl.Failover(ctx, ns, argv[0], req)
				})
		},
	}
	cmd.Flags().StringVar(&req.To, "to", "", "replica to promote")
	cmd.Flags().StringVar(&req.Reason, "reason", "", "why, recorded with the request")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	_ = cmd.MarkFlagRequired("to")
	_ = cmd.RegisterFlagCompletionFunc("to", a.completeNodes)
	wf.add(cmd)
	return cmd
}

func newClusterRestartCmd(a *app) *cobra.Command {
	var wf waitFlags
	cmd := &cobra.Command{
		Use:               "restart NAME",
		Short:             "Restart every node, replicas first, then the primary",
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			return a.operate(cmd, wf, &waitSpec{cluster: argv[0], label: "restart " + argv[0]},
				func(ctx context.Context, cl *client.Client, ns string) (client.Operation, error) {
					return cl.Restart(ctx, ns, argv[0])
				})
		},
	}
	wf.add(cmd)
	return cmd
}

func newClusterTopCmd(a *app) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "top NAME",
		Short: "Show the primary's top statements by total execution time (pg_stat_statements)",
		Long: "Show the statements with the largest total execution time on the cluster's current primary, from\n" +
			"pg_stat_statements (counted since the last reset or server start): calls, total and mean time, rows\n" +
			"and the normalised query text (cut to 1 KiB; the table shows its first line).",
		Args: args(cobra.ExactArgs(1)), ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			if limit < 1 || limit > proto.MaxStatementsLimit {
				return usagef("--limit: must be from 1 to %d (got %d)", proto.MaxStatementsLimit, limit)
			}
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			st, err := cl.TopStatements(ctx, ns, argv[0], limit)
			if err != nil {
				return err
			}
			return a.printObject(st.Raw(), func(w io.Writer) {
				if len(st.Items) == 0 {
					fmt.Fprintf(w, "No statements recorded on %s yet.\n", st.Node)
					return
				}
				fmt.Fprintf(w, "Primary %s, top %d statements by total time:\n", st.Node, len(st.Items))
				row(w, "QUERYID", "USER", "DATABASE", "CALLS", "TOTAL", "MEAN", "ROWS", "QUERY")
				for _, s := range st.Items {
					row(w, orDash(s.QueryID), s.User, s.Database, s.Calls, millis(s.TotalMS), millis(s.MeanMS), s.Rows, oneLine(s.Query, 80))
				}
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", proto.DefaultStatementsLimit, fmt.Sprintf("how many statements (1-%d)", proto.MaxStatementsLimit))
	return cmd
}

func newClusterSessionsCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "sessions NAME",
		Short: "Show the primary's client sessions, longest running first (pg_stat_activity)",
		Long: "Show the client sessions of the cluster's current primary, longest running transaction or query first:\n" +
			"pid, user, database, application, client address, state, wait event, duration and query (the table\n" +
			"shows the query's first line). Cancel one with SELECT pg_cancel_backend(PID) on the primary.",
		Args: args(cobra.ExactArgs(1)), ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			ss, err := cl.ClusterSessions(ctx, ns, argv[0])
			if err != nil {
				return err
			}
			return a.printObject(ss.Raw(), func(w io.Writer) {
				if len(ss.Items) == 0 {
					fmt.Fprintf(w, "No client sessions on %s.\n", ss.Node)
					return
				}
				fmt.Fprintf(w, "Primary %s, %d client sessions:\n", ss.Node, len(ss.Items))
				row(w, "PID", "USER", "DATABASE", "APPLICATION", "CLIENT", "STATE", "WAIT", "DURATION", "QUERY")
				for _, s := range ss.Items {
					d := "-"
					if s.DurationMS > 0 {
						d = millis(float64(s.DurationMS))
					}
					row(w, s.PID, orDash(s.User), orDash(s.Database), orDash(s.Application), orDash(s.ClientAddr), orDash(s.State),
						orDash(s.WaitEvent), d, oneLine(s.Query, 60))
				}
			})
		},
	}
}

// millis formats milliseconds: 0.42ms, 12ms, 3.4s, 12m.
func millis(ms float64) string {
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2fms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.0fms", ms)
	case ms < 60000:
		return fmt.Sprintf("%.1fs", ms/1000)
	}
	return short(time.Duration(ms * float64(time.Millisecond)))
}

// oneLine is the first line of s with runs of blanks folded, cut to n
// characters; "…" marks a cut or further lines.
func oneLine(s string, n int) string {
	first, rest, _ := strings.Cut(strings.TrimSpace(s), "\n")
	f := []rune(strings.Join(strings.Fields(first), " "))
	switch {
	case len(f) > n:
		return string(f[:n-1]) + "…"
	case strings.TrimSpace(rest) != "":
		return string(f) + " …"
	}
	return string(f)
}

// completeNodes completes --to/--from with the cluster's member names.
func (a *app) completeNodes(cmd *cobra.Command, argv []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(argv) == 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, ns, err := a.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	ms, err := cl.ListNodes(ctx, ns, argv[0])
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Name+"\t"+m.Role)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func newNodeCmd(a *app) *cobra.Command {
	cmd := group("node", "Inspect the nodes (members) of a cluster", []string{"nodes"})
	cmd.AddCommand(&cobra.Command{
		Use: "list CLUSTER", Aliases: []string{"ls"}, Short: "List a cluster's nodes with role, state, LSN and lag",
		Args: args(cobra.ExactArgs(1)), ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			ms, err := cl.ListNodes(ctx, ns, argv[0])
			if err != nil {
				return err
			}
			return printList(a, ms, func(w io.Writer) {
				if len(ms) == 0 {
					fmt.Fprintf(w, "Cluster %s has no nodes yet.\n", argv[0])
					return
				}
				c, _ := cl.GetCluster(ctx, ns, argv[0])
				members := make([]proto.Member, len(ms))
				for i, m := range ms {
					members[i] = m.Member
				}
				memberTable(w, c, members)
			})
		},
	})
	return cmd
}

// splitKV parses k=v pairs (labels, grants).
func splitKV(flag string, pairs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef("--%s: want KEY=VALUE (got %q)", flag, p)
		}
		out[k] = v
	}
	return out, nil
}
