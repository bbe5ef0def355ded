package dcs

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/dbpilot/dbpilot/proto/keyspace"
)

// ErrLeaseLost is returned by Renew when etcd no longer knows the agent's
// lease (it expired): every key bound to it, the leader key included, is gone.
var ErrLeaseLost = errors.New("etcd lease lost")

// ErrLocked is returned by TryLock when another agent holds the lock.
var ErrLocked = concurrency.ErrLocked

// Options configures Dial.
type Options struct {
	Endpoints      []string
	CAFile         string
	CertFile       string
	KeyFile        string
	Username       string
	Password       string
	DialTimeout    time.Duration
	RequestTimeout time.Duration // bound of every single etcd request
	TTL            time.Duration // lease TTL, whole seconds (etcd granularity)
}

// Client is one agent's connection to etcd: the client, its two leases and
// the cluster's keys. Safe for concurrent use.
//
// The HA lease carries the member key and the leader key. Nothing renews it
// in the background: only Renew does, which the HA loop calls once per cycle
// (and, bounded, while a slow action runs). A loop that stops making
// progress therefore loses the leader key after one TTL and a healthy
// replica takes over (issue 10, item 2). The lock session is a separate
// concurrency.Session with its own lease, kept alive by the client library,
// for the short-lived locks and claims (bootstrap and failover locks,
// backup occurrences), which must not expire in the middle of a long backup.
type Client struct {
	// cli is the etcd client in use. With a login configured and etcd
	// unreachable at Dial, it is first an unauthenticated placeholder
	// (requests fail as with etcd down) until Session manages the
	// authenticated dial (authPending).
	cli         atomic.Pointer[clientv3.Client]
	cfg         clientv3.Config
	authPending atomic.Bool
	dialMu      sync.Mutex
	keys        Keys
	log         *zap.Logger
	opts        Options

	mu    sync.Mutex
	lease clientv3.LeaseID     // HA lease; NoLease when none
	sess  *concurrency.Session // lock session; nil until first needed

	// validUntil is a lower bound of the lease's expiry on the server, in
	// unix ns: the send time of the last successful keepalive plus the TTL
	// the server granted. 0 = no proven lease.
	validUntil atomic.Int64
}

// ClientConfig is the etcd client configuration of opts: endpoints, the
// login (Username/Password), TLS from CAFile/CertFile/KeyFile (TLS 1.2 or
// later), DialTimeout, keepalive pings every TTL/2 (none when TTL is 0) and
// a reconnect backoff of at most 1 s. The agent's session (Dial) and the
// admin side (agent/dcs/admin) both dial with it, so every etcd client of
// dbpilot honours the same TLS and auth options.
// Errors: TLS material that cannot be loaded (the error names the file option).
func ClientConfig(opts Options, log *zap.Logger) (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:            opts.Endpoints,
		DialTimeout:          opts.DialTimeout,
		DialKeepAliveTime:    opts.TTL / 2,
		DialKeepAliveTimeout: opts.RequestTimeout,
		Username:             opts.Username,
		Password:             opts.Password,
		Logger:               log.Named("etcd-client").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
		// gRPC's default reconnect backoff grows to 120 s: after a long
		// etcd outage the agent would find etcd back only tens of seconds
		// late, and a primary riding out the outage in failsafe mode would
		// fence meanwhile (the members, which reach etcd again, stop
		// confirming it). Reconnect at least every second instead.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: opts.RequestTimeout,
		})},
	}
	if opts.CAFile != "" || opts.CertFile != "" {
		info := transport.TLSInfo{TrustedCAFile: opts.CAFile, CertFile: opts.CertFile, KeyFile: opts.KeyFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return cfg, fmt.Errorf("etcd tls (ca_file %q, cert_file %q, key_file %q): %w", opts.CAFile, opts.CertFile, opts.KeyFile, err)
		}
		tc.MinVersion = tls.VersionTLS12
		cfg.TLS = tc
	}
	return cfg, nil
}

