package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/cmd/dbpilot/internal/client"
)

func newHostCmd(a *app) *cobra.Command {
	cmd := group("host", "Enrol and list fleet hosts (bare metal, pre-built VMs)", []string{"hosts"})
	cmd.AddCommand(newHostEnrollCmd(a), newHostJoinTokenCmd(a), newHostListCmd(a))
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
				row(w, "Join token:", jt.JoinToken)
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
	var req client.EnrollRequest
	var labels []string
	cmd := &cobra.Command{
		Use:   "enroll NAME --address ADDR --cpu N --memory-mb M --disk-gb D [--join-token T]",
		Short: "Enrol a host into the fleet; without --join-token, issue one first (platform admin)",
		Long: `Enrol a host with a one-time join token. The answer carries the host's
credential, shown once: the host's agent uses it to fetch its assignments.
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
				req.JoinToken = jt.JoinToken
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
				row(w, "ID", "NAME", "ADDRESS", "STATE", "CPU", "MEMORY", "DISK", "LABELS", "AGE")
				for _, h := range hs {
					row(w, h.ID, h.Name, h.Address, h.State, h.Capacity.CPU, fmt.Sprintf("%d MiB", h.Capacity.MemoryMB),
						fmt.Sprintf("%d GiB", h.Capacity.DiskGB), labelString(h.Labels), age(now, h.CreatedAt))
				}
			})
		},
	}
}
