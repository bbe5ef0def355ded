package localcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dbpilot/dbpilot/agent/clusterview"
	"github.com/dbpilot/dbpilot/agent/dcs"
)

// Status is the cluster as etcd shows it (see clusterview.Status).
type Status = clusterview.Status

// Status reads the cluster's keys from etcd.
func (c *Cluster) Status(ctx context.Context) (Status, error) {
	return clusterview.ReadStatus(ctx, c.Cli, c.Keys)
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

// RequestSwitchover asks for a planned switchover (to may be "").
func (c *Cluster) RequestSwitchover(ctx context.Context, from, to string) error {
	return clusterview.RequestSwitchover(ctx, c.Cli, c.Keys, from, to)
}

// PutSpec writes the spec key the way the control plane does
// (docs/keyspace.md, "spec"): agents take synchronous_mode and nodes from
// it at run time.
func (c *Cluster) PutSpec(ctx context.Context, s dcs.Spec) error {
	s.UpdatedMS = time.Now().UnixMilli()
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = c.Cli.Put(ctx, c.Keys.Spec(), string(b))
	return err
}
