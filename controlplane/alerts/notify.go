package alerts

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/proto"
)

// Webhook headers. The signature is "sha256=" and the hex HMAC-SHA256,
// keyed with the channel's secret, of the timestamp header's value, a
// '.', and the body: a receiver recomputes it, compares in constant time
// and refuses a timestamp too far from its clock (a replayed request).
const (
	HeaderSignature = "X-Dbpilot-Signature"
	HeaderTimestamp = "X-Dbpilot-Timestamp" // Unix seconds of the attempt
	HeaderDelivery  = "X-Dbpilot-Delivery"  // the notification (delivery) id
)

// Sign returns the X-Dbpilot-Signature value for body sent at timestamp
// (the X-Dbpilot-Timestamp value) with secret.
func Sign(secret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a webhook request's signature and timestamp (at most
// tolerance from now): what a receiver does. Errors say what is wrong.
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	ts := h.Get(HeaderTimestamp)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%s: not Unix seconds (%q)", HeaderTimestamp, ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%s: %s from now, more than %s (a replay?)", HeaderTimestamp, d.Round(time.Second), tolerance)
	}
	if !hmac.Equal([]byte(h.Get(HeaderSignature)), []byte(Sign(secret, ts, body))) {
		return fmt.Errorf("%s: does not match the body and timestamp", HeaderSignature)
	}
	return nil
}

// BindingFunc invokes a Dapr output binding (the server's sidecar,
// go-sdk client.InvokeOutputBinding) with data and metadata.
type BindingFunc func(ctx context.Context, binding, operation string, data []byte, metadata map[string]string) error

// NotifierConfig configures a Notifier.
type NotifierConfig struct {
	// Workers deliver in parallel; default 4.
	Workers int
	// Queue is how many deliveries may wait; default 1024. A delivery
	// that finds the queue full is recorded failed at once (evaluation is
	// never blocked).
	Queue int
	// Backoff returns the retry policy of one delivery; default
	// exponential from 1 s, at most 1 min apart, given up after 15 min.
	Backoff func() backoff.BackOff
	// AttemptTimeout bounds one attempt; default 10s.
	AttemptTimeout time.Duration
	// Binding invokes Dapr bindings; nil: dapr_binding channels fail.
	Binding BindingFunc
	// Client sends webhooks; default a client without redirects whose
	// dialer refuses the addresses AllowPrivate does not allow.
	Client *http.Client
	// AllowPrivate lets webhooks reach loopback and private (RFC 1918,
	// RFC 4193) addresses: for a development server or a receiver inside
	// the operator's own network. Link-local (cloud metadata services),
	// unspecified and multicast addresses are always refused.
	AllowPrivate bool
}

// errRefusedAddress: a webhook resolved to an address it may not reach.
var errRefusedAddress = errors.New("address refused")

// checkAddress refuses a webhook destination the notifier must not
// reach (see NotifierConfig.AllowPrivate); it runs on the resolved
// address at connect time, so a name that resolves differently later
// (DNS rebinding) is checked too.
func checkAddress(allowPrivate bool) func(network, address string, _ syscall.RawConn) error {
	return func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return fmt.Errorf("webhook address %s: %w", address, err)
		}
		ip = ip.Unmap()
		switch {
		case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast():
			return fmt.Errorf("webhook address %s: %w: link-local, unspecified and multicast addresses never", ip, errRefusedAddress)
		case !allowPrivate && (ip.IsLoopback() || ip.IsPrivate()):
			return fmt.Errorf("webhook address %s: %w: loopback and private addresses only with the server config alerts.allow_private_webhooks", ip, errRefusedAddress)
		}
		return nil
	}
}

type job struct {
	ch   store.Channel
	id   string
	body []byte
}

// Notifier sends alert notifications to a namespace's channels through
// a queue and a pool of workers, retrying each delivery with exponential
// backoff and keeping the delivery log (store deliveries) current.
type Notifier struct {
	st    *store.Store
	cfg   NotifierConfig
	log   *zap.Logger
	queue chan job
	wg    sync.WaitGroup
}

// NewNotifier returns a notifier; Start its workers.
func NewNotifier(st *store.Store, cfg NotifierConfig, log *zap.Logger) *Notifier {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	if cfg.Backoff == nil {
		cfg.Backoff = func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = time.Second, time.Minute, 15*time.Minute
			return b
		}
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Second
	}
	if cfg.Client == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, Control: checkAddress(cfg.AllowPrivate)}
		cfg.Client = &http.Client{
			Transport:     &http.Transport{DialContext: d.DialContext, TLSHandshakeTimeout: 10 * time.Second, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &Notifier{st: st, cfg: cfg, log: log.Named("notify"), queue: make(chan job, cfg.Queue)}
}

// Start runs the workers until ctx ends; Wait waits for them.
func (n *Notifier) Start(ctx context.Context) {
	for range n.cfg.Workers {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-n.queue:
					n.deliver(ctx, j)
				}
			}
		}()
	}
}