// Dial connects to etcd with ClientConfig(opts). It does not grant a lease
// yet (see Session). Errors: invalid TLS material, a client that cannot be
// built.
func Dial(opts Options, keys Keys, log *zap.Logger) (*Client, error) {
	cfg, err := ClientConfig(opts, log)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, keys: keys, log: log.Named("dcs"), opts: opts}
	cli, err := clientv3.New(cfg)
	if err != nil && cfg.Username != "" && !errors.Is(err, rpctypes.ErrAuthFailed) {
		// With a login, clientv3.New authenticates at once and fails while
		// etcd is unreachable. An agent (re)started during an etcd outage
		// must still start and retry like any agent (its database may be
		// needed when etcd returns): start on a placeholder without the
		// login, whose requests fail as with etcd down, and let Session
		// retry the authenticated dial. Wrong credentials stay fatal.
		ph := cfg
		ph.Username, ph.Password = "", ""
		if cli, err = clientv3.New(ph); err == nil {
			c.authPending.Store(true)
			c.log.Warn("etcd unreachable at start: will authenticate on the first connection", zap.Strings("endpoints", cfg.Endpoints))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	c.cli.Store(cli)
	return c, nil
}

// etcd is the client in use (see Client.cli).
func (c *Client) etcd() *clientv3.Client { return c.cli.Load() }

// authenticate replaces the placeholder client with the authenticated one
// once etcd answers (a no-op when not pending). Errors: the dial's, e.g.
// etcd still unreachable or the login refused.
func (c *Client) authenticate(ctx context.Context) error {
	if !c.authPending.Load() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	if !c.authPending.Load() {
		return nil
	}
	cfg := c.cfg
	if cfg.DialTimeout <= 0 || cfg.DialTimeout > c.opts.RequestTimeout {
		cfg.DialTimeout = c.opts.RequestTimeout
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return fmt.Errorf("etcd login as %s: %w", cfg.Username, err)
	}
	old := c.cli.Swap(cli)
	c.authPending.Store(false)
	c.log.Info("etcd login done", zap.String("user", cfg.Username))
	_ = old.Close() // ends the placeholder's watches; Watch re-creates them on the new client
	return nil
}

// Keys returns the cluster's keyspace.
func (c *Client) Keys() Keys { return c.keys }

// Raw returns the underlying etcd client (for tests and tools).
func (c *Client) Raw() *clientv3.Client { return c.etcd() }

func (c *Client) req(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opts.RequestTimeout)
}

// TTLSeconds converts the configured TTL to etcd's whole seconds; the only
// place a TTL crosses the etcd API.
func (c *Client) TTLSeconds() int64 { return int64(c.opts.TTL / time.Second) }

// Session makes sure the agent holds an HA lease, granting a new one if
// there is none or the previous one was lost, and reports whether it is
// fresh (any leader key bound to the previous lease is gone). It makes one
// Grant request only when a lease is needed.
// The lease is returned as its etcd ID (0 never: a failed grant returns
// an error).
// Errors: the transport error of the grant.
func (c *Client) Session(ctx context.Context) (lease int64, fresh bool, err error) {
	if err := c.authenticate(ctx); err != nil {
		return 0, false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lease != clientv3.NoLease {
		return int64(c.lease), false, nil
	}
	rctx, cancel := c.req(ctx)
	defer cancel()
	sent := time.Now()
	g, err := c.etcd().Grant(rctx, c.TTLSeconds())
	if err != nil {
		return 0, false, fmt.Errorf("grant lease: %w", err)
	}
	c.lease = g.ID
	c.validUntil.Store(sent.Add(time.Duration(g.TTL) * time.Second).UnixNano())
	c.log.Info("etcd HA lease granted", zap.Int64("lease", int64(g.ID)), zap.Int64("ttl_s", g.TTL))
	return int64(g.ID), true, nil
}

// lockSession returns the lock session, starting a new one (one Grant
// request) if there is none or the previous one ended. The session is built
// from the client's own context, not the caller's, so cancelling the agent
// cannot keep Close from revoking it.
func (c *Client) lockSession(ctx context.Context) (*concurrency.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		select {
		case <-c.sess.Done():
			c.log.Warn("etcd lock session ended; starting a new one", zap.Int64("lease", int64(c.sess.Lease())))
			c.sess = nil
		default:
			return c.sess, nil
		}
	}
	rctx, cancel := c.req(ctx)
	defer cancel()
	g, err := c.etcd().Grant(rctx, c.TTLSeconds())
	if err != nil {
		return nil, fmt.Errorf("grant lock lease: %w", err)
	}
	s, err := concurrency.NewSession(c.etcd(), concurrency.WithLease(g.ID), concurrency.WithTTL(int(g.TTL)))
	if err != nil {
		return nil, fmt.Errorf("new lock session: %w", err)
	}
	c.sess = s
	return s, nil
}

