// Package admin is the admin side of dbpilot's etcd contract: what the
// control plane, the `dbpilot-agent cluster` CLI and the local test bed
// (agent/localcluster) do to a cluster's keyspace. It reads a cluster (one
// consistent, decoded snapshot that reports malformed documents), requests
// a switchover (the one writer of a request, guarded by a compare-and-swap),
// puts the spec, requests an on-demand backup, removes member keys and
// whole keyspaces, waits for a condition on a watch, and provisions the
// per-cluster etcd users and roles. Keys and documents come from
// proto/keyspace; the dial options (endpoints, TLS, login) are the agent's
// (dcs.Options, dcs.ClientConfig). The agent's own session (leases, leader
// claims, locks) stays in agent/dcs.
package admin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// DefaultRequestTimeout bounds each etcd request when the caller's
// dcs.Options leave RequestTimeout 0 (and the context has no sooner
// deadline).
const DefaultRequestTimeout = 5 * time.Second

// Admin is an etcd connection for administering any number of clusters.
// Safe for concurrent use.
type Admin struct {
	cli     *clientv3.Client
	log     *zap.Logger
	timeout time.Duration
	owned   bool // Close closes cli
}

// Dial connects with the agent's dial configuration (dcs.ClientConfig):
// the same endpoints, TLS files and login options. opts.TTL may be 0 (no
// keepalive pings); DialTimeout and RequestTimeout default to 5 s.
// Errors: no endpoints, TLS material that cannot be loaded, a client that
// cannot be built (a wrong password surfaces here when etcd is reachable).
func Dial(opts dcs.Options, log *zap.Logger) (*Admin, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcd endpoints: none given; name at least one, e.g. http://127.0.0.1:2379")
	}
	opts.DialTimeout = cmp.Or(opts.DialTimeout, 5*time.Second)
	opts.RequestTimeout = cmp.Or(opts.RequestTimeout, DefaultRequestTimeout)
	cfg, err := dcs.ClientConfig(opts, log)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client (endpoints %v): %w", opts.Endpoints, err)
	}
	return &Admin{cli: cli, log: log.Named("etcd-admin"), timeout: opts.RequestTimeout, owned: true}, nil
}

// Wrap returns an Admin over an existing client (tests, and holders of a
// client made elsewhere); Close does not close cli.
func Wrap(cli *clientv3.Client, log *zap.Logger) *Admin {
	return &Admin{cli: cli, log: log.Named("etcd-admin"), timeout: DefaultRequestTimeout}
}

// Raw returns the underlying etcd client, for tests that write what no
// dbpilot component writes (malformed values, foreign keys).
func (a *Admin) Raw() *clientv3.Client { return a.cli }

// Close closes the connection (not one passed to Wrap).
func (a *Admin) Close() error {
	if !a.owned {
		return nil
	}
	return a.cli.Close()
}

func (a *Admin) req(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.timeout)
}

// Read reads the whole prefix of keys in one request (one etcd revision)
// and decodes it (keyspace.Parse): malformed documents are in
// Snapshot.Errors, each naming its key. Errors: the etcd read failed.
func (a *Admin) Read(ctx context.Context, keys keyspace.Keys) (keyspace.Snapshot, error) {
	rctx, cancel := a.req(ctx)
	defer cancel()
	resp, err := a.cli.Get(rctx, keys.Prefix(), clientv3.WithPrefix())
	if err != nil {
		return keyspace.Snapshot{}, fmt.Errorf("read %s: %w", keys.Prefix(), err)
	}
	return keyspace.Parse(keys, resp.Header.Revision, dcs.ToKVs(resp.Kvs)), nil
}

// Revision returns etcd's current revision (a linearizable read of the
// leader key of keys). Errors: the etcd read failed.
func (a *Admin) Revision(ctx context.Context, keys keyspace.Keys) (int64, error) {
	rctx, cancel := a.req(ctx)
	defer cancel()
	resp, err := a.cli.Get(rctx, keys.Leader())
	if err != nil {
		return 0, fmt.Errorf("read etcd revision: %w", err)
	}
	return resp.Header.Revision, nil
}

