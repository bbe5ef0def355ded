package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dbpilot/dbpilot/cmd/dbpilot/internal/client"
)

func newEventsCmd(a *app) *cobra.Command {
	var f client.EventFilter
	var follow bool
	cmd := &cobra.Command{
		Use:   "events [--cluster NAME] [--follow]",
		Short: "List the namespace's events, or follow them live (Server-Sent Events)",
		Long: `List recorded events (failovers, switchovers, member state changes, fencing,
handler failures), oldest first. With --follow, keep printing new events as
they arrive until interrupted (or --timeout, when given). With -o json, each
followed event is printed as one JSON object per line.`,
		Example: `  dbpilot events --cluster demo
  dbpilot events --follow --type io.dbpilot.cluster.primary_changed.v1`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, ns, err := a.client()
			if err != nil {
				return err
			}
			if !follow {
				ctx, cancel := a.ctx(cmd)
				defer cancel()
				es, err := cl.ListEvents(ctx, ns, f)
				if err != nil {
					return err
				}
				return printList(a, es, func(w io.Writer) {
					if len(es) == 0 {
						fmt.Fprintln(w, "No events.")
						return
					}
					fmt.Fprintln(w, eventHeader)
					for _, e := range es {
						fmt.Fprintln(w, eventLine(e))
					}
				})
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			if cmd.Flags().Changed("timeout") && a.g.timeout > 0 {
				ctx, cancel = context.WithTimeout(cmd.Context(), a.g.timeout)
			}
			defer cancel()
			if a.g.output == "table" {
				fmt.Fprintln(a.stdout, eventHeader)
			}
			return cl.StreamEvents(ctx, ns, f, func(e client.Event) error { return a.printEvent(e) })
		},
	}
	cmd.Flags().StringVar(&f.Cluster, "cluster", "", "only this cluster (name)")
	cmd.Flags().StringVar(&f.Node, "node", "", "only this node")
	cmd.Flags().StringVar(&f.Type, "type", "", "only this event type (io.dbpilot.…)")
	cmd.Flags().Int64Var(&f.After, "after", 0, "start after this event sequence number")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming new events")
	_ = cmd.RegisterFlagCompletionFunc("cluster", a.completeClusters)
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions([]string{evPrimaryChanged, evMemberState, evFenced,
		evFailoverStarted, evSwitchover, evHandler}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// printEvent prints one followed event: a line, one JSON object per line,
// or a YAML document.
func (a *app) printEvent(e client.Event) error {
	switch a.g.output {
	case "json":
		_, err := fmt.Fprintf(a.stdout, "%s\n", compact(e.Raw()))
		return err
	case "yaml":
		b, err := toYAML(e.Raw())
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "---\n%s", b)
		return err
	}
	_, err := fmt.Fprintln(a.stdout, eventLine(e))
	return err
}

func compact(raw json.RawMessage) []byte {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}

var eventHeader = fmt.Sprintf("%-6s %-19s %-12s %-8s %-5s %-22s %s", "SEQ", "TIME", "CLUSTER", "NODE", "TERM", "EVENT", "DETAILS")

// eventLine is one fixed-width line (streamed lines cannot be aligned
// afterwards).
func eventLine(e client.Event) string {
	return fmt.Sprintf("%-6d %-19s %-12s %-8s %-5d %-22s %s", e.Seq, e.Time.Local().Format("2006-01-02 15:04:05"), e.Cluster,
		orDash(e.Node), e.Term, shortType(e.Type), eventDetails(e))
}

// shortType turns io.dbpilot.cluster.primary_changed.v1 into
// primary_changed.
func shortType(t string) string {
	s := strings.TrimPrefix(t, "io.dbpilot.")
	parts := strings.Split(s, ".")
	if len(parts) >= 3 {
		return parts[len(parts)-2]
	}
	return t
}

func ms(v int64) string { return (time.Duration(v) * time.Millisecond).String() }

// eventDetails summarises the payload of known event types in a sentence.
func eventDetails(e client.Event) string {
	var d map[string]any
	_ = json.Unmarshal(e.Data, &d)
	str := func(k string) string { s, _ := d[k].(string); return s }
	num := func(k string) int64 { f, _ := d[k].(float64); return int64(f) }
	var s string
	switch e.Type {
	case evPrimaryChanged:
		s = fmt.Sprintf("%s is primary (%s", str("primary"), str("reason"))
		if p := str("previous_primary"); p != "" {
			s += ", was " + p
		}
		s += fmt.Sprintf(", timeline %d, took %s)", num("timeline"), ms(num("duration_ms")))
	case evMemberState:
		s = fmt.Sprintf("%s %s", str("role"), str("state"))
		if h, _ := d["healthy"].(bool); !h {
			s += " unhealthy"
		}
		if l := str("lsn"); l != "" {
			s += " lsn " + l
		}
		if str("role") == "replica" {
			s += " lag " + bytesHuman(num("lag_bytes"))
		}
	case evFailoverStarted:
		s = fmt.Sprintf("%s tries to take over from %s: %s", str("candidate"), str("failed_primary"), str("reason"))
	case evSwitchover:
		s = fmt.Sprintf("%s -> %s, took %s", str("from"), str("to"), ms(num("duration_ms")))
	case evFenced:
		s = fmt.Sprintf("fenced: %s (lease left %s)", str("reason"), ms(num("lease_left_ms")))
	case evHandler:
		s = fmt.Sprintf("handler %s %s, exit %d, took %s", str("handler"), str("status"), num("exit_code"), ms(num("duration_ms")))
	case evNodeRepair:
		s = fmt.Sprintf("repair %s (%s, attempt %d): %s", str("state"), str("operation_id"), num("attempt"), str("reason"))
		if d := num("duration_ms"); d > 0 {
			s += ", took " + ms(d)
		}
		if e := str("error"); e != "" {
			s += ": " + e
		}
	case evAlertFiring, evAlertResolved:
		verb := "firing"
		if e.Type == evAlertResolved {
			verb = "resolved"
		}
		s = fmt.Sprintf("%s %s %s (%s): %s", str("severity"), str("rule"), verb, str("alert_id"), str("summary"))
		if f, _ := d["flapping"].(bool); f {
			s += " [flapping]"
		}
		if q, _ := d["silenced"].(bool); q {
			s += " [silenced]"
		}
	default:
		s = string(compact(e.Data))
	}
	if e.Stale {
		s += " [stale: dropped by the projection]"
	}
	return s
}
