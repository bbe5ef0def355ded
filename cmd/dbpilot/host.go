package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/cmd/dbpilot/internal/client"
	"github.com/dbpilot/dbpilot/proto"
)

func newHostCmd(a *app) *cobra.Command {
	cmd := group("host", "Enrol, list, cordon and drain fleet hosts (bare metal, pre-built VMs)", []string{"hosts"})
	cmd.AddCommand(newHostEnrollCmd(a), newHostJoinTokenCmd(a), newHostListCmd(a),
		newHostCordonCmd(a, true), newHostCordonCmd(a, false), newHostDrainCmd(a))
	return cmd
}

func labelString(l map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(l) {
		parts = append(parts, k+"="+l[k])
	}
	return orDash(strings.Join(parts, ","))
}

func newHostJoinTokenCmd(a *app) *cobra.Command {
	var labels []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use: "join-token", Short: "Issue a one-time join token a host enrols with (platform admin)", Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := splitKV("label", labels)
			if err != nil {
				return err
			}
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			jt, err := cl.CreateJoinToken(ctx, l, ttl)
			if err != nil {
				return err
			}
			return a.printObject(jt.Raw(), func(w io.Writer) {
				row(w, "Join token:", jt.Secret)
				row(w, "Expires:", jt.ExpiresAt.Local().Format("2006-01-02 15:04:05 MST"))
				row(w, "Labels:", labelString(jt.Labels))
			})
		},
	}
	cmd.Flags().StringArrayVar(&labels, "label", nil, "label KEY=VALUE given to hosts enrolling with it (repeatable)")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "validity, 1m to 168h")
	return cmd
}

func newHostEnrollCmd(a *app) *cobra.Command {
	var req proto.EnrollRequest
	var labels []string
	cmd := &cobra.Command{
		Use:   "enroll NAME --address ADDR --cpu N --memory-mb M --disk-gb D [--join-token T]",
		Short: "Enrol a host into the fleet; without --join-token, issue one first (platform admin)",
		Long: `Enrol a host with a one-time join token. The answer carries the host's
credential, shown once. Usually the host enrols itself (dbpilot-host run
--join-token T); to enrol it from here instead, save the JSON answer as the
runner's identity file, ROOT/host.json (mode 0600), before starting
dbpilot-host run --root ROOT: the runner reads "id" and "credential" from it.
Without --join-token the CLI first issues one with your token (platform admin).`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			req.Name = argv[0]
			l, err := splitKV("label", labels)
			if err != nil {
				return err
			}
			req.Labels = l
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if req.JoinToken == "" {
				jt, err := cl.CreateJoinToken(ctx, l, 0)
				if err != nil {
					return fmt.Errorf("issue a join token: %w", err)
				}
				req.JoinToken = jt.Secret
			}
			h, err := cl.EnrollHost(ctx, req)
			if err != nil {
				return err
			}
			return a.printObject(h.Raw(), func(w io.Writer) {
				row(w, "Host:", fmt.Sprintf("%s (%s) at %s enrolled, state %s", h.Name, h.ID, h.Address, h.State))
				row(w, "Capacity:", fmt.Sprintf("%d CPU, %d MiB, %d GiB", h.Capacity.CPU, h.Capacity.MemoryMB, h.Capacity.DiskGB))
				row(w, "Labels:", labelString(h.Labels))
				row(w, "Credential:", h.Credential+"  (shown once: give it to the host's agent)")
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.JoinToken, "join-token", "", "one-time join token (default: issue one)")
	f.StringVar(&req.Address, "address", "", "address the control plane and other nodes reach the host at")
	f.IntVar(&req.Capacity.CPU, "cpu", 0, "CPUs")
	f.IntVar(&req.Capacity.MemoryMB, "memory-mb", 0, "memory in MiB")
	f.IntVar(&req.Capacity.DiskGB, "disk-gb", 0, "disk in GiB")
	f.StringArrayVar(&labels, "label", nil, "label KEY=VALUE (repeatable)")
	return cmd
}

func newHostListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List the fleet (platform admin)", Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			hs, err := cl.ListHosts(ctx)
			if err != nil {
				return err
			}
			now := a.now()
			return printList(a, hs, func(w io.Writer) {
				if len(hs) == 0 {
					fmt.Fprintln(w, "No hosts enrolled.")
					return
				}
				row(w, "ID", "NAME", "ADDRESS", "STATE", "NODES", "CPU", "MEMORY", "DISK", "LABELS", "AGE")
				for _, h := range hs {
					row(w, h.ID, h.Name, h.Address, h.State, h.Nodes, h.Capacity.CPU, fmt.Sprintf("%d MiB", h.Capacity.MemoryMB),
						fmt.Sprintf("%d GiB", h.Capacity.DiskGB), labelString(h.Labels), age(now, h.CreatedAt))
				}
			})
		},
	}
}

