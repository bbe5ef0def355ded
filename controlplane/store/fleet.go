package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// GetAllocation returns the allocation of a cluster node.
func (s *Store) GetAllocation(ctx context.Context, clusterID, node string) (Allocation, error) {
	var a Allocation
	var res string
	var at int64
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT host_id, cluster_id, node, resources, config, created_at, state FROM allocations WHERE cluster_id = ? AND node = ?`),
		clusterID, node).Scan(&a.HostID, &a.ClusterID, &a.Node, &res, &a.Config, &at, &a.State)
	if err != nil {
		return Allocation{}, notFound("allocation "+clusterID+"/"+node, err)
	}
	_ = json.Unmarshal([]byte(res), &a.Resources)
	a.CreatedAt = fromMS(at)
	return a, nil
}

// MarkReleasing asks the host of a node's allocation to stop it. The row
// (and the capacity it books) stays until the host acknowledges with
// ReleaseOnHost, or Release removes it. ErrNotFound: no such allocation.
func (s *Store) MarkReleasing(ctx context.Context, clusterID, node string) error {
	res, err := s.exec(ctx, `UPDATE allocations SET state = ? WHERE cluster_id = ? AND node = ?`, AllocReleasing, clusterID, node)
	if err != nil {
		return fmt.Errorf("release %s/%s: %w", clusterID, node, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("release %s/%s: %w", clusterID, node, ErrNotFound)
	}
	return nil
}

// ReleaseOnHost deletes a releasing allocation of host hostID: the host
// stopped the node. ErrNotFound: no releasing allocation of that host.
func (s *Store) ReleaseOnHost(ctx context.Context, hostID, clusterID, node string) error {
	res, err := s.exec(ctx, `DELETE FROM allocations WHERE host_id = ? AND cluster_id = ? AND node = ? AND state = ?`, hostID, clusterID, node, AllocReleasing)
	if err != nil {
		return fmt.Errorf("release %s/%s on %s: %w", clusterID, node, hostID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("release %s/%s on %s: %w", clusterID, node, hostID, ErrNotFound)
	}
	return nil
}

// TouchHost records that a host polled its assignments now.
func (s *Store) TouchHost(ctx context.Context, hostID string) error {
	if _, err := s.exec(ctx, `UPDATE hosts SET last_seen = ? WHERE id = ?`, ms(time.Now()), hostID); err != nil {
		return fmt.Errorf("touch host %s: %w", hostID, err)
	}
	return nil
}

// ClusterCredentials returns the cluster's credentials document, creating
// it with gen() the first time (concurrent callers all get the first one).
func (s *Store) ClusterCredentials(ctx context.Context, clusterID string, gen func() (string, error)) (string, error) {
	body, err := s.GetClusterCredentials(ctx, clusterID)
	if err == nil {
		return body, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return "", err
	}
	doc, err := gen()
	if err != nil {
		return "", fmt.Errorf("cluster credentials %s: %w", clusterID, err)
	}
	if _, err := s.exec(ctx, `INSERT INTO cluster_credentials (cluster_id, body, created_at) VALUES (?, ?, ?) ON CONFLICT (cluster_id) DO NOTHING`,
		clusterID, doc, ms(time.Now())); err != nil {
		return "", fmt.Errorf("cluster credentials %s: %w", clusterID, err)
	}
	return s.GetClusterCredentials(ctx, clusterID)
}

// GetClusterCredentials returns the stored credentials document of a
// cluster. ErrNotFound: none yet.
func (s *Store) GetClusterCredentials(ctx context.Context, clusterID string) (string, error) {
	var body string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT body FROM cluster_credentials WHERE cluster_id = ?`), clusterID).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("cluster credentials %s: %w", clusterID, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("cluster credentials %s: %w", clusterID, err)
	}
	return body, nil
}
