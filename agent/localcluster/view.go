package localcluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dbpilot/dbpilot/agent/clusterview"
	"github.com/dbpilot/dbpilot/agent/config"
	"github.com/dbpilot/dbpilot/agent/dcs"
)

// Status is the cluster as etcd shows it (see clusterview.Status).
type Status = clusterview.Status

// Status reads the cluster's keys from etcd.
func (c *Cluster) Status(ctx context.Context) (Status, error) {
	return clusterview.ReadStatus(ctx, c.Admin, c.Keys)
}

// WaitFor polls Status every 100 ms until cond holds or ctx ends; it returns
// the last status seen and, on timeout, an error describing it.
func (c *Cluster) WaitFor(ctx context.Context, what string, cond func(Status) bool) (Status, error) {
	var last Status
	for {
		s, err := c.Status(ctx)
		if err == nil {
			last = s
			if cond(s) {
				return s, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("waiting for %s: %w; last status:\n%s", what, ctx.Err(), last.Table())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// RequestSwitchover asks for a planned switchover (to may be "") through
// the admin side's compare-and-swap. A record left behind (an expired
// hand-over, a request nobody served) is replaced, guarded by its
// revision; a hand-over younger than 2 × TTL is in progress and is not.
// Errors: a hand-over in progress, the record changed while we looked, or
// an etcd error.
func (c *Cluster) RequestSwitchover(ctx context.Context, from, to string) error {
	snap, err := c.Admin.Read(ctx, c.Keys)
	if err != nil {
		return err
	}
	var ok bool
	if sw := snap.Switchover; sw == nil {
		ok, err = c.Admin.RequestSwitchover(ctx, c.Keys, from, to, "requested")
	} else {
		ttl := cmp.Or(c.Opts.TTL, config.DefaultTTL)
		if sw.State == dcs.SwitchoverHandover && time.Since(time.UnixMilli(sw.HandoverMS)) < 2*ttl {
			return fmt.Errorf("switchover: a hand-over from %s to %s is in progress", sw.From, sw.To)
		}
		ok, err = c.Admin.ReplaceSwitchover(ctx, c.Keys, snap.SwitchRev, from, to, "requested")
	}
	if err == nil && !ok {
		err = errors.New("switchover: the switchover key changed while requesting; read the cluster and retry")
	}
	return err
}

// PutSpec writes the spec key the way the control plane does
// (docs/keyspace.md, "spec"): agents take synchronous_mode and nodes from
// it at run time. Errors: a spec that fails Spec.Validate, an etcd error.
func (c *Cluster) PutSpec(ctx context.Context, s dcs.Spec) error {
	return c.Admin.PutSpec(ctx, c.Keys, s)
}
