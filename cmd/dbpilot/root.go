package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/cmd/dbpilot/internal/client"
	"github.com/dbpilot/dbpilot/internal/buildinfo"
)

// deps is what the CLI needs from the process: streams, environment,
// terminal detection and the clock.
type deps struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// isTerminal reports whether a stream is an interactive terminal.
	isTerminal func(any) bool
	now        func() time.Time
}

func osDeps() deps {
	return deps{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, now: time.Now,
		isTerminal: func(s any) bool {
			f, ok := s.(*os.File)
			return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())) && os.Getenv("TERM") != "dumb"
		}}
}

// globals are the persistent flags.
type globals struct {
	server, token, namespace, context, output string
	timeout                                   time.Duration
}

// app is the state every command shares: deps, the global flags and the
// lazily loaded config.
type app struct {
	deps
	g     globals
	stdin *bufio.Reader
}

// run executes the CLI with args and returns the exit code.
func run(ctx context.Context, args []string, d deps) int {
	root := newRootCmd(d)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil {
		printError(d.stderr, err)
		if exitCode(err) == exitUsage && !classified(err) {
			fmt.Fprintln(d.stderr, "Run 'dbpilot --help' for usage.")
		}
	}
	return exitCode(err)
}

func newRootCmd(d deps) *cobra.Command {
	// Standard output carries server strings: never a raw control
	// character (escape.go).
	d.stdout = &safeWriter{w: d.stdout}
	a := &app{deps: d, stdin: bufio.NewReader(d.stdin)}
	root := &cobra.Command{
		Use:   "dbpilot",
		Short: "Operate dbpilot PostgreSQL clusters from the terminal",
		Long: `dbpilot talks to a dbpilot control plane (dbpilot-server).

Start one with 'dbpilot-server dev', then 'dbpilot login --server URL --token TOKEN'.
Flags override the environment (DBPILOT_SERVER, DBPILOT_TOKEN, DBPILOT_NAMESPACE,
DBPILOT_CONTEXT), which overrides the current context of the config file.

Exit codes: 0 success, 1 operation failed, 2 usage error, 3 not found, 4 unauthorised.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.String(),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case a.g.output == "table", a.g.output == "json", a.g.output == "yaml":
			case strings.HasPrefix(a.g.output, "go-template=") && cmd.Name() != "events":
			default:
				return usagef("--output: must be table, json, yaml or go-template=TEMPLATE (got %q)", a.g.output)
			}
			if a.g.timeout < 0 {
				return usagef("--timeout: must be >= 0 (got %s)", a.g.timeout)
			}
			return nil
		},
	}
	root.SetIn(d.stdin)
	root.SetOut(d.stdout)
	root.SetErr(d.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usagef("%v", err) })
	pf := root.PersistentFlags()
	pf.StringVar(&a.g.server, "server", "", "control plane URL (default: $DBPILOT_SERVER, then the current context)")
	pf.StringVar(&a.g.token, "token", "", "API token (default: $DBPILOT_TOKEN, then the current context)")
	pf.StringVarP(&a.g.namespace, "namespace", "n", "", "namespace (default: $DBPILOT_NAMESPACE, then the context's, then \"default\")")
	pf.StringVar(&a.g.context, "context", "", "context of the config file to use (default: $DBPILOT_CONTEXT, then the current one)")
	pf.StringVarP(&a.g.output, "output", "o", "table", "output format: table, json, yaml, or go-template=TEMPLATE (over the JSON object)")
	pf.DurationVar(&a.g.timeout, "timeout", 10*time.Minute, "give up after this long (API calls and --wait)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("context", a.completeContexts)

	root.AddCommand(
		newLoginCmd(a), newContextCmd(a), newClusterCmd(a), newNodeCmd(a), newBackupCmd(a), newEventsCmd(a), newAlertsCmd(a),
		newCatalogCmd(a), newHostCmd(a), newTokenCmd(a), newVersionCmd(a),
	)
	classifyRunErrors(root)
	return root
}

// classifyRunErrors makes every error a command's RunE returns that has no
// exit code yet an operation failure (exit 1), so that only cobra's own
// errors (flags, arguments, unknown commands) count as usage errors.
func classifyRunErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			err := run(cmd, args)
			if err != nil && !classified(err) {
				return &exitError{code: exitFailed, err: err}
			}
			return err
		}
	}
	for _, sub := range c.Commands() {
		classifyRunErrors(sub)
	}
}

// args wraps a cobra positional-argument check so its errors are usage
// errors with the command's usage line.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usagef("%v\nUsage: %s", err, cmd.UseLine())
		}
		return nil
	}
}

// ctx bounds the command by --timeout (0: no bound).
func (a *app) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	if a.g.timeout == 0 {
		return context.WithCancel(cmd.Context())
	}
	return context.WithTimeout(cmd.Context(), a.g.timeout)
}

// first returns the first non-empty value.
func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// current resolves the effective context: flags, then the environment, then
// the config file.
func (a *app) current() (Context, error) {
	cfg, _, err := a.loadConfig()
	if err != nil {
		return Context{}, err
	}
	name := first(a.g.context, a.getenv("DBPILOT_CONTEXT"), cfg.CurrentContext)
	var c Context
	if name != "" {
		found, ok := cfg.find(name)
		if !ok && (a.g.context != "" || a.getenv("DBPILOT_CONTEXT") != "") {
			return Context{}, usagef("context %q: not in the config file (see `dbpilot context list`)", name)
		}
		c = found
	}
	c.Server = first(a.g.server, a.getenv("DBPILOT_SERVER"), c.Server)
	c.Token = first(a.g.token, a.getenv("DBPILOT_TOKEN"), c.Token)
	c.Namespace = first(a.g.namespace, a.getenv("DBPILOT_NAMESPACE"), c.Namespace, "default")
	return c, nil
}

// client returns an API client for the effective context.
func (a *app) client() (*client.Client, string, error) {
	c, err := a.current()
	if err != nil {
		return nil, "", err
	}
	cl, err := client.New(c.Server, c.Token, "dbpilot/"+buildinfo.Version)
	if err != nil {
		return nil, "", usagef("%v", err)
	}
	return cl, c.Namespace, nil
}

// confirm asks on a terminal; elsewhere it requires --yes.
func (a *app) confirm(yes bool, question string) error {
	if yes {
		return nil
	}
	if !a.isTerminal(a.deps.stdin) || !a.isTerminal(a.stderr) {
		return usagef("%s: refusing without --yes (not running on a terminal)", strings.TrimSuffix(question, "?"))
	}
	fmt.Fprintf(a.stderr, "%s [y/N] ", question)
	line, _ := a.stdin.ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return &exitError{code: exitFailed, err: fmt.Errorf("aborted")}
}

// group returns a command that only holds subcommands: alone it prints its
// help; with an unknown subcommand it is a usage error.
func group(use, short string, aliases []string) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Aliases: aliases, Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
}
