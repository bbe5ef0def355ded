// Package clusterview reads a cluster's state from etcd for people and
// tools: members, leader, term, history and the sync set, formatted as the
// table the demo and `dbpilot-agent cluster list` print. It reads through
// agent/dcs/admin.
package clusterview

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/dcs/admin"
	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// Status is the cluster as etcd shows it.
type Status struct {
	Term    uint64
	Leader  string
	Members []dcs.Member // sorted by name
	History []dcs.HistoryRecord
	Sync    []string
	// SyncLeader is the primary that wrote the sync key.
	SyncLeader string
	// Errors are the values that did not decode, each a
	// *keyspace.DecodeError naming its key; such a key is left out of the
	// fields above.
	Errors []error
}

// SyncSettled reports whether the sync key was written by the current leader
// and lists exactly every other member: the steady state of synchronous mode.
func (s Status) SyncSettled() bool {
	if s.Leader == "" || s.SyncLeader != s.Leader {
		return false
	}
	var others []string
	for _, m := range s.Members {
		if m.Node != s.Leader {
			others = append(others, m.Node)
		}
	}
	sync := slices.Clone(s.Sync)
	slices.Sort(sync)
	return slices.Equal(sync, others)
}

// Member returns the member named n.
func (s Status) Member(n string) (dcs.Member, bool) {
	i := slices.IndexFunc(s.Members, func(m dcs.Member) bool { return m.Node == n })
	if i < 0 {
		return dcs.Member{}, false
	}
	return s.Members[i], true
}

// ReadStatus reads any cluster's keys through adm. Malformed values are
// in Status.Errors (each naming its key), not dropped silently.
// Errors: the etcd read failed.
func ReadStatus(ctx context.Context, adm *admin.Admin, keys keyspace.Keys) (Status, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	snap, err := adm.Read(rctx, keys)
	if err != nil {
		return Status{}, err
	}
	s := Status{Term: snap.Term, History: snap.History, Errors: snap.Errors}
	if snap.Leader != nil && snap.Err(keys.Leader()) == nil {
		s.Leader = snap.Leader.Node
	}
	if snap.Sync != nil && snap.Err(keys.Sync()) == nil {
		s.Sync, s.SyncLeader = snap.Sync.Standbys, snap.Sync.Leader
	}
	for n, m := range snap.Members {
		if snap.Err(keys.Member(n)) == nil {
			s.Members = append(s.Members, m)
		}
	}
	slices.SortFunc(s.Members, func(a, b dcs.Member) int { return strings.Compare(a.Node, b.Node) })
	return s, nil
}

// Primaries returns the members that report themselves writable.
func (s Status) Primaries() []string {
	var out []string
	for _, m := range s.Members {
		if m.Role == "primary" {
			out = append(out, m.Node)
		}
	}
	return out
}

// Streaming returns the members that are replicas streaming WAL.
func (s Status) Streaming() []string {
	var out []string
	for _, m := range s.Members {
		if m.Role == "replica" && m.Streaming {
			out = append(out, m.Node)
		}
	}
	return out
}

// Table formats the status as the demo prints it.
func (s Status) Table() string {
	var b strings.Builder
	s.WriteTable(&b)
	return b.String()
}

// WriteTable writes node, role, state, LSN, lag and term as aligned columns.
func (s Status) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tSTATE\tLEADER\tLSN\tLAG(bytes)\tTIMELINE\tTERM")
	for _, m := range s.Members {
		lead := ""
		if m.Node == s.Leader {
			lead = "*"
		}
		lag := strconv.FormatInt(m.LagBytes, 10)
		if m.LagBytes < 0 {
			lag = "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", m.Node, m.Role, m.State, lead, lsn(m.LSN), lag, m.Timeline, s.Term)
	}
	_ = tw.Flush()
}

func lsn(l uint64) string { return fmt.Sprintf("%X/%X", l>>32, uint32(l)) }
