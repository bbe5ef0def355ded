package agent

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/dcs"
	"github.com/dbpilot/dbpilot/agent/httpapi"
	"github.com/dbpilot/dbpilot/proto"
)

// Failsafe mode keeps a primary writable through an outage of etcd as a
// whole (down, or quorum lost) without ever allowing two writable primaries.
// The argument is in docs/architecture.md, "Failsafe mode"; in short:
//
//   - A member answers a primary's check with a promise only when it cannot
//     reach etcd itself, still knows that primary at that term, and is not
//     campaigning. The promise keeps it out of every election for one TTL
//     from the moment it answered.
//   - The primary counts a round only when every member of the last known
//     membership promised; it may then stay writable until the round's send
//     time + TTL − margin, which ends before any of those promises does.
//   - A new primary needs an election, which no promised member enters, and
//     any member that reaches etcd refuses, so a partitioned primary gets no
//     confirmation and fences as before.

// failsafeProbeTimeout bounds a member's own etcd check when asked.
const failsafeProbeTimeout = 500 * time.Millisecond

// failsafeState is both sides of failsafe mode. Guarded by mu.
type failsafeState struct {
	mu sync.Mutex
	// Known from the last successful etcd read.
	members map[string]string // other members: node → API URL
	leader  string
	term    uint64
	// Primary side: writable bound from the last round every member
	// confirmed (zero: none), and whether we are currently relying on it.
	until   time.Time
	relying bool
	// refusing: the last round was refused (logged once per episode).
	refusing bool
	// Member side: the promise in force.
	promisedTo    string
	promisedTerm  uint64
	promisedUntil time.Time
}

// noteView records the membership, leader and term of a good snapshot.
func (a *Agent) noteFailsafeView(snap dcs.Snapshot) {
	members := make(map[string]string, len(snap.Members))
	for name, m := range snap.Members {
		if name != a.cfg.Node.Name {
			members[name] = m.APIURL
		}
	}
	leader := ""
	if snap.Leader != nil {
		leader = snap.Leader.Node
	}
	a.fs.mu.Lock()
	defer a.fs.mu.Unlock()
	a.fs.members, a.fs.leader, a.fs.term = members, leader, snap.Term
	if leader != "" && snap.Term > a.fs.promisedTerm {
		a.fs.promisedTo = ""
	}
}

// failsafeLeft is how much longer the last fully confirmed round lets this
// node stay writable (≤ 0: none).
func (a *Agent) failsafeLeft(now time.Time) time.Duration {
	if !a.cfg.Failsafe() {
		return 0
	}
	a.fs.mu.Lock()
	defer a.fs.mu.Unlock()
	if a.fs.until.IsZero() {
		return 0
	}
	return a.fs.until.Sub(now)
}

// promise returns the primary we promised to stay out of elections for
// and until when ("" when no promise is in force).
func (a *Agent) promise(now time.Time) (string, time.Time) {
	a.fs.mu.Lock()
	defer a.fs.mu.Unlock()
	if a.fs.promisedTo == "" || !now.Before(a.fs.promisedUntil) {
		return "", time.Time{}
	}
	return a.fs.promisedTo, a.fs.promisedUntil
}

// promised returns the primary we promised to stay out of elections for
// ("" when no promise is in force).
func (a *Agent) promised(now time.Time) string {
	to, _ := a.promise(now)
	return to
}

// writableLeft is how long this node may provably stay writable: the HA
// lease while it holds the leader key, or a failsafe confirmation while it is
// the primary of its term. ≤ 0: not at all.
func (a *Agent) writableLeft(now time.Time) time.Duration {
	left := time.Duration(0)
	if a.isLeader.Load() {
		left = a.dcs.LeaseLeft(now)
	}
	if a.ownTerm.Load() != 0 {
		left = max(left, a.failsafeLeft(now))
	}
	return left
}

