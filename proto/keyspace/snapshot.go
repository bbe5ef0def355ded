package keyspace

import (
	"errors"
	"slices"
	"strings"
)

// KV is one stored key as an etcd range read returns it, without the etcd
// types: the revisions are etcd revisions, Lease the lease id it is bound
// to (0: none).
type KV struct {
	Key            string
	Value          []byte
	CreateRevision int64
	ModRevision    int64
	Lease          int64
}

// Snapshot is one consistent read of a whole cluster prefix (one etcd
// revision), decoded. A value that does not decode is kept as far as it
// decoded (the agent's rules act on the key's presence: a malformed leader
// key still holds the leadership) and reported in Errors; Err(key) tells
// whether one key was malformed.
type Snapshot struct {
	Revision    int64
	Initialized bool
	SystemID    string
	Term        uint64
	TermRev     int64 // ModRevision of the term key, 0 if absent
	Leader      *LeaderRecord
	LeaderLease int64 // lease ID the leader key is bound to
	LeaderRev   int64 // CreateRevision of the leader key
	OptimeLSN   uint64
	Members     map[string]Member
	Sync        *SyncState
	Switchover  *Switchover
	SwitchRev   int64
	// Spec is the control plane's spec key; nil when it is absent or
	// malformed (SpecErr says why).
	Spec *Spec
	// SpecRev is the spec key's ModRevision, 0 if absent: it changes with
	// every write, so a malformed value can be reported once per change.
	SpecRev int64
	// SpecErr is why a present spec key was ignored (bad JSON or a field
	// that fails Spec.Validate); nil otherwise. It is in Errors too.
	SpecErr  error
	Document *ClusterDocument
	DocRev   int64
	// History are the history records in term order.
	History []HistoryRecord
	// BackupRequests are the pending on-demand requests by id.
	BackupRequests map[string]BackupRequest
	// RequestClaims are the claims of on-demand requests by request id
	// (locks/backup/request/{id}).
	RequestClaims map[string]BackupClaim
	// Errors are the malformed values, each a *DecodeError naming its key.
	Errors []error
}

// Err returns the decode error of key, nil when its value decoded (or the
// key is absent).
func (s Snapshot) Err(key string) error {
	for _, err := range s.Errors {
		if de, ok := errors.AsType[*DecodeError](err); ok && de.Key == key {
			return err
		}
	}
	return nil
}

// Parse decodes the keys of one range read of keys.Prefix() taken at etcd
// revision rev. Keys of the contract that are not documents (locks,
// claims) and keys outside it are skipped; every value that does not
// decode is reported in Snapshot.Errors.
func Parse(keys Keys, rev int64, kvs []KV) Snapshot { return parse(keys, rev, kvs, true) }

// ParseHA is Parse without the history records, the backup requests and
// their claims (Snapshot.History, BackupRequests and RequestClaims stay
// empty): the agent's HA cycle
// reads the prefix every cycle and uses neither, so it does not decode up
// to HistoryKept records each time.
func ParseHA(keys Keys, rev int64, kvs []KV) Snapshot { return parse(keys, rev, kvs, false) }

func parse(keys Keys, rev int64, kvs []KV, all bool) Snapshot {
	s := Snapshot{Revision: rev, Members: map[string]Member{}}
	for _, kv := range kvs {
		kind, arg := keys.ParseKey(kv.Key)
		var err error
		switch kind {
		case KindInitialize:
			s.Initialized, s.SystemID = true, string(kv.Value)
		case KindTerm:
			s.Term, err = DecodeTerm(kv.Key, kv.Value)
			s.TermRev = kv.ModRevision
		case KindLeader:
			var l LeaderRecord
			l, err = DecodeLeader(kv.Key, kv.Value)
			s.Leader, s.LeaderLease, s.LeaderRev = &l, kv.Lease, kv.CreateRevision
		case KindOptime:
			s.OptimeLSN, err = DecodeOptime(kv.Key, kv.Value)
		case KindSync:
			var st SyncState
			st, err = DecodeSync(kv.Key, kv.Value)
			st.Revision = kv.ModRevision
			s.Sync = &st
		case KindSwitchover:
			var sw Switchover
			sw, err = DecodeSwitchover(kv.Key, kv.Value)
			s.Switchover, s.SwitchRev = &sw, kv.ModRevision
		case KindSpec:
			s.SpecRev = kv.ModRevision
			sp, derr := DecodeSpec(kv.Key, kv.Value)
			if derr != nil {
				s.SpecErr, err = derr, derr
			} else {
				s.Spec = &sp
			}
		case KindState:
			var d ClusterDocument
			d, err = DecodeDocument(kv.Key, kv.Value)
			s.Document, s.DocRev = &d, kv.ModRevision
		case KindMember:
			var m Member
			m, err = DecodeMember(kv.Key, kv.Value)
			m.Revision = kv.ModRevision
			s.Members[arg] = m
		case KindHistory:
			if !all {
				continue
			}
			var h HistoryRecord
			if h, err = DecodeHistory(kv.Key, kv.Value); err == nil {
				s.History = append(s.History, h)
			}
		case KindBackupRequestClaim:
			if !all {
				continue
			}
			var c BackupClaim
			if c, err = DecodeBackupClaim(kv.Key, kv.Value); err == nil {
				if s.RequestClaims == nil {
					s.RequestClaims = map[string]BackupClaim{}
				}
				s.RequestClaims[arg] = c
			}
		case KindBackupRequest:
			if !all {
				continue
			}
			var r BackupRequest
			if r, err = DecodeBackupRequest(kv.Key, kv.Value); err == nil {
				if s.BackupRequests == nil {
					s.BackupRequests = map[string]BackupRequest{}
				}
				s.BackupRequests[arg] = r
			}
		}
		if err != nil {
			s.Errors = append(s.Errors, err)
		}
	}
	slices.SortFunc(s.History, func(a, b HistoryRecord) int {
		switch {
		case a.Term < b.Term:
			return -1
		case a.Term > b.Term:
			return 1
		}
		return strings.Compare(a.Node, b.Node)
	})
	return s
}
