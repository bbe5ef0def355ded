package agent

import (
	"reflect"
	"slices"
	"testing"

	"github.com/dbpilot/dbpilot/agent/postgres"
)

func TestSlotPlan(t *testing.T) {
	name := postgres.SlotName
	phys := func(node string, active bool, walStatus string) postgres.ReplicationSlot {
		return postgres.ReplicationSlot{Name: name(node), Type: "physical", Active: active, WALStatus: walStatus, RestartLSN: 1}
	}
	type slots = []postgres.ReplicationSlot
	for _, tc := range []struct {
		what       string
		members    []string
		spec       []string
		existing   slots
		create     []string
		drop       []string
		foreign    []string
		sharedWith map[string][]string
	}{
		{what: "fresh primary: a slot per other member",
			members: []string{"n1", "n2", "n3"},
			create:  []string{name("n2"), name("n3")}},
		{what: "steady state: nothing to do",
			members: []string{"n1", "n2", "n3"}, existing: slots{phys("n2", true, "reserved"), phys("n3", true, "reserved")}},
		{what: "spec nodes not yet (or no longer) members get a slot too",
			members: []string{"n1", "n2"}, spec: []string{"n1", "n2", "n3"}, existing: slots{phys("n2", true, "reserved")},
			create: []string{name("n3")}},
		{what: "empty spec: a member that is merely down keeps its slot",
			members: []string{"n1", "n2"}, existing: slots{phys("n2", true, "reserved"), phys("n3", false, "extended")}},
		{what: "non-empty spec: a node neither listed nor a member loses its slot",
			members: []string{"n1", "n2"}, spec: []string{"n1", "n2"}, existing: slots{phys("n2", true, "reserved"), phys("n3", false, "reserved")},
			drop: []string{name("n3")}},
		{what: "a node removed from the spec but still a member keeps its slot",
			members: []string{"n1", "n2", "n3"}, spec: []string{"n1", "n2"}, existing: slots{phys("n2", true, "reserved"), phys("n3", false, "reserved")}},
		{what: "an active slot is never dropped",
			members: []string{"n1"}, spec: []string{"n1"}, existing: slots{phys("n3", true, "reserved")}},
		{what: "own slot (left from being a replica) is dropped, even with an empty spec",
			members: []string{"n1", "n2"}, existing: slots{phys("n1", false, "reserved"), phys("n2", true, "reserved")},
			drop: []string{name("n1")}},
		{what: "own slot while active (cannot happen, but) is kept",
			members: []string{"n1"}, existing: slots{phys("n1", true, "reserved")}},
		{what: "slots the agent does not manage are left alone",
			members: []string{"n1"}, spec: []string{"n1"},
			existing: slots{{Name: "backup_tool", Type: "physical"}, {Name: "app_cdc", Type: "logical"}, {Name: "dbpilot_tmp", Type: "physical", Temporary: true}, {Name: "dbpilot_logical", Type: "logical"}}},
		{what: "a lost, inactive slot is recreated",
			members: []string{"n1", "n2"}, existing: slots{phys("n2", false, "lost")},
			create: []string{name("n2")}, drop: []string{name("n2")}},
		{what: "a lost slot in use is kept (the sender fails by itself)",
			members: []string{"n1", "n2"}, existing: slots{phys("n2", true, "lost")}},
		{what: "unreserved is not lost yet",
			members: []string{"n1", "n2"}, existing: slots{phys("n2", false, "unreserved")}},
		{what: "a logical slot under a member's slot name is not touched",
			members: []string{"n1", "n2"}, existing: slots{{Name: name("n2"), Type: "logical"}},
			foreign: []string{name("n2")}},
		{what: "hashed names: nodes with '-' and '.'",
			members: []string{"db-1", "db-2", "db.2"}, spec: []string{"db-1", "db-2", "db.2"},
			create: sorted(name("db-1"), name("db-2"), name("db.2"))},
		{what: "self is never given a slot; duplicates collapse",
			members: []string{"n1", "n2"}, spec: []string{"n2", "n2", "n1"},
			create: []string{name("n2")}},
	} {
		p := planSlots("n1", tc.members, tc.spec, tc.existing)
		if !reflect.DeepEqual(p.Create, tc.create) || !reflect.DeepEqual(p.Drop, tc.drop) || !reflect.DeepEqual(p.Foreign, tc.foreign) ||
			!reflect.DeepEqual(p.Shared, tc.sharedWith) {
			t.Errorf("%s:\n got create %q drop %q foreign %q shared %v\nwant create %q drop %q foreign %q shared %v",
				tc.what, p.Create, p.Drop, p.Foreign, p.Shared, tc.create, tc.drop, tc.foreign, tc.sharedWith)
		}
	}
}

func sorted(s ...string) []string { return slices.Sorted(slices.Values(s)) }
