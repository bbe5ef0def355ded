package api

import (
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// Abuse bounds: how requests that fail authentication are limited and how
// large an audit entry can be.
const (
	// DefaultFailedAuthRate is how many requests failing authentication a
	// client IP may make per second, on average, before it gets 429.
	DefaultFailedAuthRate = 1.0
	// DefaultFailedAuthBurst is how many such requests a client IP may make
	// at once.
	DefaultFailedAuthBurst = 30
	// MaxAuditField is the most bytes an audit entry keeps of each text
	// field (actor, namespace, action, resource, result); longer values are
	// cut and end in "...".
	MaxAuditField = 256
	// maxClients bounds the failure limiter's memory: past it, new client
	// IPs share one limiter until idle entries are swept.
	maxClients = 1 << 16
	// clientIdle is how long an untouched client entry is kept.
	clientIdle = 10 * time.Minute
)

// clientLimiter limits, per client IP, the requests that fail
// authentication (golang.org/x/time/rate token buckets). Only failures
// take tokens: a valid token from the same address is never limited.
type clientLimiter struct {
	every rate.Limit
	burst int

	mu      sync.Mutex
	clients map[string]*clientEntry
	swept   time.Time
}

type clientEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

// newClientLimiter returns a limiter allowing perSecond failures per
// second and burst at once per client (<= 0: the defaults).
func newClientLimiter(perSecond float64, burst int) *clientLimiter {
	if perSecond <= 0 {
		perSecond = DefaultFailedAuthRate
	}
	if burst <= 0 {
		burst = DefaultFailedAuthBurst
	}
	return &clientLimiter{every: rate.Limit(perSecond), burst: burst, clients: map[string]*clientEntry{}, swept: time.Now()}
}

// entry returns ip's limiter, creating it; callers hold l.mu.
func (l *clientLimiter) entry(ip string, now time.Time) *rate.Limiter {
	if now.Sub(l.swept) > time.Minute {
		for k, e := range l.clients {
			if now.Sub(e.seen) > clientIdle {
				delete(l.clients, k)
			}
		}
		l.swept = now
	}
	e, ok := l.clients[ip]
	if !ok {
		if len(l.clients) >= maxClients {
			ip = "*"
			if e, ok = l.clients[ip]; ok {
				e.seen = now
				return e.lim
			}
		}
		e = &clientEntry{lim: rate.NewLimiter(l.every, l.burst)}
		l.clients[ip] = e
	}
	e.seen = now
	return e.lim
}

// fail takes one token for a failed request from ip. It reports false,
// with how long until the next failure would be allowed, when ip has none
// left: the request is answered 429 and not audited.
func (l *clientLimiter) fail(ip string) (bool, time.Duration) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.entry(ip, now)
	if lim.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - lim.TokensAt(now)
	return false, time.Duration(math.Ceil(missing / float64(l.every) * float64(time.Second)))
}

// clientIP is the request's peer address (X-Forwarded-For is not
// trusted: any client can set it).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// bounded returns s as an audit entry keeps it: control characters
// replaced by '?', invalid UTF-8 by U+FFFD, and at most MaxAuditField
// bytes (cut on a character boundary, ending in "...").
func bounded(s string) string {
	if len(s) > 2*MaxAuditField {
		s = s[:2*MaxAuditField] // a cut character becomes U+FFFD below
	}
	clean := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(clean) <= MaxAuditField {
		return clean
	}
	cut := MaxAuditField - len("...")
	for cut > 0 && !utf8.RuneStart(clean[cut]) {
		cut--
	}
	return clean[:cut] + "..."
}
