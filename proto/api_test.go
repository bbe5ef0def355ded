package proto

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// jsonNames returns the JSON member names of struct type t.
func jsonNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "-" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// TestAPITypesMatchOpenAPI keeps the wire types and proto/openapi.json's
// schemas naming the same JSON members (types and constraints are the
// document's to state).
func TestAPITypesMatchOpenAPI(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	types := map[string]any{
		"Error": APIError{}, "Namespace": Namespace{}, "Project": Project{}, "NameRequest": NameRequest{},
		"ClusterCreate": ClusterCreate{}, "Cluster": Cluster{}, "Member": Member{}, "Operation": Operation{},
		"Scale": ScaleRequest{}, "ClusterUpdate": ClusterUpdate{}, "Switchover": SwitchoverRequest{}, "Event": Event{},
		"Template": Template{}, "Resources": Resources{}, "Grant": Grant{}, "TokenCreate": TokenCreate{}, "Token": Token{},
		"Audit": Audit{}, "JoinTokenCreate": JoinTokenCreate{}, "Enroll": EnrollRequest{}, "Host": Host{},
		"Backup": Backup{}, "BackupRun": BackupRunRequest{}, "Restore": RestoreRequest{},
		"IngestBatchResult": BatchResult{}, "AssignmentAck": AssignmentAck{},
		"Whoami": WhoAmI{}, "Version": ServerVersion{}, "JoinToken": JoinToken{}, "Assignment": Assignment{},
		"Plan": Plan{}, "BackupPolicy": BackupPolicy{}, "BackupJob": BackupJob{},
		"Failover": SwitchoverRequest{}, "Empty": struct{}{}, "PrometheusTargetGroup": PrometheusTargetGroup{},
		"StatementStats": StatementStats{}, "StatementStat": StatementStat{}, "Sessions": Sessions{}, "Session": Session{},
		"Alert": Alert{}, "SilenceRequest": SilenceRequest{}, "NotificationChannel": NotificationChannel{},
		"NotificationDelivery": NotificationDelivery{}, "AlertThresholds": AlertThresholds{},
	}
	// Members of a Go type that a schema leaves out on purpose: a failover
	// takes the switchover body without "from" (refused with 400).
	omitted := map[string][]string{"Failover": {"from"}}
	for name, s := range doc.Components.Schemas {
		v, ok := types[name]
		if !ok {
			t.Errorf("OpenAPI schema %s has no wire type in this test", name)
			continue
		}
		var documented []string
		for p := range s.Properties {
			documented = append(documented, p)
		}
		slices.Sort(documented)
		got := slices.DeleteFunc(jsonNames(reflect.TypeOf(v)), func(n string) bool { return slices.Contains(omitted[name], n) })
		if !slices.Equal(got, documented) {
			t.Errorf("%T has JSON members %v; OpenAPI schema %s has %v", v, got, name, documented)
		}
	}
}
