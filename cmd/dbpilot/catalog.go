package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newCatalogCmd(a *app) *cobra.Command {
	cmd := group("catalog", "Browse the Service Catalog's image templates", nil)
	cmd.AddCommand(&cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List the templates (shipped and the namespace's own)", Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			ts, err := cl.ListTemplates(ctx, ns)
			if err != nil {
				return err
			}
			return printList(a, ts, func(w io.Writer) {
				row(w, "NAME", "ENGINE", "VERSION", "AGENT", "PLANS", "SOURCE", "DESCRIPTION")
				for _, t := range ts {
					src := "namespace " + ns
					if t.Builtin {
						src = "shipped"
					}
					row(w, t.Name, t.Engine, t.EngineVersion, orDash(t.AgentVersion), strings.Join(sortedKeys(t.Plans), ","), src, orDash(t.Description))
				}
			})
		},
	}, &cobra.Command{
		Use: "show NAME", Short: "Show a template: engine, parameters and resource plans",
		Args: args(cobra.ExactArgs(1)), ValidArgsFunction: a.completeTemplates,
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			t, err := cl.GetTemplate(ctx, ns, argv[0])
			if err != nil {
				return err
			}
			return a.printObject(t.Raw(), func(w io.Writer) {
				row(w, "Name:", t.Name)
				row(w, "Description:", orDash(t.Description))
				row(w, "Engine:", t.Engine+" "+t.EngineVersion)
				row(w, "Agent:", orDash(t.AgentVersion))
				row(w, "Shipped:", yesNo(t.Builtin))
				for _, k := range sortedKeys(t.Parameters) {
					row(w, "Parameter:", k+" = "+t.Parameters[k])
				}
				fmt.Fprintln(w)
				row(w, "PLAN", "CPU", "MEMORY", "DISK")
				for _, k := range sortedKeys(t.Plans) {
					p := t.Plans[k]
					row(w, k, p.CPU, fmt.Sprintf("%d MiB", p.MemoryMB), fmt.Sprintf("%d GiB", p.DiskGB))
				}
			})
		},
	})
	return cmd
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (a *app) completeTemplates(cmd *cobra.Command, argv []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(argv) > 0 && cmd.Name() == "show" {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, ns, err := a.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	ts, err := cl.ListTemplates(ctx, ns)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for _, t := range ts {
		out = append(out, t.Name+"\t"+t.Engine+" "+t.EngineVersion)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