// WarmLocks makes sure the lock session is alive, starting a new one if
// the previous one ended (its lease lapsed during an etcd outage, say), so
// that a failover or switchover does not pay for a Grant on its critical
// path. Errors: as lockSession.
func (c *Client) WarmLocks(ctx context.Context) error {
	_, err := c.lockSession(ctx)
	return err
}

// Lease returns the current HA lease ID or clientv3.NoLease.
func (c *Client) Lease() clientv3.LeaseID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lease
}

// LeaseID is [Client.Lease] as a plain integer (0 = no lease), the form the
// snapshot's LeaderLease carries, for callers that do not speak clientv3.
func (c *Client) LeaseID() int64 { return int64(c.Lease()) }

// Renew sends one keepalive for the agent's HA lease and, on success, moves
// the proven lower bound of its expiry to send time + granted TTL. It is the
// only renewal of that lease: the HA cycle calls it, so leadership is proven
// by the loop itself and lapses when the loop stops.
// Errors: ErrLeaseLost when the lease expired, or the transport error.
func (c *Client) Renew(ctx context.Context) error {
	lease := c.Lease()
	if lease == clientv3.NoLease {
		return ErrLeaseLost
	}
	rctx, cancel := c.req(ctx)
	defer cancel()
	sent := time.Now()
	resp, err := c.etcd().KeepAliveOnce(rctx, lease)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0) {
		c.dropSession(lease)
		return ErrLeaseLost
	}
	if err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	c.validUntil.Store(sent.Add(time.Duration(resp.TTL) * time.Second).UnixNano())
	return nil
}

func (c *Client) dropSession(lease clientv3.LeaseID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lease == lease {
		c.lease = clientv3.NoLease
		c.validUntil.Store(0)
	}
}

// LeaseLeft is how long the lease is still provably valid (≤ 0: not proven).
func (c *Client) LeaseLeft(now time.Time) time.Duration {
	v := c.validUntil.Load()
	if v == 0 {
		return 0
	}
	return time.Unix(0, v).Sub(now)
}

// ToKVs converts an etcd range response's key-values to the etcd-free
// form keyspace.Parse reads.
func ToKVs(kvs []*mvccpb.KeyValue) []keyspace.KV {
	out := make([]keyspace.KV, len(kvs))
	for i, kv := range kvs {
		out[i] = keyspace.KV{Key: string(kv.Key), Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Lease: kv.Lease}
	}
	return out
}

// Snapshot reads the whole cluster prefix in one request (one revision)
// and decodes it with keyspace.ParseHA (no history, no backup requests). Malformed values are logged here
// (warn, with the key) and never fatal: the writer of that key overwrites
// it on its next cycle. A malformed spec key is not logged here, as
// Snapshot runs every cycle: the agent reports it once per change (SpecRev).
// Errors: the etcd read failed.
func (c *Client) Snapshot(ctx context.Context) (Snapshot, error) {
	rctx, cancel := c.req(ctx)
	defer cancel()
	resp, err := c.etcd().Get(rctx, c.keys.Prefix(), clientv3.WithPrefix())
	if err != nil {
		return Snapshot{}, fmt.Errorf("read cluster: %w", err)
	}
	s := keyspace.ParseHA(c.keys, resp.Header.Revision, ToKVs(resp.Kvs))
	for _, err := range s.Errors {
		if err != s.SpecErr {
			c.log.Warn("ignoring malformed value", zap.Error(err))
		}
	}
	return s, nil
}

