package localcluster

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/dbpilot/dbpilot/internal/embedetcd"
	"github.com/dbpilot/dbpilot/internal/localhost"
)

// EtcdMember is one member of the local cluster's embedded etcd. Its ports
// and data dir are fixed for the life of the Cluster, so StopEtcd and
// StartEtcd take it down and bring it back as itself.
type EtcdMember struct {
	Name      string
	Dir       string
	ClientURL string

	m  embedetcd.Member
	mu sync.Mutex
	e  *embed.Etcd
}

// Running reports whether the member's server is up.
func (m *EtcdMember) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.e != nil
}

func (m *EtcdMember) server() *embed.Etcd {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.e
}

// etcdReady bounds how long a (re)started member may take to serve.
const etcdReady = 30 * time.Second

// startEtcd creates and starts the etcd members: a single one named
// "dbpilot-local" in Dir/etcd (the default, and the layout of existing
// dirs), or Options.EtcdMembers ones named etcd1..etcdN in Dir/etcdN. A
// multi-member cluster needs a fresh Dir: ports are chosen anew at every
// Start while an existing member keeps its old peer URLs.
func (c *Cluster) startEtcd() error {
	n := max(c.Opts.EtcdMembers, 1)
	for i := 0; i < n; i++ {
		cp, err := localhost.FreePort("")
		if err != nil {
			return err
		}
		pp, err := localhost.FreePort("")
		if err != nil {
			return err
		}
		name, dir := "dbpilot-local", filepath.Join(c.Opts.Dir, "etcd")
		if n > 1 {
			name, dir = fmt.Sprintf("etcd%d", i+1), filepath.Join(c.Opts.Dir, fmt.Sprintf("etcd%d", i+1))
		}
		m := &EtcdMember{Name: name, Dir: dir}
		m.m = embedetcd.Member{Name: name, Dir: dir, ClientPort: cp, PeerPort: pp, Token: "dbpilot-localcluster", Log: c.Opts.Log}
		m.ClientURL = m.m.ClientURL()
		c.EtcdMembers = append(c.EtcdMembers, m)
	}
	var initial []string
	for _, m := range c.EtcdMembers {
		initial = append(initial, m.Name+"="+m.m.PeerURL())
	}
	for _, m := range c.EtcdMembers {
		m.m.InitialCluster = strings.Join(initial, ",")
	}
	if err := c.StartEtcd(); err != nil {
		return err
	}
	c.Etcd, c.URL = c.EtcdMembers[0].server(), c.EtcdMembers[0].ClientURL
	return nil
}

// EtcdEndpoints returns every member's client URL.
func (c *Cluster) EtcdEndpoints() []string {
	out := make([]string, len(c.EtcdMembers))
	for i, m := range c.EtcdMembers {
		out[i] = m.ClientURL
	}
	return out
}

func (c *Cluster) etcdIndexes(idx []int) ([]*EtcdMember, error) {
	if len(idx) == 0 {
		return c.EtcdMembers, nil
	}
	var out []*EtcdMember
	for _, i := range idx {
		if i < 0 || i >= len(c.EtcdMembers) {
			return nil, fmt.Errorf("no etcd member %d (have %d)", i, len(c.EtcdMembers))
		}
		out = append(out, c.EtcdMembers[i])
	}
	return out, nil
}

// StopEtcd stops the etcd members with the given indexes (none = all) at
// once, as a crash does, keeping their data dirs; members already stopped
// are skipped. The agents' connections to them are cut first and the
// servers stop without a leadership transfer, so the members are gone at
// once rather than after etcd's graceful shutdown (seconds while clients
// hold watch streams).
func (c *Cluster) StopEtcd(idx ...int) error {
	if len(idx) == 0 {
		for i := range c.EtcdMembers {
			idx = append(idx, i)
		}
	}
	if _, err := c.etcdIndexes(idx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, i := range idx {
		m := c.EtcdMembers[i]
		m.mu.Lock()
		e := m.e
		m.e = nil
		m.mu.Unlock()
		if e == nil {
			continue
		}
		for _, n := range c.Nodes {
			n.Proxy.CutTarget(i, true)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.Server.HardStop()
			e.Close()
		}()
	}
	wg.Wait()
	return nil
}

// StartEtcd starts the etcd members with the given indexes (none = all) at
// once and waits until each serves. A member serves only when a quorum of
// the cluster runs: start enough members together. Members already running
// are skipped.
func (c *Cluster) StartEtcd(idx ...int) error {
	ms, err := c.etcdIndexes(idx)
	if err != nil {
		return err
	}
	var started []*embed.Etcd
	defer func() {
		// Let the agents reach the members again (a member that did not
		// start refuses connections by itself).
		for _, n := range c.Nodes {
			for i, m := range c.EtcdMembers {
				if slices.Contains(ms, m) {
					n.Proxy.CutTarget(i, false)
				}
			}
		}
	}()
	for _, m := range ms {
		m.mu.Lock()
		if m.e != nil {
			m.mu.Unlock()
			continue
		}
		e, err := embedetcd.StartMember(m.m)
		if err == nil {
			m.e = e
		}
		m.mu.Unlock()
		if err != nil {
			return err
		}
		started = append(started, e)
	}
	deadline := time.After(etcdReady)
	for i, e := range started {
		select {
		case <-e.Server.ReadyNotify():
		case <-e.Err():
			return fmt.Errorf("etcd member %d stopped while starting", i)
		case <-deadline:
			return errors.New("etcd members not ready after " + etcdReady.String() + " (is a quorum running?)")
		}
	}
	return nil
}
