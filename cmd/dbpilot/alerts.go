package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/cmd/dbpilot/internal/client"
	"github.com/dbpilot/dbpilot/proto"
)

// The alert commands use:
//
//	GET  /v1/namespaces/{ns}/alerts[?state=&severity=&cluster=]   list
//	GET  /v1/namespaces/{ns}/alerts/{id}                          get
//	POST /v1/namespaces/{ns}/alerts/{id}/ack                      ack
//	POST /v1/namespaces/{ns}/alerts/{id}/silence                  silence
//	GET|POST /v1/namespaces/{ns}/notification-channels            channels list|add
//	DELETE /v1/namespaces/{ns}/notification-channels/{name}       channels delete
//	GET  …/notification-channels/{name}/deliveries                channels deliveries
func newAlertsCmd(a *app) *cobra.Command {
	cmd := group("alerts", "List, acknowledge and silence alerts; manage notification channels", []string{"alert"})
	cmd.AddCommand(newAlertsListCmd(a), newAlertsGetCmd(a), newAlertsAckCmd(a), newAlertsSilenceCmd(a), newChannelsCmd(a))
	return cmd
}

func alertTable(w io.Writer, as []client.Alert) {
	row(w, "ID", "STATE", "SEVERITY", "RULE", "CLUSTER", "NODE", "SUBJECT", "SINCE", "ACKED", "SILENCED UNTIL", "SUMMARY")
	for _, al := range as {
		since := al.FiredAt
		if al.State == proto.AlertPending {
			since = al.FirstSeen
		}
		if al.State == proto.AlertResolved {
			since = al.ResolvedAt
		}
		state := al.State
		if al.Flapping {
			state += " (flapping)"
		}
		row(w, al.ID, state, al.Severity, al.Rule, al.Cluster, orDash(al.Node), orDash(al.Subject), stamp(since), orDash(al.AckedBy),
			stamp(al.SilencedUntil), escapeMessage(al.Summary))
	}
}

func newAlertsListCmd(a *app) *cobra.Command {
	var f client.AlertFilter
	cmd := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List the namespace's alerts, most recently changed first",
		Example: `  dbpilot alerts list --state firing
  dbpilot alerts list --severity page --cluster billing`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			as, err := cl.ListAlerts(ctx, ns, f)
			if err != nil {
				return unsupported("alerts list", err)
			}
			return printList(a, as, func(w io.Writer) {
				if len(as) == 0 {
					fmt.Fprintf(w, "No alerts in namespace %s.\n", ns)
					return
				}
				alertTable(w, as)
			})
		},
	}
	cmd.Flags().StringVar(&f.State, "state", "", "only alerts in this state: pending, firing or resolved")
	cmd.Flags().StringVar(&f.Severity, "severity", "", "only alerts of this severity: page, ticket or info")
	cmd.Flags().StringVar(&f.Cluster, "cluster", "", "only alerts of this cluster (name)")
	cmd.Flags().IntVar(&f.Limit, "limit", 0, "at most this many (1-1000; default 100)")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions([]string{"pending", "firing", "resolved"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("severity", cobra.FixedCompletions([]string{"page", "ticket", "info"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func newAlertsGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use: "get ID", Short: "Show one alert", Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			return a.alertCall(cmd, "alerts get", func(cl *client.Client, ctx context.Context, ns string) (client.Alert, error) {
				return cl.GetAlert(ctx, ns, argv[0])
			})
		},
	}
}

func newAlertsAckCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use: "ack ID", Short: "Acknowledge a pending or firing alert (a page is no longer repeated)", Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			return a.alertCall(cmd, "alerts ack", func(cl *client.Client, ctx context.Context, ns string) (client.Alert, error) {
				return cl.AckAlert(ctx, ns, argv[0])
			})
		},
	}
}

func newAlertsSilenceCmd(a *app) *cobra.Command {
	var req proto.SilenceRequest
	cmd := &cobra.Command{
		Use: "silence ID --for DURATION --reason TEXT", Short: "Silence an alert: it stays visible and notifies nothing until then",
		Example: `  dbpilot alerts silence 3f2a9c1d0e4b5a67 --for 2h --reason "disk replacement"`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if req.Duration == "" {
				return usagef("--for: required: how long, like 2h")
			}
			if req.Reason == "" {
				return usagef("--reason: required: why the alert is silenced")
			}
			return a.alertCall(cmd, "alerts silence", func(cl *client.Client, ctx context.Context, ns string) (client.Alert, error) {
				return cl.SilenceAlert(ctx, ns, argv[0], req)
			})
		},
	}
	cmd.Flags().StringVar(&req.Duration, "for", "", "how long the silence lasts, 1m to 720h (e.g. 2h)")
	cmd.Flags().StringVar(&req.Reason, "reason", "", "why (at most 200 characters)")
	return cmd
}

// alertCall runs one call answering an alert and prints it.
func (a *app) alertCall(cmd *cobra.Command, what string, call func(cl *client.Client, ctx context.Context, ns string) (client.Alert, error)) error {
	cl, ns, err := a.client()
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	al, err := call(cl, ctx, ns)
	if err != nil {
		return unsupported(what, err)
	}
	return a.printObject(al.Raw(), func(w io.Writer) { alertTable(w, []client.Alert{al}) })
}