// Wait waits for the workers.
func (n *Notifier) Wait() { n.wg.Wait() }

// Notify queues note for every channel of namespace ns, one delivery
// each (its id is the notification's id). It does not wait for any
// delivery.
func (n *Notifier) Notify(ctx context.Context, ns string, note proto.AlertNotification) {
	chs, err := n.st.ListChannels(ctx, ns)
	if err != nil {
		n.log.Warn("list notification channels", zap.String("namespace", ns), zap.Error(err))
		return
	}
	for _, ch := range chs {
		note.ID = "dl-" + randHex(8)
		body, _ := json.Marshal(note)
		now := time.Now().UTC()
		d := store.Delivery{ID: note.ID, Namespace: ns, Channel: ch.Name, AlertID: note.Alert.ID, Transition: note.Transition,
			Status: proto.DeliveryPending, CreatedAt: now, UpdatedAt: now}
		if err := n.st.CreateDelivery(ctx, d); err != nil {
			n.log.Warn("record delivery", zap.String("channel", ch.Name), zap.Error(err))
			continue
		}
		select {
		case n.queue <- job{ch: ch, id: note.ID, body: body}:
		default:
			n.log.Error("notification queue full: delivery dropped", zap.String("namespace", ns), zap.String("channel", ch.Name), zap.String("delivery", note.ID))
			_ = n.st.UpdateDelivery(ctx, note.ID, proto.DeliveryFailed, 0, "notification queue full", now)
		}
	}
}

// permanent is a refusal not worth a retry.
func permanent(format string, args ...any) error {
	return backoff.Permanent(fmt.Errorf(format, args...))
}

func (n *Notifier) deliver(ctx context.Context, j job) {
	log := n.log.With(zap.String("namespace", j.ch.Namespace), zap.String("channel", j.ch.Name), zap.String("delivery", j.id))
	attempts := 0
	op := func() error {
		attempts++
		actx, cancel := context.WithTimeout(ctx, n.cfg.AttemptTimeout)
		defer cancel()
		err := n.send(actx, j)
		status, msg := proto.DeliveryPending, ""
		if err != nil {
			msg = proto.Truncate([]byte(err.Error()), 500)
		}
		if err == nil {
			status = proto.DeliveryDelivered
		}
		if uerr := n.st.UpdateDelivery(context.WithoutCancel(ctx), j.id, status, attempts, msg, time.Now()); uerr != nil {
			log.Warn("update delivery", zap.Error(uerr))
		}
		return err
	}
	err := backoff.RetryNotify(op, backoff.WithContext(n.cfg.Backoff(), ctx), func(err error, wait time.Duration) {
		log.Info("notification attempt failed; retrying", zap.Int("attempt", attempts), zap.Duration("in", wait), zap.Error(err))
	})
	if err != nil {
		var pe *backoff.PermanentError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		log.Warn("notification not delivered", zap.Int("attempts", attempts), zap.Error(err))
		_ = n.st.UpdateDelivery(context.WithoutCancel(ctx), j.id, proto.DeliveryFailed, attempts, proto.Truncate([]byte(err.Error()), 500), time.Now())
	}
}

func (n *Notifier) send(ctx context.Context, j job) error {
	switch j.ch.Kind {
	case proto.ChannelWebhook:
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.ch.URL, bytes.NewReader(j.body))
		if err != nil {
			return permanent("webhook %s: %v", j.ch.URL, err)
		}
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "dbpilot-server")
		req.Header.Set(HeaderTimestamp, ts)
		req.Header.Set(HeaderDelivery, j.id)
		if j.ch.Secret != "" {
			req.Header.Set(HeaderSignature, Sign(j.ch.Secret, ts, j.body))
		}
		resp, err := n.cfg.Client.Do(req)
		if errors.Is(err, errRefusedAddress) {
			return backoff.Permanent(fmt.Errorf("webhook: %w", err))
		}
		if err != nil {
			return fmt.Errorf("webhook: %w", err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return nil
		case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			return fmt.Errorf("webhook answered %s: %s", resp.Status, msg)
		}
		return permanent("webhook answered %s: %s", resp.Status, msg)
	case proto.ChannelDaprBinding:
		if n.cfg.Binding == nil {
			return permanent("dapr_binding %s: the server has no Dapr sidecar (bus.kind dapr)", j.ch.Binding)
		}
		op := j.ch.Operation
		if op == "" {
			op = "create"
		}
		if err := n.cfg.Binding(ctx, j.ch.Binding, op, j.body, map[string]string{"dbpilot-delivery": j.id}); err != nil {
			return fmt.Errorf("dapr binding %s (%s): %w", j.ch.Binding, op, err)
		}
		return nil
	}
	return permanent("channel kind %q: not webhook or dapr_binding", j.ch.Kind)
}