// failsafeLoop runs the primary's side: while this node is the writable
// primary of its term and its lease renewals are late (etcd unreachable or
// slow), it asks every member of the last known membership for a promise,
// twice per health interval, and records the bound of each round that
// every member confirmed. It runs apart from the HA loop, whose etcd calls
// may each take a full request timeout during an outage.
//
// It does not poll while nothing is late: its timer fires when the lease
// left would fall below the "late" threshold, and wakeWatchers wakes it
// after every renewal and cycle; while late it runs a round every period.
func (a *Agent) failsafeLoop(ctx context.Context) {
	if !a.cfg.Failsafe() {
		return
	}
	period := max(a.cfg.Health.Interval/2, 100*time.Millisecond)
	lateBelow := a.cfg.TTL - a.cfg.Health.Interval - a.cfg.Health.Interval/2
	t := time.NewTimer(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.failsafeWake:
		}
		term := a.ownTerm.Load()
		now := time.Now()
		left := a.dcs.LeaseLeft(now)
		late := !a.isLeader.Load() || left < lateBelow
		if term == 0 || a.fenced.Load() {
			a.clearFailsafe()
			t.Reset(a.cfg.TTL) // a promotion wakes it (wakeWatchers)
			continue
		}
		if !late {
			t.Reset(min(max(left-lateBelow, fencerMinWait), a.cfg.TTL))
			// The bound, if any, stays until it runs out: the promises it
			// rests on hold until then, and the lease just proven may be a
			// new one that does not carry our key yet (Reclaim needs it).
			a.fs.mu.Lock()
			if a.fs.relying {
				a.log.Info("failsafe: etcd answers again; leadership proven by the lease")
				a.publish(proto.TypeFailsafe, proto.Failsafe{State: proto.FailsafeEnded})
			}
			a.fs.relying, a.fs.refusing = false, false
			a.fs.mu.Unlock()
			continue
		}
		a.failsafeRound(ctx, term)
		t.Reset(period)
	}
}

// clearFailsafe drops the primary-side bound (fenced, or no longer a
// primary).
func (a *Agent) clearFailsafe() {
	a.fs.mu.Lock()
	a.fs.until, a.fs.relying, a.fs.refusing = time.Time{}, false, false
	a.fs.mu.Unlock()
}

// failsafeRound asks every known member once and extends the bound if all
// of them promised.
func (a *Agent) failsafeRound(ctx context.Context, term uint64) {
	a.fs.mu.Lock()
	members := maps.Clone(a.fs.members)
	a.fs.mu.Unlock()
	req := httpapi.FailsafeRequest{Cluster: clusterName(a.cfg), Leader: a.cfg.Node.Name, Term: term, SentMS: time.Now().UnixMilli()}
	body, _ := json.Marshal(req)
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, failsafeProbeTimeout+500*time.Millisecond)
	defer cancel()
	type result struct {
		node string
		ans  httpapi.FailsafeAnswer
		err  error
	}
	results := make(chan result, len(members))
	for node, url := range members {
		go func() {
			ans, err := a.askFailsafe(rctx, url, body)
			results <- result{node, ans, err}
		}()
	}
	var refused []string
	for range members {
		r := <-results
		switch {
		case r.err != nil:
			refused = append(refused, r.node+": "+r.err.Error())
		case !r.ans.Ack:
			refused = append(refused, r.node+": "+r.ans.Reason)
		case time.Duration(r.ans.PromiseMS)*time.Millisecond < a.cfg.TTL:
			refused = append(refused, fmt.Sprintf("%s: promise of %d ms is shorter than the TTL", r.node, r.ans.PromiseMS))
		}
	}
	slices.Sort(refused)
	a.fs.mu.Lock()
	defer a.fs.mu.Unlock()
	if len(refused) > 0 {
		if !a.fs.refusing {
			a.fs.refusing = true
			a.log.Warn("failsafe: not every member confirms this primary; it fences when its proof runs out",
				zap.Uint64("term", term), zap.Strings("refused", refused))
		}
		a.fs.relying = false
		return
	}
	a.fs.refusing = false
	until := sent.Add(a.cfg.TTL)
	if until.After(a.fs.until) {
		a.fs.until = until
		signal(a.fencerWake) // a new deadline for the guard
	}
	if !a.fs.relying {
		a.log.Warn("failsafe: etcd unreachable, every member confirms this primary: staying writable",
			zap.Uint64("term", term), zap.Int("members", len(members)))
		a.publish(proto.TypeFailsafe, proto.Failsafe{State: proto.FailsafeActive, Members: len(members)})
	}
	a.fs.relying = true
}

