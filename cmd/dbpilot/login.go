package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/cmd/dbpilot/internal/client"
	"github.com/dbpilot/dbpilot/internal/buildinfo"
)

func newLoginCmd(a *app) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "login [--server URL] [--token TOKEN] [--name CONTEXT]",
		Short: "Check a server and token, and save them as the current context",
		Long: `Check a server and token (GET /v1/whoami) and save them, with the namespace,
as a context in $XDG_CONFIG_HOME/dbpilot/config.yaml (mode 0600), which becomes
the current context. The token comes from --token, $DBPILOT_TOKEN, or one line
on standard input.`,
		Example: `  eval "$(dbpilot-server dev | head -2 | sed 's/^/export /')"   # in another shell
  dbpilot login --server "$DBPILOT_SERVER" --token "$DBPILOT_TOKEN"`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			server := first(a.g.server, a.getenv("DBPILOT_SERVER"))
			if server == "" {
				return usagef("login: --server is required (or set DBPILOT_SERVER)")
			}
			token := first(a.g.token, a.getenv("DBPILOT_TOKEN"))
			if token == "" {
				if a.isTerminal(a.deps.stdin) {
					fmt.Fprint(a.stderr, "Token: ")
				}
				line, err := a.stdin.ReadString('\n')
				if err != nil && err != io.EOF {
					return err
				}
				token = strings.TrimSpace(line)
			}
			if token == "" {
				return usagef("login: a token is required (--token, DBPILOT_TOKEN or standard input)")
			}
			cl, err := client.New(server, token, "dbpilot/"+buildinfo.Version)
			if err != nil {
				return usagef("%v", err)
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			who, err := cl.WhoAmI(ctx)
			if err != nil {
				return err
			}
			cfg, _, err := a.loadConfig()
			if err != nil {
				return err
			}
			ns := first(a.g.namespace, a.getenv("DBPILOT_NAMESPACE"), "default")
			cfg.put(Context{Name: name, Server: cl.Server(), Token: token, Namespace: ns})
			cfg.CurrentContext = name
			path, err := a.saveConfig(cfg)
			if err != nil {
				return err
			}
			return a.printObject(who.Raw(), func(w io.Writer) {
				grants := make([]string, 0, len(who.Grants))
				for _, g := range who.Grants {
					grants = append(grants, g.Namespace+"="+g.Role)
				}
				fmt.Fprintf(w, "Logged in to %s as %s (%s), grants %s.\n", cl.Server(), who.Name, who.TokenID, strings.Join(grants, ","))
				fmt.Fprintf(w, "Context %q (namespace %s) saved in %s and made current.\n", name, ns, path)
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "default", "name of the context to save")
	return cmd
}

func newContextCmd(a *app) *cobra.Command {
	cmd := group("context", "List and switch the saved contexts (server, token, namespace)", nil)
	cmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List the contexts", Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := a.loadConfig()
			if err != nil {
				return err
			}
			ctxs := cfg.Contexts
			if ctxs == nil {
				ctxs = []Context{}
			}
			return a.printValue(map[string]any{"current_context": cfg.CurrentContext, "contexts": ctxs}, func(w io.Writer) {
				row(w, "CURRENT", "NAME", "SERVER", "NAMESPACE")
				for _, c := range cfg.Contexts {
					cur := ""
					if c.Name == cfg.CurrentContext {
						cur = "*"
					}
					row(w, cur, c.Name, c.Server, orDash(c.Namespace))
				}
			})
		},
	}, &cobra.Command{
		Use: "use NAME", Short: "Make a context the current one", Args: args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeContexts,
		RunE: func(cmd *cobra.Command, argv []string) error {
			cfg, _, err := a.loadConfig()
			if err != nil {
				return err
			}
			if _, ok := cfg.find(argv[0]); !ok {
				return &exitError{code: exitNotFound, err: fmt.Errorf("context %q not found (see `dbpilot context list`)", argv[0])}
			}
			cfg.CurrentContext = argv[0]
			if _, err := a.saveConfig(cfg); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Switched to context %q.\n", argv[0])
			return nil
		},
	})
	return cmd
}

func (a *app) completeContexts(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	cfg, _, err := a.loadConfig()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for _, c := range cfg.Contexts {
		out = append(out, c.Name+"\t"+c.Server)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use: "version", Short: "Print the client and server versions", Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := map[string]any{"client": map[string]string{"version": buildinfo.String()}}
			cl, _, err := a.client()
			var sv client.ServerVersion
			if err == nil {
				ctx, cancel := a.ctx(cmd)
				defer cancel()
				sv, err = cl.Version(ctx)
				if err == nil {
					out["server"] = sv.Raw()
				}
			}
			if perr := a.printValue(out, func(w io.Writer) {
				fmt.Fprintf(w, "Client: dbpilot %s\n", buildinfo.String())
				if err == nil {
					fmt.Fprintf(w, "Server: dbpilot-server %s (API %s) at %s\n", sv.Version, sv.API, cl.Server())
				}
			}); perr != nil {
				return perr
			}
			return err
		},
	}
}