// mustJSON marshals the plain record structs of this package, which have no
// channel, func or cyclic field, so Marshal cannot fail for them.
func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// PutMember writes this agent's member key bound to its lease.
func (c *Client) PutMember(ctx context.Context, m Member) error {
	lease := c.Lease()
	if lease == clientv3.NoLease {
		return ErrLeaseLost
	}
	m.UpdatedMS = nowMS()
	rctx, cancel := c.req(ctx)
	defer cancel()
	_, err := c.etcd().Put(rctx, c.keys.Member(m.Node), mustJSON(m), clientv3.WithLease(lease))
	if err != nil {
		return fmt.Errorf("put member %s: %w", m.Node, err)
	}
	return nil
}

// Bootstrap atomically marks the cluster initialized and makes this agent its
// first primary: initialize, term 1, leader (on our lease), history/1 and the
// cluster document, only if neither initialize nor leader exists. It returns
// false when another agent got there first.
func (c *Client) Bootstrap(ctx context.Context, systemID string, l LeaderRecord, doc ClusterDocument) (int64, bool, error) {
	lease := c.Lease()
	if lease == clientv3.NoLease {
		return 0, false, ErrLeaseLost
	}
	l.Term, l.Since = 1, nowMS()
	h := HistoryRecord{Term: 1, Node: l.Node, Reason: keyspace.ReasonBootstrap, LSN: l.LSN, Timeline: l.Timeline, AtMS: l.Since}
	rctx, cancel := c.req(ctx)
	defer cancel()
	resp, err := c.etcd().Txn(rctx).If(
		clientv3.Compare(clientv3.CreateRevision(c.keys.Initialize()), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(c.keys.Leader()), "=", 0),
		// Terms never restart: a cluster whose marker was deleted by hand
		// is not bootstrapped again over its history.
		clientv3.Compare(clientv3.CreateRevision(c.keys.Term()), "=", 0),
	).Then(
		clientv3.OpPut(c.keys.Initialize(), systemID),
		clientv3.OpPut(c.keys.Term(), keyspace.EncodeUint(1)),
		clientv3.OpPut(c.keys.Leader(), mustJSON(l), clientv3.WithLease(lease)),
		clientv3.OpPut(c.keys.History(1), mustJSON(h)),
		clientv3.OpPut(c.keys.State(), mustJSON(doc)),
		clientv3.OpPut(c.keys.Optime(), keyspace.EncodeUint(l.LSN)),
	).Commit()
	if err != nil {
		return 0, false, fmt.Errorf("bootstrap txn: %w", err)
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

// HistoryKept is how many history records (terms) are kept in etcd; older
// ones are deleted by the claim that writes a new one.
const HistoryKept = 100

// ClaimLeader creates the leader key on our lease at term prevTerm+1, bumps
// the term and writes history/{term}, only if there is no leader and the term
// key is still at termRev (nobody else claimed in between). extra ops (e.g.
// deleting a consumed switchover) join the same transaction. It returns the
// leader key's create revision and whether the claim succeeded.
func (c *Client) ClaimLeader(ctx context.Context, l LeaderRecord, prevTerm uint64, termRev int64, h HistoryRecord, extra ...Op) (int64, bool, error) {
	lease := c.Lease()
	if lease == clientv3.NoLease {
		return 0, false, ErrLeaseLost
	}
	l.Term, l.Since = prevTerm+1, nowMS()
	h.Term, h.Node, h.AtMS = l.Term, l.Node, l.Since
	ops := append([]clientv3.Op{
		clientv3.OpPut(c.keys.Leader(), mustJSON(l), clientv3.WithLease(lease)),
		clientv3.OpPut(c.keys.Term(), keyspace.EncodeUint(l.Term)),
		clientv3.OpPut(c.keys.History(l.Term), mustJSON(h)),
	}, extra...)
	if l.Term > HistoryKept {
		// Every cycle reads the whole prefix: keep the history bounded.
		ops = append(ops, clientv3.OpDelete(c.keys.History(l.Term-HistoryKept)))
	}
	rctx, cancel := c.req(ctx)
	defer cancel()
	resp, err := c.etcd().Txn(rctx).If(
		clientv3.Compare(clientv3.CreateRevision(c.keys.Leader()), "=", 0),
		clientv3.Compare(clientv3.ModRevision(c.keys.Term()), "=", termRev),
	).Then(ops...).Commit()
	if err != nil {
		return 0, false, fmt.Errorf("claim leader txn: %w", err)
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

// ReclaimLeader re-creates the leader key for l on our HA lease at the
// unchanged term, only if there is no leader key and the term key still
// reads term. It is the failsafe path of a primary whose key lapsed with its
// lease during an etcd outage while every member kept confirming it: no
// election took place, so the term does not move. It returns the key's
// create revision and whether the claim succeeded.
func (c *Client) ReclaimLeader(ctx context.Context, l LeaderRecord, term uint64) (int64, bool, error) {
	lease := c.Lease()
	if lease == clientv3.NoLease {
		return 0, false, ErrLeaseLost
	}
	l.Term = term
	if l.Since == 0 {
		l.Since = nowMS()
	}
	rctx, cancel := c.req(ctx)
	defer cancel()
	resp, err := c.etcd().Txn(rctx).If(
		clientv3.Compare(clientv3.CreateRevision(c.keys.Leader()), "=", 0),
		clientv3.Compare(clientv3.Value(c.keys.Term()), "=", keyspace.EncodeUint(term)),
	).Then(
		clientv3.OpPut(c.keys.Leader(), mustJSON(l), clientv3.WithLease(lease)),
	).Commit()
	if err != nil {
		return 0, false, fmt.Errorf("reclaim leader txn: %w", err)
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

// Probe makes one linearizable read (it needs an etcd quorum) bounded by
// timeout, and returns its error: nil means etcd is reachable from here.
func (c *Client) Probe(ctx context.Context, timeout time.Duration) error {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := c.etcd().Get(rctx, c.keys.Term())
	return err
}

// UpdateLeader refreshes the leader value (LSN, timeline) and the optime key,
// guarded by the leader key's create revision so only the holder writes.
// It returns false when we no longer hold the key.
func (c *Client) UpdateLeader(ctx context.Context, l LeaderRecord, createRev int64) (bool, error) {
	lease := c.Lease()
	rctx, cancel := c.req(ctx)
	defer cancel()
	resp, err := c.etcd().Txn(rctx).If(
		clientv3.Compare(clientv3.CreateRevision(c.keys.Leader()), "=", createRev),
	).Then(
		clientv3.OpPut(c.keys.Leader(), mustJSON(l), clientv3.WithLease(lease)),
		clientv3.OpPut(c.keys.Optime(), keyspace.EncodeUint(l.LSN)),
	).Commit()
	if err != nil {
		return false, fmt.Errorf("update leader: %w", err)
	}
	return resp.Succeeded, nil
}

// ReleaseLeader deletes the leader key if we still hold it (create revision
// createRev), together with extra ops in one transaction.
func (c *Client) ReleaseLeader(ctx context.Context, createRev int64, extra ...Op) (bool, error) {
	rctx, cancel := c.req(ctx)
	defer cancel()
	ops := append([]clientv3.Op{clientv3.OpDelete(c.keys.Leader())}, extra...)
	resp, err := c.etcd().Txn(rctx).If(
		clientv3.Compare(clientv3.CreateRevision(c.keys.Leader()), "=", createRev),
	).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("release leader: %w", err)
	}
	return resp.Succeeded, nil
}

// PutIfLeader writes key=value (no lease) only while we hold the leader key.
func (c *Client) PutIfLeader(ctx context.Context, createRev int64, key string, value any) (bool, error) {
	rctx, cancel := c.req(ctx)
	defer cancel()
	resp, err := c.etcd().Txn(rctx).If(
		clientv3.Compare(clientv3.CreateRevision(c.keys.Leader()), "=", createRev),
	).Then(clientv3.OpPut(key, mustJSON(value))).Commit()
	if err != nil {
		return false, fmt.Errorf("put %s: %w", key, err)
	}
	return resp.Succeeded, nil
}

// Op is one etcd operation to join a leader transaction.
type Op = clientv3.Op

// OpPutJSON returns a put of value marshalled as JSON (for ClaimLeader/ReleaseLeader extras).
func OpPutJSON(key string, value any) Op { return clientv3.OpPut(key, mustJSON(value)) }

// OpDelete returns a delete of key.
func OpDelete(key string) Op { return clientv3.OpDelete(key) }

// OpAbandonHistory returns the ops (none if the record cannot be read)
// that mark history/{term} as abandoned with reason.
func (c *Client) OpAbandonHistory(ctx context.Context, term uint64, reason string) []Op {
	rctx, cancel := c.req(ctx)
	defer cancel()
	resp, err := c.etcd().Get(rctx, c.keys.History(term))
	if err != nil || len(resp.Kvs) == 0 {
		return nil
	}
	h, err := keyspace.DecodeHistory(c.keys.History(term), resp.Kvs[0].Value)
	if err != nil {
		c.log.Warn("cannot mark the history record abandoned", zap.Error(err))
		return nil
	}
	h.Abandoned = reason
	return []Op{OpPutJSON(c.keys.History(term), h)}
}

// DeleteSwitchover removes the switchover record if it is still at rev.
func (c *Client) DeleteSwitchover(ctx context.Context, rev int64) error {
	rctx, cancel := c.req(ctx)
	defer cancel()
	_, err := c.etcd().Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(c.keys.Switchover()), "=", rev)).
		Then(clientv3.OpDelete(c.keys.Switchover())).Commit()
	if err != nil {
		return fmt.Errorf("delete switchover: %w", err)
	}
	return nil
}

// TryLock takes the named cluster mutex (BootstrapLock or FailoverLock) on
// our lock session without waiting; ErrLocked if another agent holds it. The
// returned unlock is bounded by the request timeout and never fails the
// caller (the lock key is on the session's lease and goes with it anyway).
func (c *Client) TryLock(ctx context.Context, pfx string) (func(), error) {
	s, err := c.lockSession(ctx)
	if err != nil {
		return nil, err
	}
	m := concurrency.NewMutex(s, pfx)
	rctx, cancel := c.req(ctx)
	defer cancel()
	if err := m.TryLock(rctx); err != nil {
		return nil, err
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.RequestTimeout)
		defer cancel()
		if err := m.Unlock(uctx); err != nil {
			c.log.Warn("unlock failed; the lock goes with our lease", zap.String("lock", pfx), zap.Error(err))
		}
	}, nil
}

// Event is one change under the cluster prefix.
type Event struct {
	Key    string // relative to the cluster prefix, e.g. "leader", "members/node2"
	Create bool   // the key was created (not just updated)
	Delete bool   // the key was deleted or expired with its lease
}

// Watch signals on the returned channel (capacity 1, coalescing) after every
// change under the cluster prefix for which relevant returns true, until ctx
// ends. It re-establishes the watch after errors, on the client in use then
// (the authenticated one once a late login replaced the placeholder).
func (c *Client) Watch(ctx context.Context, relevant func(Event) bool) <-chan struct{} {
	pfx := c.keys.Prefix()
	return WatchPrefix(ctx, c.etcd, pfx, 0, func(ev *clientv3.Event) bool {
		return relevant(Event{Key: strings.TrimPrefix(string(ev.Kv.Key), pfx), Create: ev.IsCreate(), Delete: ev.Type == clientv3.EventTypeDelete})
	})
}

// WatchPrefix signals on the returned channel (capacity 1, coalescing; closed
// when ctx ends) after every event under prefix for which relevant returns
// true (nil: every event; relevant sees every event), from revision rev on (0: from now). A broken
// watch is re-established after 200 ms from the then current revision, on
// the client cli returns at that moment: callers re-read on a signal, so a
// gap costs latency, not correctness. The one prefix watch of the agent
// (Client.Watch) and of the admin side (admin.Wait).
func WatchPrefix(ctx context.Context, cli func() *clientv3.Client, prefix string, rev int64, relevant func(*clientv3.Event) bool) <-chan struct{} {
	out := make(chan struct{}, 1)
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			opts := []clientv3.OpOption{clientv3.WithPrefix()}
			if rev > 0 {
				opts = append(opts, clientv3.WithRev(rev))
				rev = 0
			}
			for resp := range cli().Watch(clientv3.WithRequireLeader(ctx), prefix, opts...) {
				if resp.Err() != nil {
					break
				}
				hit := relevant == nil
				for _, ev := range resp.Events { // relevant sees every event
					if relevant != nil && relevant(ev) {
						hit = true
					}
				}
				if !hit {
					continue
				}
				select {
				case out <- struct{}{}:
				default:
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return out
}

// Close revokes both leases (deleting the member key, our locks and, if we
// still hold it, the leader key) and closes the client. Bounded by ctx.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	s, lease := c.sess, c.lease
	c.sess, c.lease = nil, clientv3.NoLease
	c.mu.Unlock()
	var errs []error
	revoke := func(id clientv3.LeaseID) {
		rctx, cancel := c.req(ctx)
		defer cancel()
		if _, err := c.etcd().Revoke(rctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	if lease != clientv3.NoLease {
		revoke(lease)
	}
	if s != nil {
		s.Orphan()
		revoke(s.Lease())
	}
	c.validUntil.Store(0)
	return errors.Join(append(errs, c.etcd().Close())...)
}

// ReadPasswordFile reads an etcd password file, trimming whitespace.
func ReadPasswordFile(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("etcd.password_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Claim creates key with value on our lock session's lease if it does not exist
// (a create-if-absent transaction) and reports whether we created it. While
// we hold it, no other agent can; if our agent dies the key goes with the
// lease, so another agent may claim it. Used for backup occurrences.
func (c *Client) Claim(ctx context.Context, key, value string) (bool, error) {
	s, err := c.lockSession(ctx)
	if err != nil {
		return false, err
	}
	rctx, cancel := c.req(ctx)
	defer cancel()
	resp, err := c.etcd().Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, value, clientv3.WithLease(s.Lease()))).
		Commit()
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", key, err)
	}
	return resp.Succeeded, nil
}

// CompleteClaim replaces a claimed key with value on a fresh lease of ttl
// (rounded up to whole seconds), so the claim outlives our session (no
// other agent reruns the occurrence) but not forever.
func (c *Client) CompleteClaim(ctx context.Context, key, value string, ttl time.Duration) error {
	rctx, cancel := c.req(ctx)
	defer cancel()
	g, err := c.etcd().Grant(rctx, int64((ttl+time.Second-1)/time.Second))
	if err != nil {
		return fmt.Errorf("complete claim %s: %w", key, err)
	}
	if _, err := c.etcd().Put(rctx, key, value, clientv3.WithLease(g.ID)); err != nil {
		return fmt.Errorf("complete claim %s: %w", key, err)
	}
	return nil
}

// BackupRequests returns the cluster's pending on-demand backup requests
// (backup/requests/{id}), id → value.
func (c *Client) BackupRequests(ctx context.Context) (map[string]string, error) {
	rctx, cancel := c.req(ctx)
	defer cancel()
	p := c.keys.BackupRequests()
	resp, err := c.etcd().Get(rctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read backup requests: %w", err)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), p)] = string(kv.Value)
	}
	return out, nil
}

// DeleteBackupRequest removes the answered request id.
func (c *Client) DeleteBackupRequest(ctx context.Context, id string) error {
	rctx, cancel := c.req(ctx)
	defer cancel()
	if _, err := c.etcd().Delete(rctx, c.keys.BackupRequest(id)); err != nil {
		return fmt.Errorf("delete backup request %s: %w", id, err)
	}
	return nil
}
