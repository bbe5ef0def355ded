package localcluster

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Proxy is a TCP proxy between one agent and etcd: one listener per etcd
// member, each forwarding to its member. Cut simulates a network partition
// of that agent from the whole etcd cluster (existing connections to every
// member are closed, new ones refused) without touching the agent or
// PostgreSQL.
type Proxy struct {
	lns     []net.Listener
	targets []string

	mu        sync.Mutex
	cut       bool
	targetCut []bool
	conns     map[net.Conn]int // connection → target index
	wg        sync.WaitGroup
}

// NewProxy listens on one free 127.0.0.1 port per target (host:port) and
// forwards each to its target.
func NewProxy(targets ...string) (*Proxy, error) {
	if len(targets) == 0 {
		return nil, errors.New("proxy: no target")
	}
	p := &Proxy{targets: targets, targetCut: make([]bool, len(targets)), conns: map[net.Conn]int{}}
	for range targets {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range p.lns {
				l.Close()
			}
			return nil, err
		}
		p.lns = append(p.lns, ln)
	}
	for i := range p.lns {
		p.wg.Add(1)
		go p.serve(i)
	}
	return p, nil
}

// Addr is the first listener's address (host:port): the only one when the
// proxy has a single target.
func (p *Proxy) Addr() string { return p.lns[0].Addr().String() }

// Addrs are the listen addresses (host:port), in the order of the targets.
func (p *Proxy) Addrs() []string {
	out := make([]string, len(p.lns))
	for i, l := range p.lns {
		out[i] = l.Addr().String()
	}
	return out
}

// Cut partitions (true) or heals (false) the link to every target.
func (p *Proxy) Cut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

// CutTarget cuts (true) or heals (false) the link to target i only, as
// if that etcd member were gone: its connections are closed and new ones
// refused, the other targets are untouched. Cut overrides it.
func (p *Proxy) CutTarget(i int, cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.targetCut[i] = cut
	if cut {
		for c, t := range p.conns {
			if t == i {
				c.Close()
			}
		}
	}
}

// IsCut reports whether the link is cut.
func (p *Proxy) IsCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	for _, l := range p.lns {
		l.Close()
	}
	p.Cut(true)
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn, target int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut || p.targetCut[target] {
		return false
	}
	p.conns[c] = target
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) serve(i int) {
	defer p.wg.Done()
	for {
		in, err := p.lns[i].Accept()
		if err != nil {
			return
		}
		if !p.track(in, i) {
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.targets[i])
		if err != nil || !p.track(out, i) {
			p.untrack(in)
			if out != nil {
				out.Close()
			}
			continue
		}
		p.wg.Add(2)
		go func() { defer p.wg.Done(); _, _ = io.Copy(out, in); p.untrack(out) }()
		go func() { defer p.wg.Done(); _, _ = io.Copy(in, out); p.untrack(in) }()
	}
}
