package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

const allocCols = `host_id, cluster_id, node, resources, config, created_at, state, restart_generation, restart_applied, config_applied, config_error`

func scanAllocation(sc interface{ Scan(...any) error }) (Allocation, error) {
	var a Allocation
	var res string
	var at int64
	if err := sc.Scan(&a.HostID, &a.ClusterID, &a.Node, &res, &a.Config, &at, &a.State, &a.RestartGeneration, &a.RestartApplied,
		&a.ConfigApplied, &a.ConfigError); err != nil {
		return Allocation{}, err
	}
	_ = json.Unmarshal([]byte(res), &a.Resources)
	a.CreatedAt = fromMS(at)
	return a, nil
}

// GetAllocation returns the allocation of a cluster node. ErrNotFound:
// the node is not placed.
func (s *Store) GetAllocation(ctx context.Context, clusterID, node string) (Allocation, error) {
	a, err := scanAllocation(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+allocCols+` FROM allocations WHERE cluster_id = ? AND node = ?`),
		clusterID, node))
	if err != nil {
		return Allocation{}, notFound("allocation "+clusterID+"/"+node, err)
	}
	return a, nil
}

// RequestRestart asks the host of an active allocation to restart the
// node's agent and returns the generation to wait for (AckAllocation
// records it). A restart the host has not acknowledged yet is not raised
// again, so a retried request restarts the node once. ErrNotFound: no
// active allocation of that node.
func (s *Store) RequestRestart(ctx context.Context, clusterID, node string) (int64, error) {
	if _, err := s.exec(ctx, `UPDATE allocations SET restart_generation = restart_generation + 1
 WHERE cluster_id = ? AND node = ? AND state = ? AND restart_generation <= restart_applied`, clusterID, node, AllocActive); err != nil {
		return 0, fmt.Errorf("restart %s/%s: %w", clusterID, node, err)
	}
	var gen int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT restart_generation FROM allocations WHERE cluster_id = ? AND node = ? AND state = ?`),
		clusterID, node, AllocActive).Scan(&gen)
	if err != nil {
		return 0, notFound("restart "+clusterID+"/"+node+": active allocation", err)
	}
	return gen, nil
}

// AckAllocation records what host hostID applied for one of its nodes:
// the restart generation it last carried out, the SHA-256 of the agent
// config its agent runs and why it refused a newer config ("" if it did
// not). ErrNotFound: no such allocation on that host.
func (s *Store) AckAllocation(ctx context.Context, hostID, clusterID, node string, restartApplied int64, configApplied, configError string) error {
	res, err := s.exec(ctx, `UPDATE allocations SET restart_applied = ?, config_applied = ?, config_error = ? WHERE host_id = ? AND cluster_id = ? AND node = ?`,
		restartApplied, configApplied, configError, hostID, clusterID, node)
	if err != nil {
		return fmt.Errorf("acknowledge %s/%s on %s: %w", clusterID, node, hostID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("acknowledge %s/%s on %s: %w", clusterID, node, hostID, ErrNotFound)
	}
	return nil
}

// UpdateAllocationConfig replaces the rendered agent config of an active
// allocation; the host pushes it to the running agent (SIGHUP) on its next
// poll. It reports whether the config changed. ErrNotFound: no active
// allocation of that node.
func (s *Store) UpdateAllocationConfig(ctx context.Context, clusterID, node, config string) (bool, error) {
	res, err := s.exec(ctx, `UPDATE allocations SET config = ? WHERE cluster_id = ? AND node = ? AND state = ? AND config <> ?`,
		config, clusterID, node, AllocActive, config)
	if err != nil {
		return false, fmt.Errorf("update config of %s/%s: %w", clusterID, node, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return true, nil
	}
	if _, err := s.GetAllocation(ctx, clusterID, node); err != nil {
		return false, fmt.Errorf("update config of %s/%s: %w", clusterID, node, err)
	}
	return false, nil
}

// GetHost returns a fleet host by id or by name. ErrNotFound: neither.
func (s *Store) GetHost(ctx context.Context, ref string) (Host, error) {
	h, err := scanHost(s.db.QueryRowContext(ctx, s.q(`SELECT `+hostCols+` FROM hosts WHERE id = ? OR name = ? ORDER BY id LIMIT 1`), ref, ref))
	if err != nil {
		return Host{}, notFound("host "+ref, err)
	}
	return h, nil
}

// SetHostState sets a host's state (HostReady or HostCordoned): a
// cordoned host keeps its nodes but receives no new allocation.
// ErrNotFound: no host with that id.
func (s *Store) SetHostState(ctx context.Context, hostID, state string) error {
	if state != HostReady && state != HostCordoned {
		return fmt.Errorf("host %s: state %q is not %s or %s", hostID, state, HostReady, HostCordoned)
	}
	res, err := s.exec(ctx, `UPDATE hosts SET state = ? WHERE id = ?`, state, hostID)
	if err != nil {
		return fmt.Errorf("set host %s %s: %w", hostID, state, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("set host %s %s: %w", hostID, state, ErrNotFound)
	}
	return nil
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