func newChannelsCmd(a *app) *cobra.Command {
	cmd := group("channels", "List, add and delete notification channels", []string{"channel"})
	cmd.AddCommand(newChannelsListCmd(a), newChannelsAddCmd(a), newChannelsDeleteCmd(a), newChannelsDeliveriesCmd(a))
	return cmd
}

func newChannelsListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List the namespace's notification channels (secrets are never shown)", Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			chs, err := cl.ListChannels(ctx, ns)
			if err != nil {
				return unsupported("alerts channels list", err)
			}
			return printList(a, chs, func(w io.Writer) {
				if len(chs) == 0 {
					fmt.Fprintf(w, "No notification channels in namespace %s.\n", ns)
					return
				}
				channelTable(w, chs)
			})
		},
	}
}

func channelTable(w io.Writer, chs []client.NotificationChannel) {
	row(w, "NAME", "KIND", "TARGET", "SECRET", "CREATED")
	for _, c := range chs {
		target := c.URL
		if c.Kind == proto.ChannelDaprBinding {
			target = c.Binding + " (" + first(c.Operation, "create") + ")"
		}
		secret := "-"
		if c.HasSecret {
			secret = "set"
		}
		row(w, c.Name, c.Kind, escapeMessage(target), secret, stamp(c.CreatedAt))
	}
}

func newChannelsAddCmd(a *app) *cobra.Command {
	var ch proto.NotificationChannel
	var secretFile string
	cmd := &cobra.Command{
		Use:   "add NAME --webhook URL --secret-file FILE | --dapr-binding NAME [--operation OP]",
		Short: "Add a notification channel: a signed webhook or a Dapr output binding",
		Example: `  dbpilot alerts channels add ops --webhook https://hooks.example.com/dbpilot --secret-file ./hook.secret
  DBPILOT_WEBHOOK_SECRET=... dbpilot alerts channels add ops --webhook https://hooks.example.com/dbpilot
  dbpilot alerts channels add pager --dapr-binding pagerduty --operation create`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			ch.Name = argv[0]
			switch {
			case ch.URL != "" && ch.Binding != "":
				return usagef("--webhook and --dapr-binding: give one")
			case ch.URL != "":
				ch.Kind = proto.ChannelWebhook
				switch {
				case secretFile != "":
					b, err := os.ReadFile(secretFile)
					if err != nil {
						return usagef("--secret-file: %v", err)
					}
					ch.Secret = strings.TrimSpace(string(b))
				default:
					ch.Secret = a.getenv("DBPILOT_WEBHOOK_SECRET")
				}
				if ch.Secret == "" {
					return usagef("--secret-file: required for a webhook (or set DBPILOT_WEBHOOK_SECRET): the HMAC key, at least 16 characters")
				}
			case ch.Binding != "":
				ch.Kind = proto.ChannelDaprBinding
			default:
				return usagef("--webhook URL or --dapr-binding NAME: required")
			}
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			out, err := cl.CreateChannel(ctx, ns, ch)
			if err != nil {
				return unsupported("alerts channels add", err)
			}
			return a.printObject(out.Raw(), func(w io.Writer) { channelTable(w, []client.NotificationChannel{out}) })
		},
	}
	cmd.Flags().StringVar(&ch.URL, "webhook", "", "the webhook's http(s) URL")
	cmd.Flags().StringVar(&secretFile, "secret-file", "", "file holding the webhook's HMAC secret (default $DBPILOT_WEBHOOK_SECRET)")
	cmd.Flags().StringVar(&ch.Binding, "dapr-binding", "", "the Dapr output binding's component name")
	cmd.Flags().StringVar(&ch.Operation, "operation", "", "the binding operation (default create)")
	return cmd
}

func newChannelsDeleteCmd(a *app) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use: "delete NAME", Aliases: []string{"rm"}, Short: "Delete a notification channel and its delivery log", Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if err := a.confirm(yes, "Delete notification channel "+argv[0]+"?"); err != nil {
				return err
			}
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			if err := cl.DeleteChannel(ctx, ns, argv[0]); err != nil {
				return unsupported("alerts channels delete", err)
			}
			return a.printValue(map[string]any{"name": argv[0], "deleted": true}, func(w io.Writer) {
				fmt.Fprintf(w, "Notification channel %s deleted.\n", argv[0])
			})
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func newChannelsDeliveriesCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use: "deliveries NAME", Short: "List a channel's newest deliveries (status, attempts, last error)", Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			ds, err := cl.ListDeliveries(ctx, ns, argv[0])
			if err != nil {
				return unsupported("alerts channels deliveries", err)
			}
			return printList(a, ds, func(w io.Writer) {
				if len(ds) == 0 {
					fmt.Fprintf(w, "Channel %s has no deliveries yet.\n", argv[0])
					return
				}
				row(w, "ID", "ALERT", "TRANSITION", "STATUS", "ATTEMPTS", "CREATED", "UPDATED", "LAST ERROR")
				for _, d := range ds {
					row(w, d.ID, d.AlertID, d.Transition, d.Status, d.Attempts, stamp(&d.CreatedAt), stamp(&d.UpdatedAt), orDash(escapeMessage(d.LastError)))
				}
			})
		},
	}
}
