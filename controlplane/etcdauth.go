package controlplane

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"go.uber.org/zap"
)

// AgentEtcdAuth turns on per-cluster etcd credentials for agents
// (docs/security.md). The control plane's own etcd client must then
// be root (or hold a role that may manage users and roles): provisioning a
// cluster creates its agents' etcd user and role, deleting it deletes them.
type AgentEtcdAuth struct {
	// Secret derives each cluster's agent password (HMAC-SHA256 of the
	// cluster id), so that every server replica and every retry renders
	// the same password without storing it. The server passes its ingest
	// secret (DataDir/ingest.key).
	Secret []byte
}

// AgentEtcdUser is the etcd user (and role) of cluster clusterID's agents.
// The cluster id is immutable and unique, so a re-created cluster of the
// same name never inherits an old user.
func AgentEtcdUser(clusterID string) string { return "dbpilot-agent-" + clusterID }

// AgentEtcdPassword is the etcd password of cluster clusterID's agents:
// hex HMAC-SHA256 under secret, with a label that keeps it apart from the
// ingest key derived from the same secret.
func AgentEtcdPassword(secret []byte, clusterID string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("etcd-agent\x00" + clusterID))
	return hex.EncodeToString(m.Sum(nil))
}

// agentEtcdCredentials returns the etcd user and password a node of the
// cluster gets in its agent config ("", "" when per-cluster etcd
// credentials are off).
func (e *Engine) agentEtcdCredentials(clusterID string) (user, password string) {
	if e.cfg.EtcdAuth == nil {
		return "", ""
	}
	return AgentEtcdUser(clusterID), AgentEtcdPassword(e.cfg.EtcdAuth.Secret, clusterID)
}

// ensureAgentUser creates (idempotently) the cluster's agent etcd user and
// its role: READWRITE on the cluster prefix and nothing else. It runs
// before any node of the cluster is created or re-created.
func (x *clusterCtx) ensureAgentUser(ctx context.Context) error {
	user, pw := x.w.e.agentEtcdCredentials(x.c.ID)
	if user == "" {
		return nil
	}
	if err := x.w.e.etcd.EnsureClusterUser(ctx, user, pw, x.keys); err != nil {
		return err
	}
	x.w.log.Debug("agent etcd user ensured", zap.String("user", user), zap.String("prefix", x.keys.Prefix()))
	return nil
}

// deleteAgentUser deletes the cluster's agent etcd user and role (a
// repeated delete succeeds).
func (x *clusterCtx) deleteAgentUser(ctx context.Context) error {
	user, _ := x.w.e.agentEtcdCredentials(x.c.ID)
	if user == "" {
		return nil
	}
	if err := x.w.e.etcd.DeleteClusterUser(ctx, user); err != nil {
		return fmt.Errorf("delete agent etcd user: %w", err)
	}
	x.w.log.Info("agent etcd user deleted", zap.String("user", user))
	return nil
}