// RequestSwitchover writes a switchover request {from, to, state:
// requested, reason, requested_ms: now} unless a switchover key exists (a
// pending request or a hand-over in progress): the write is guarded by
// CreateRevision(switchover) = 0 (docs/keyspace.md). from is "" or the
// current primary, to "" (the best replica) or the target. It reports
// whether it wrote. Errors: the etcd transaction failed.
func (a *Admin) RequestSwitchover(ctx context.Context, keys keyspace.Keys, from, to, reason string) (bool, error) {
	return a.writeSwitchover(ctx, keys, clientv3.Compare(clientv3.CreateRevision(keys.Switchover()), "=", 0), from, to, reason)
}

// ReplaceSwitchover is RequestSwitchover over a switchover record the
// caller read at ModRevision rev (Snapshot.SwitchRev) and judged stale
// (an expired hand-over, a request nobody serves): the write is guarded by
// ModRevision(switchover) = rev, so a record written since, a hand-over in
// particular, is never overwritten. It reports whether it wrote.
// Errors: rev <= 0, or the etcd transaction failed.
func (a *Admin) ReplaceSwitchover(ctx context.Context, keys keyspace.Keys, rev int64, from, to, reason string) (bool, error) {
	if rev <= 0 {
		return false, fmt.Errorf("replace switchover: revision %d; pass the SwitchRev of the record read", rev)
	}
	return a.writeSwitchover(ctx, keys, clientv3.Compare(clientv3.ModRevision(keys.Switchover()), "=", rev), from, to, reason)
}

// writeSwitchover is the one writer of switchover requests.
func (a *Admin) writeSwitchover(ctx context.Context, keys keyspace.Keys, guard clientv3.Cmp, from, to, reason string) (bool, error) {
	sw := keyspace.Switchover{From: from, To: to, State: keyspace.SwitchoverRequested, Reason: reason, RequestedMS: time.Now().UnixMilli()}
	rctx, cancel := a.req(ctx)
	defer cancel()
	resp, err := a.cli.Txn(rctx).If(guard).Then(clientv3.OpPut(keys.Switchover(), keyspace.Encode(sw))).Commit()
	if err != nil {
		return false, fmt.Errorf("request switchover: %w", err)
	}
	if resp.Succeeded {
		a.log.Info("switchover requested", zap.String("cluster", keys.Prefix()), zap.String("from", from), zap.String("to", to), zap.String("reason", reason))
	}
	return resp.Succeeded, nil
}

// PutSpec writes the spec key with UpdatedMS set to now (a plain put: the
// control plane runs one operation per cluster at a time). Errors: a spec
// that fails Spec.Validate (naming the field), or the etcd put failed.
func (a *Admin) PutSpec(ctx context.Context, keys keyspace.Keys, spec keyspace.Spec) error {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	spec.UpdatedMS = time.Now().UnixMilli()
	rctx, cancel := a.req(ctx)
	defer cancel()
	if _, err := a.cli.Put(rctx, keys.Spec(), keyspace.Encode(spec)); err != nil {
		return fmt.Errorf("write spec: %w", err)
	}
	return nil
}