// askFailsafe posts one failsafe request to a member's API.
func (a *Agent) askFailsafe(ctx context.Context, url string, body []byte) (httpapi.FailsafeAnswer, error) {
	var ans httpapi.FailsafeAnswer
	if url == "" {
		return ans, fmt.Errorf("member publishes no API URL (http.listen unset)")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/failsafe", bytes.NewReader(body))
	if err != nil {
		return ans, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(httpapi.FailsafeAuthHeader, a.failsafeMAC(body))
	resp, err := a.httpc.Do(req)
	if err != nil {
		return ans, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return ans, err
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return ans, fmt.Errorf("answer %d: %w", resp.StatusCode, err)
	}
	return ans, nil
}

func (a *Agent) failsafeMAC(body []byte) string {
	m := hmac.New(sha256.New, []byte(a.failsafeKey))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// ServeHTTP answers a primary's failsafe request (the member side).
func (h failsafeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a := h.a
	body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if !hmac.Equal([]byte(r.Header.Get(httpapi.FailsafeAuthHeader)), []byte(a.failsafeMAC(body))) {
		a.log.Warn("failsafe: request with a bad signature refused", zap.String("remote", r.RemoteAddr))
		writeAnswer(w, http.StatusForbidden, httpapi.FailsafeAnswer{Node: a.cfg.Node.Name, Reason: "bad signature"})
		return
	}
	var req httpapi.FailsafeRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeAnswer(w, http.StatusBadRequest, httpapi.FailsafeAnswer{Node: a.cfg.Node.Name, Reason: "malformed request"})
		return
	}
	ans := a.answerFailsafe(r.Context(), req)
	writeAnswer(w, http.StatusOK, ans)
}

type failsafeHandler struct{ a *Agent }

func writeAnswer(w http.ResponseWriter, code int, ans httpapi.FailsafeAnswer) {
	b, _ := json.Marshal(ans)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// answerFailsafe decides whether to promise. It holds electMu, so it never
// overlaps a campaign: a member either is campaigning (and refuses) or has
// promised (and its campaign's re-check under the failover lock sees it).
func (a *Agent) answerFailsafe(ctx context.Context, req httpapi.FailsafeRequest) httpapi.FailsafeAnswer {
	ans := httpapi.FailsafeAnswer{Node: a.cfg.Node.Name}
	refuse := func(why string) httpapi.FailsafeAnswer {
		ans.Reason = why
		a.log.Info("failsafe: request refused", zap.String("primary", req.Leader), zap.Uint64("term", req.Term), zap.String("reason", why))
		return ans
	}
	if !a.cfg.Failsafe() {
		return refuse("failsafe_mode is off on this member")
	}
	if req.Cluster != clusterName(a.cfg) {
		return refuse("not a member of cluster " + req.Cluster)
	}
	if !a.electMu.TryLock() {
		return refuse("election in progress on this member")
	}
	defer a.electMu.Unlock()
	if a.isLeader.Load() || a.ownTerm.Load() != 0 {
		return refuse("this member is a primary itself")
	}
	a.fs.mu.Lock()
	leader, term := a.fs.leader, a.fs.term
	a.fs.mu.Unlock()
	switch {
	case req.Term < term:
		return refuse(fmt.Sprintf("term %d is older than the term %d known here", req.Term, term))
	case req.Term > term:
		return refuse(fmt.Sprintf("term %d is unknown here (term %d known)", req.Term, term))
	case leader != "" && leader != req.Leader:
		return refuse("the leader known here is " + leader)
	}
	if err := a.dcs.Probe(ctx, failsafeProbeTimeout); err == nil {
		return refuse("etcd is reachable from this member: not an outage")
	}
	now := time.Now()
	a.fs.mu.Lock()
	if a.fs.promisedTo != req.Leader {
		a.log.Warn("failsafe: etcd unreachable here too; promising the primary to stay out of elections",
			zap.String("primary", req.Leader), zap.Uint64("term", req.Term), zap.Duration("for", a.cfg.TTL))
	}
	a.fs.promisedTo, a.fs.promisedTerm, a.fs.promisedUntil = req.Leader, req.Term, now.Add(a.cfg.TTL)
	a.fs.mu.Unlock()
	ans.Ack, ans.PromiseMS = true, a.cfg.TTL.Milliseconds()
	return ans
}
