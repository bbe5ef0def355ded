package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"gopkg.in/yaml.v3"
)

var errEOF = io.EOF

// objects is anything that can be printed as JSON/YAML verbatim.
type rawer interface{ Raw() json.RawMessage }

// printObject prints one API object: its JSON (or YAML) as the server sent
// it, or the table.
func (a *app) printObject(raw json.RawMessage, table func(w io.Writer)) error {
	switch {
	case a.g.output == "json":
		return writeJSON(a.stdout, raw)
	case a.g.output == "yaml":
		return writeYAML(a.stdout, raw)
	case strings.HasPrefix(a.g.output, "go-template="):
		return writeTemplate(a.stdout, strings.TrimPrefix(a.g.output, "go-template="), raw)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// printList prints API objects as the list envelope {"items": […]} or a
// table.
func printList[T rawer](a *app, items []T, table func(w io.Writer)) error {
	if a.g.output == "table" {
		return a.printObject(nil, table)
	}
	raws := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		raws = append(raws, it.Raw())
	}
	b, err := json.Marshal(map[string]any{"items": raws})
	if err != nil {
		return err
	}
	return a.printObject(b, nil)
}

// printValue prints a value that is not an API object (contexts, the
// version pair) in the same formats.
func (a *app) printValue(v any, table func(w io.Writer)) error {
	if a.g.output == "table" {
		return a.printObject(nil, table)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return a.printObject(b, nil)
}

func writeJSON(w io.Writer, raw json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("print JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// writeYAML converts JSON to block-style YAML, keeping the key order.
func writeYAML(w io.Writer, raw json.RawMessage) error {
	b, err := toYAML(raw)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

var yaml11Bool = map[string]bool{"y": true, "n": true, "yes": true, "no": true, "on": true, "off": true, "true": true, "false": true}

func toYAML(raw json.RawMessage) ([]byte, error) {
	// encoding/json leaves DEL and C1 controls raw inside strings, which
	// the YAML parser refuses: escape them (\u00XX) first.
	var esc bytes.Buffer
	_, _ = (&safeWriter{w: &esc}).Write(raw)
	var n yaml.Node
	if err := yaml.Unmarshal(esc.Bytes(), &n); err != nil {
		return nil, fmt.Errorf("print YAML: %w", err)
	}
	var plain func(*yaml.Node)
	plain = func(n *yaml.Node) {
		n.Style = 0
		// YAML 1.1 readers (PyYAML) take on/off/yes/no/y/n as booleans:
		// keep such strings (synchronous_mode: "off") quoted.
		if n.Kind == yaml.ScalarNode && n.Tag == "!!str" && yaml11Bool[strings.ToLower(n.Value)] {
			n.Style = yaml.DoubleQuotedStyle
		}
		for _, c := range n.Content {
			plain(c)
		}
	}
	plain(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("print YAML: %w", err)
	}
	if err := enc.Close(); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeTemplate executes a Go template over the decoded JSON object
// (-o go-template='{{.primary}}'), as kubectl does.
func writeTemplate(w io.Writer, text string, raw json.RawMessage) error {
	t, err := template.New("output").Option("missingkey=error").Parse(text)
	if err != nil {
		return usagef("--output go-template: %v", err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("go-template: %w", err)
	}
	if err := t.Execute(w, v); err != nil {
		return usagef("--output go-template: %v", err)
	}
	_, err = fmt.Fprintln(w)
	return err
}

// row writes tab-separated cells, each with its control characters
// (tabs and newlines included) escaped: a server string stays in its cell.
func row(w io.Writer, cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = escapeControl(fmt.Sprint(c))
	}
	fmt.Fprintln(w, strings.Join(s, "\t"))
}

// orDash returns "-" for empty values.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age is a short human duration since t.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return short(now.Sub(t))
}

// short formats a duration as 45s, 12m, 3h, 2d.
func short(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// bytesHuman formats a byte count (lag) as B, KiB, MiB, GiB.
func bytesHuman(n int64) string {
	switch {
	case n < 0:
		return "unknown"
	case n < 1024:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}