// completeHosts completes a host argument with the fleet's host names.
func (a *app) completeHosts(cmd *cobra.Command, argv []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(argv) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, _, err := a.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	hs, err := cl.ListHosts(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	out := make([]string, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.Name+"\t"+h.State+", "+fmt.Sprint(h.Nodes)+" nodes")
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// printHost prints a host after cordon, uncordon or drain.
func (a *app) printHost(h client.Host, what string) error {
	return a.printObject(h.Raw(), func(w io.Writer) {
		row(w, "Host:", fmt.Sprintf("%s (%s) at %s %s", h.Name, h.ID, h.Address, what))
		row(w, "State:", h.State)
		row(w, "Nodes:", h.Nodes)
	})
}

// newHostCordonCmd is `host cordon ID` (cordon) or `host uncordon ID`.
func newHostCordonCmd(a *app, cordon bool) *cobra.Command {
	use, short := "uncordon ID", "Let a cordoned host take new nodes again (platform admin)"
	if cordon {
		use, short = "cordon ID", "Stop placing new nodes on a host; its nodes keep running (platform admin)"
	}
	return &cobra.Command{
		Use: use, Short: short, Args: args(cobra.ExactArgs(1)), ValidArgsFunction: a.completeHosts,
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if cordon {
				h, err := cl.CordonHost(ctx, argv[0])
				if err != nil {
					return err
				}
				return a.printHost(h, "cordoned: no new node is placed on it (`dbpilot host drain` moves its nodes off)")
			}
			h, err := cl.UncordonHost(ctx, argv[0])
			if err != nil {
				return err
			}
			return a.printHost(h, "uncordoned: it takes new nodes again")
		},
	}
}

func newHostDrainCmd(a *app) *cobra.Command {
	var wf waitFlags
	cmd := &cobra.Command{
		Use:   "drain ID",
		Short: "Cordon a host and move every node off it, one node per cluster at a time (platform admin)",
		Long: `Cordon the host, then move each of its nodes to another host that matches
the cluster's template and plan: a replacement node is added and streams
before the old one is removed (a primary switches over first), so no
cluster drops below its node count. The host stays cordoned afterwards;
` + "`dbpilot host uncordon`" + ` returns it to service.`,
		Args: args(cobra.ExactArgs(1)), ValidArgsFunction: a.completeHosts,
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			op, err := cl.DrainHost(ctx, argv[0])
			if err != nil {
				return err
			}
			label := "drain " + argv[0]
			if !wf.wait {
				return a.printObject(op.Raw(), func(w io.Writer) {
					fmt.Fprintf(w, "%s: operation %s accepted.\n", label, op.ID)
					fmt.Fprintf(w, "Follow it with `dbpilot host list` (NODES reaches 0), or pass --wait.\n")
				})
			}
			if op, err = a.waitHostOp(ctx, cl, op, label); err != nil {
				return err
			}
			h, err := hostByRef(ctx, cl, argv[0])
			if err != nil {
				return err
			}
			return a.printHost(h, "drained: "+op.Progress)
		},
	}
	wf.add(cmd)
	return cmd
}

// hostByRef finds a host by id or name in the fleet list.
func hostByRef(ctx context.Context, cl *client.Client, ref string) (client.Host, error) {
	hs, err := cl.ListHosts(ctx)
	if err != nil {
		return client.Host{}, err
	}
	for _, h := range hs {
		if h.ID == ref || h.Name == ref {
			return h, nil
		}
	}
	return client.Host{}, failed("host %s is no longer listed", ref)
}

// waitHostOp polls a host operation (GET /v1/infra/operations/{id}) until
// it succeeds, fails or ctx ends, showing its progress.
func (a *app) waitHostOp(ctx context.Context, cl *client.Client, op client.Operation, label string) (client.Operation, error) {
	p := a.newProgress(label)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		status := op.State
		if cur, err := cl.GetInfraOperation(ctx, op.ID); err == nil {
			op = cur
			status = op.State
			if op.Step != "" {
				status += ", step " + op.Step
			}
			if op.Progress != "" {
				status += ": " + op.Progress
			}
		} else if ctx.Err() == nil {
			var ae *client.Error
			if errors.As(err, &ae) && ae.Status != 503 && ae.Status < 500 {
				p.finish(false, err.Error())
				return op, err
			}
			status = "server unreachable, retrying: " + err.Error()
		}
		switch op.State {
		case proto.OpSucceeded:
			p.finish(true, op.Progress)
			return op, nil
		case proto.OpFailed:
			p.finish(false, op.Error)
			return op, failed("%s failed: %s (operation %s)", label, op.Error, op.ID)
		}
		p.update(status)
		select {
		case <-ctx.Done():
			p.finish(false, "timed out")
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return op, failed("%s: timed out after %s (operation %s is still %s); raise --timeout or check `dbpilot host list`", label, a.g.timeout, op.ID, op.State)
			}
			return op, failed("%s: interrupted (operation %s continues on the server)", label, op.ID)
		case <-tick.C:
		}
	}
}
