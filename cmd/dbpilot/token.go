package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/proto"
)

func newTokenCmd(a *app) *cobra.Command {
	cmd := group("token", "Create, list and revoke API tokens", []string{"tokens"})
	cmd.AddCommand(newTokenCreateCmd(a), newTokenListCmd(a), &cobra.Command{
		Use: "revoke ID", Short: "Revoke a token (yours, one you created, or any as platform admin)", Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if err := cl.RevokeToken(ctx, argv[0]); err != nil {
				return err
			}
			return a.printValue(map[string]any{"id": argv[0], "revoked": true}, func(w io.Writer) {
				fmt.Fprintf(w, "Token %s revoked.\n", argv[0])
			})
		},
	})
	return cmd
}

func grantString(gs []proto.Grant) string {
	parts := make([]string, 0, len(gs))
	for _, g := range gs {
		parts = append(parts, g.Namespace+"="+g.Role)
	}
	return strings.Join(parts, ",")
}

func newTokenCreateCmd(a *app) *cobra.Command {
	var grants []string
	cmd := &cobra.Command{
		Use:     "create NAME --grant NAMESPACE=ROLE...",
		Short:   "Issue a token with roles (viewer, operator, admin, or metrics for Prometheus) per namespace; the secret is shown once",
		Example: `  dbpilot token create ci --grant default=operator`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if len(grants) == 0 {
				return usagef("--grant: at least one NAMESPACE=ROLE is required")
			}
			var gs []proto.Grant
			for _, g := range grants {
				ns, role, ok := strings.Cut(g, "=")
				if !ok || ns == "" || role == "" {
					return usagef("--grant: want NAMESPACE=ROLE, like default=operator (got %q)", g)
				}
				gs = append(gs, proto.Grant{Namespace: ns, Role: role})
			}
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			t, err := cl.CreateToken(ctx, argv[0], gs)
			if err != nil {
				return err
			}
			return a.printObject(t.Raw(), func(w io.Writer) {
				row(w, "ID:", t.ID)
				row(w, "Name:", t.Name)
				row(w, "Grants:", grantString(t.Grants))
				row(w, "Token:", t.Secret+"  (shown once)")
			})
		},
	}
	cmd.Flags().StringArrayVar(&grants, "grant", nil, "NAMESPACE=ROLE (role: viewer, operator, admin or metrics; namespace * for all); repeatable")
	return cmd
}

func newTokenListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List tokens (platform admin)", Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			ts, err := cl.ListTokens(ctx)
			if err != nil {
				return err
			}
			now := a.now()
			return printList(a, ts, func(w io.Writer) {
				row(w, "ID", "NAME", "GRANTS", "CREATED BY", "AGE", "REVOKED")
				for _, t := range ts {
					rev := "-"
					if t.RevokedAt != nil {
						rev = age(now, *t.RevokedAt) + " ago"
					}
					row(w, t.ID, t.Name, grantString(t.Grants), t.CreatedBy, age(now, t.CreatedAt), rev)
				}
			})
		},
	}
}