// RequestBackup writes on-demand request id (backup/requests/{id}) with
// RequestedMS set to now; one agent claims and answers it. A request
// already under id is replaced. Errors: an empty id, an unknown action, or
// the etcd put failed.
func (a *Admin) RequestBackup(ctx context.Context, keys keyspace.Keys, id string, req keyspace.BackupRequest) error {
	switch {
	case id == "":
		return errors.New("backup request id: empty; pass the operation id")
	case req.Action != "" && req.Action != keyspace.ActionBackup && req.Action != keyspace.ActionSwitchWAL:
		return fmt.Errorf("backup request action: %q is not %q or %q", req.Action, keyspace.ActionBackup, keyspace.ActionSwitchWAL)
	}
	req.RequestedMS = time.Now().UnixMilli()
	rctx, cancel := a.req(ctx)
	defer cancel()
	if _, err := a.cli.Put(rctx, keys.BackupRequest(id), keyspace.Encode(req)); err != nil {
		return fmt.Errorf("write backup request %s: %w", id, err)
	}
	return nil
}

// DeleteBackupRequest removes request id (absent is not an error).
// Errors: the etcd delete failed.
func (a *Admin) DeleteBackupRequest(ctx context.Context, keys keyspace.Keys, id string) error {
	rctx, cancel := a.req(ctx)
	defer cancel()
	if _, err := a.cli.Delete(rctx, keys.BackupRequest(id)); err != nil {
		return fmt.Errorf("delete backup request %s: %w", id, err)
	}
	return nil
}

// BackupRequestClaim reads who answered request id and how. ok is false
// when nobody claimed it yet. Errors: the etcd read failed, or the claim
// value is malformed (a *keyspace.DecodeError naming the key).
func (a *Admin) BackupRequestClaim(ctx context.Context, keys keyspace.Keys, id string) (claim keyspace.BackupClaim, ok bool, err error) {
	rctx, cancel := a.req(ctx)
	defer cancel()
	key := keys.BackupRequestClaim(id)
	resp, err := a.cli.Get(rctx, key)
	if err != nil {
		return claim, false, fmt.Errorf("read backup claim %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return claim, false, nil
	}
	claim, err = keyspace.DecodeBackupClaim(key, resp.Kvs[0].Value)
	return claim, err == nil, err
}

// DeleteMember removes node's member key (a removed node's agent is gone;
// its key would otherwise live until its lease expires). Errors: the etcd
// delete failed.
func (a *Admin) DeleteMember(ctx context.Context, keys keyspace.Keys, node string) error {
	rctx, cancel := a.req(ctx)
	defer cancel()
	if _, err := a.cli.Delete(rctx, keys.Member(node)); err != nil {
		return fmt.Errorf("delete member key %s: %w", node, err)
	}
	return nil
}

// DeleteCluster removes every key of a deleted cluster. Errors: the etcd
// delete failed.
func (a *Admin) DeleteCluster(ctx context.Context, keys keyspace.Keys) error {
	rctx, cancel := a.req(ctx)
	defer cancel()
	if _, err := a.cli.Delete(rctx, keys.Prefix(), clientv3.WithPrefix()); err != nil {
		return fmt.Errorf("delete %s: %w", keys.Prefix(), err)
	}
	return nil
}

// Wait reads the cluster and returns the first snapshot for which cond
// holds. Between reads it waits for a change under the prefix (an etcd
// watch from the revision after the first successful read, so no change
// in between is missed) or at most poll, whichever comes first (poll <= 0:
// 1 s); a failed read is retried the same way. It returns the last
// snapshot read and ctx's error when ctx ends first; the last read's error
// is joined in.
func (a *Admin) Wait(ctx context.Context, keys keyspace.Keys, poll time.Duration, cond func(keyspace.Snapshot) bool) (keyspace.Snapshot, error) {
	if poll <= 0 {
		poll = time.Second
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var changed <-chan struct{}
	var last keyspace.Snapshot
	var lastErr error
	for {
		s, err := a.Read(ctx, keys)
		if err == nil {
			last, lastErr = s, nil
			if cond(s) {
				return s, nil
			}
			if changed == nil {
				changed = dcs.WatchPrefix(wctx, func() *clientv3.Client { return a.cli }, keys.Prefix(), s.Revision+1, nil)
			}
		} else {
			lastErr = err
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return last, errors.Join(ctx.Err(), lastErr)
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}
