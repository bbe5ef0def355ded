package config

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dbpilot/dbpilot/handlers"
)

// yamlPath is the dotted YAML path of field f under prefix; false for a
// field without a YAML key.
func yamlPath(f reflect.StructField, prefix string) (string, bool) {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" || name == "-" {
		return "", false
	}
	if prefix == "" {
		return name, true
	}
	return prefix + "." + name, true
}

// configKeys returns the dotted YAML path of every leaf key under t (a
// struct type), with "[]" for list elements of structs.
func configKeys(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		path, ok := yamlPath(f, prefix)
		if !ok {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]():
			out = append(out, configKeys(ft, path)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, configKeys(ft.Elem(), path+"[]")...)
		default:
			out = append(out, path)
		}
	}
	return out
}

// documentedKeys returns the first cell of every row of the key tables in
// the "Key reference" section of docs/agent-config.md, with its default
// cell.
func documentedKeys(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../docs/agent-config.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "\n## Key reference\n")
	if start < 0 {
		t.Fatal("docs/agent-config.md has no \"## Key reference\" section")
	}
	doc = doc[start+1:]
	if end := strings.Index(doc[3:], "\n## "); end >= 0 {
		doc = doc[:end+3]
	}
	keys := map[string]string{}
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, " | ")
		if len(cells) < 3 {
			t.Fatalf("key table row with fewer than 3 cells: %s", line)
		}
		keys[strings.Trim(strings.TrimPrefix(cells[0], "| "), "`")] = cells[2]
	}
	return keys
}

// TestEveryKeyDocumented: every key of Config is in the key reference of
// docs/agent-config.md (backup's in docs/backups.md), and every key the
// reference lists exists.
func TestEveryKeyDocumented(t *testing.T) {
	documented := documentedKeys(t)
	var coded []string
	for _, k := range configKeys(reflect.TypeFor[Config](), "") {
		switch {
		case strings.HasPrefix(k, "backup."):
			continue // docs/backups.md, below
		case strings.HasPrefix(k, "handlers.") && k != "handlers.user":
			// One table for the five hooks: handlers.X.<key>, and the
			// health-only keys as handlers.health.<key>.
			parts := strings.SplitN(k, ".", 3)
			if parts[2] == "interval" || parts[2] == "threshold" {
				k = "handlers.health." + parts[2]
			} else {
				k = "handlers.X." + parts[2]
			}
		}
		if !slices.Contains(coded, k) {
			coded = append(coded, k)
		}
	}
	for _, k := range coded {
		if _, ok := documented[k]; !ok {
			t.Errorf("config key %s is not in the key reference of docs/agent-config.md", k)
		}
	}
	for k := range documented {
		if !slices.Contains(coded, k) {
			t.Errorf("docs/agent-config.md documents %s, which agent/config does not have", k)
		}
	}

	b, err := os.ReadFile("../../docs/backups.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range configKeys(reflect.TypeFor[Backup](), "backup") {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(string(b), leaf+":") && !strings.Contains(string(b), "`"+k+"`") {
			t.Errorf("config key %s is not in docs/backups.md", k)
		}
	}
}

// TestDocumentedDefaults: where the key reference gives a literal default
// (`5s`, `"off"`, `127.0.0.1:8008`) or another key (`node.address`), it is
// the value Load applies.
func TestDocumentedDefaults(t *testing.T) {
	y, dir := validYAML(t)
	// No handlers (their defaults are the runner's) and an HTTP event
	// transport, whose defaults apply only when it is set.
	y = y[:strings.Index(y, "handlers:")] + "events: {http: {url: 'http://cp:8080/v1/ingest/events'}}\n"
	y = strings.Replace(y, "project: blue, ", "", 1) // cluster.project has a default
	c, err := Parse([]byte(y), dir)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{}
	collectValues(reflect.ValueOf(*c), "", values)
	values["tags.priority"] = fmt.Sprint(c.Tags.PriorityValue())
	checked := 0
	for key, def := range documentedKeys(t) {
		if strings.HasPrefix(key, "handlers.") && key != "handlers.user" {
			continue // Spec defaults are applied by the handler runner (handlers.Default*)
		}
		if key == "postgres.os_user" && os.Geteuid() != 0 {
			continue // the default applies only when the agent runs as root
		}
		if !strings.HasPrefix(def, "`") {
			continue // "required", "none", prose
		}
		lit := def[1 : 1+strings.Index(def[1:], "`")]
		want := strings.Trim(lit, `"`)
		if ref, ok := values[lit]; ok {
			want = ref // a default given as another key
		}
		switch lit {
		case "{}", "[]":
			want = ""
		}
		got, ok := values[key]
		if !ok {
			t.Errorf("%s: no value found for the documented default %s", key, lit)
			continue
		}
		if got != want {
			t.Errorf("%s: docs say the default is %s, Load applies %q", key, lit, got)
		}
		checked++
	}
	if checked < 15 {
		t.Fatalf("only %d documented defaults checked; is the key reference table format still | key | type | default | …?", checked)
	}
}

// collectValues records the formatted value of every leaf under v.
func collectValues(v reflect.Value, prefix string, out map[string]string) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		path, ok := yamlPath(f, prefix)
		if !ok {
			continue
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Pointer {
			if fv.IsNil() {
				continue
			}
			fv = fv.Elem()
		}
		switch {
		case fv.Type() == reflect.TypeFor[time.Duration]():
			out[path] = fv.Interface().(time.Duration).String()
		case fv.Type() == reflect.TypeFor[handlers.Set]():
			out[path+".user"] = fv.Interface().(handlers.Set).User
		case fv.Kind() == reflect.Struct:
			collectValues(fv, path, out)
		case fv.Kind() == reflect.Map || fv.Kind() == reflect.Slice:
			if fv.Len() == 0 {
				out[path] = ""
			} else {
				out[path] = fmt.Sprint(fv.Interface())
			}
		default:
			out[path] = fmt.Sprint(fv.Interface())
		}
	}
}

// TestBackupsDocSchemaValidates: the backup schema example of
// docs/backups.md decodes strictly and validates.
func TestBackupsDocSchemaValidates(t *testing.T) {
	b, err := os.ReadFile("../../docs/backups.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "\n## Job schema\n")
	if i < 0 {
		t.Fatal(`docs/backups.md has no "## Job schema" section`)
	}
	doc = doc[i:]
	start := strings.Index(doc, "```yaml\n")
	end := strings.Index(doc[start+8:], "```")
	if start < 0 || end < 0 {
		t.Fatal("no yaml block under Job schema")
	}
	y, dir := validYAML(t)
	if _, err := Parse([]byte(y+doc[start+8:start+8+end]), dir); err != nil {
		t.Fatalf("the schema example of docs/backups.md:\n%v", err)
	}
}
