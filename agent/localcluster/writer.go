package localcluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Ack is one acknowledged write.
type Ack struct {
	N    int64
	Node string
	At   time.Time
}

// Writer commits a numbered row every Interval through whichever node is the
// writable primary, and records every acknowledged number. It is the
// measuring stick of the failover tests and benchmark: RTO is the gap to the
// first acknowledgement on a new primary, lost writes are acknowledged
// numbers missing afterwards.
type Writer struct {
	c        *Cluster
	Interval time.Duration

	mu    sync.Mutex
	acks  []Ack
	conn  *pgx.Conn
	node  string
	next  int64
	fails int
}

// DSN returns a connection string for node i as the superuser.
func (c *Cluster) DSN(i int) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres sslmode=disable connect_timeout=2", c.Nodes[i].PGPort, c.Superuser, c.Password)
}

// Connect opens a connection to node i.
func (c *Cluster) Connect(ctx context.Context, i int) (*pgx.Conn, error) {
	return pgx.Connect(ctx, c.DSN(i))
}

// NewWriter prepares the writer's table on the current primary.
func (c *Cluster) NewWriter(ctx context.Context, interval time.Duration) (*Writer, error) {
	w := &Writer{c: c, Interval: interval, next: 1}
	if err := w.findPrimary(ctx); err != nil {
		return nil, err
	}
	_, err := w.conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS dbpilot_writer (n bigint PRIMARY KEY, node text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`)
	if err != nil {
		return nil, err
	}
	var maxN int64
	if err := w.conn.QueryRow(ctx, `SELECT coalesce(max(n),0) FROM dbpilot_writer`).Scan(&maxN); err != nil {
		return nil, err
	}
	w.next = maxN + 1
	return w, nil
}

// findPrimary connects to the node that is not in recovery.
func (w *Writer) findPrimary(ctx context.Context) error {
	if w.conn != nil {
		w.conn.Close(context.WithoutCancel(ctx))
		w.conn = nil
	}
	for i, n := range w.c.Nodes {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		conn, err := pgx.Connect(cctx, w.c.DSN(i))
		if err != nil {
			cancel()
			continue
		}
		var rec bool
		err = conn.QueryRow(cctx, `SELECT pg_is_in_recovery()`).Scan(&rec)
		cancel()
		if err == nil && !rec {
			w.conn, w.node = conn, n.Name
			return nil
		}
		conn.Close(context.WithoutCancel(ctx))
	}
	return errors.New("no writable primary")
}

// Run writes until ctx ends.
func (w *Writer) Run(ctx context.Context) {
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	defer func() {
		if w.conn != nil {
			w.conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		w.writeOne(ctx)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

func (w *Writer) writeOne(ctx context.Context) {
	if w.conn == nil {
		if err := w.findPrimary(ctx); err != nil {
			return
		}
	}
	n := w.next
	w.next++
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := w.conn.Exec(wctx, `INSERT INTO dbpilot_writer (n, node) VALUES ($1, $2)`, n, w.node)
	cancel()
	if err != nil {
		w.mu.Lock()
		w.fails++
		w.mu.Unlock()
		w.conn.Close(context.WithoutCancel(ctx))
		w.conn = nil
		return
	}
	w.mu.Lock()
	w.acks = append(w.acks, Ack{N: n, Node: w.node, At: time.Now()})
	w.mu.Unlock()
}

// Acks returns a copy of the acknowledged writes so far.
func (w *Writer) Acks() []Ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acks)
}

// FirstAckAfter returns the first acknowledgement after t on a node other
// than exclude ("" = any), and whether there is one.
func (w *Writer) FirstAckAfter(t time.Time, exclude string) (Ack, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Acks are appended in time order: skip the earlier ones at once.
	i, _ := slices.BinarySearchFunc(w.acks, t, func(a Ack, t time.Time) int {
		if a.At.After(t) {
			return 1
		}
		return -1
	})
	for _, a := range w.acks[i:] {
		if a.Node != exclude {
			return a, true
		}
	}
	return Ack{}, false
}

// LastAckBefore returns the last acknowledgement at or before t.
func (w *Writer) LastAckBefore(t time.Time) (Ack, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.acks) - 1; i >= 0; i-- {
		if !w.acks[i].At.After(t) {
			return w.acks[i], true
		}
	}
	return Ack{}, false
}

// Missing returns the acknowledged numbers absent from the table on node i.
func (c *Cluster) Missing(ctx context.Context, i int, acks []Ack) ([]int64, error) {
	conn, err := c.Connect(ctx, i)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT n FROM dbpilot_writer`)
	if err != nil {
		return nil, err
	}
	have := map[int64]bool{}
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		have[n] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var missing []int64
	for _, a := range acks {
		if !have[a.N] {
			missing = append(missing, a.N)
		}
	}
	return missing, nil
}

// Index returns the index of the node named name, or -1.
func (c *Cluster) Index(name string) int {
	return slices.IndexFunc(c.Nodes, func(n *Node) bool { return n.Name == name })
}

// WritableProbe polls every node every period and adds up the time during
// which two or more nodes were writable primaries at once (split brain).
type WritableProbe struct {
	c      *Cluster
	period time.Duration

	mu       sync.Mutex
	split    time.Duration
	maxWrite int
	samples  int
}

// NewWritableProbe returns a probe; start it with Run.
func (c *Cluster) NewWritableProbe(period time.Duration) *WritableProbe {
	return &WritableProbe{c: c, period: period}
}

// Run probes until ctx ends. A node counts as writable when a connection
// answers pg_is_in_recovery() = false.
func (p *WritableProbe) Run(ctx context.Context) {
	conns := make([]*pgx.Conn, len(p.c.Nodes))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	last := time.Now()
	for ctx.Err() == nil {
		writable := 0
		var wg sync.WaitGroup
		res := make([]bool, len(conns))
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				qctx, cancel := context.WithTimeout(ctx, p.period*4)
				defer cancel()
				if conns[i] == nil {
					c, err := pgx.Connect(qctx, p.c.DSN(i))
					if err != nil {
						return
					}
					conns[i] = c
				}
				var rec bool
				if err := conns[i].QueryRow(qctx, `SELECT pg_is_in_recovery()`).Scan(&rec); err != nil {
					conns[i].Close(context.Background())
					conns[i] = nil
					return
				}
				res[i] = !rec
			}()
		}
		wg.Wait()
		for _, r := range res {
			if r {
				writable++
			}
		}
		now := time.Now()
		p.mu.Lock()
		p.samples++
		p.maxWrite = max(p.maxWrite, writable)
		if writable >= 2 {
			p.split += now.Sub(last)
		}
		p.mu.Unlock()
		last = now
		select {
		case <-ctx.Done():
		case <-time.After(p.period):
		}
	}
}

// SplitBrain returns the total time with two or more writable nodes, and the
// most nodes ever writable at once.
func (p *WritableProbe) SplitBrain() (time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.split, p.maxWrite
}

// Samples is the number of probe rounds so far.
func (p *WritableProbe) Samples() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.samples
}
