// Package embedetcd starts etcd members inside the process
// (go.etcd.io/etcd/server/v3/embed) on loopback: the embedded default of the
// demo, the dev control plane, the local cluster test bed and the tests.
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/internal/localhost"
)

// Start runs an etcd member named name with its data in dir, serving
// clients on 127.0.0.1:clientPort (0 = a free port), and waits up to ready
// for it to serve. A dir that already holds a member is restarted, not
// re-initialised. It returns the server and its client URL
// ("http://127.0.0.1:PORT"); the caller closes the server.
func Start(dir, name string, clientPort int, log *zap.Logger, ready time.Duration) (*embed.Etcd, string, error) {
	var err error
	if clientPort == 0 {
		if clientPort, err = localhost.FreePort(""); err != nil {
			return nil, "", err
		}
	}
	peerPort, err := localhost.FreePort("")
	if err != nil {
		return nil, "", err
	}
	m := Member{Name: name, Dir: dir, ClientPort: clientPort, PeerPort: peerPort, Log: log}
	m.InitialCluster = m.Name + "=" + m.PeerURL()
	e, err := StartMember(m)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(ready):
		e.Close()
		return nil, "", errors.New("embedded etcd not ready after " + ready.String())
	}
	return e, m.ClientURL(), nil
}

// Member describes one member of an etcd cluster on loopback, fixed ports
// included so that a stopped member can be restarted as itself.
type Member struct {
	Name       string
	Dir        string // data dir; one that already holds a member is restarted, not re-initialised
	ClientPort int
	PeerPort   int
	// InitialCluster lists every member as name=peerURL, comma-separated
	// (etcd's --initial-cluster); used only when Dir is new.
	InitialCluster string
	// Token is etcd's --initial-cluster-token; "" = etcd's default.
	Token string
	Log   *zap.Logger
}

// ClientURL is the member's client URL, http://127.0.0.1:ClientPort.
func (m Member) ClientURL() string { return "http://127.0.0.1:" + strconv.Itoa(m.ClientPort) }

// PeerURL is the member's peer URL, http://127.0.0.1:PeerPort.
func (m Member) PeerURL() string { return "http://127.0.0.1:" + strconv.Itoa(m.PeerPort) }

// StartMember starts one member and returns without waiting for it to be
// ready: a member of a multi-member cluster serves only once a quorum of its
// peers runs, so the caller starts them all and then waits on each
// Server.ReadyNotify(). The caller closes the server.
func StartMember(m Member) (*embed.Etcd, error) {
	log := m.Log
	if log == nil {
		log = zap.NewNop()
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = m.Name, m.Dir
	cu, err := url.Parse(m.ClientURL())
	if err != nil {
		return nil, err
	}
	pu, err := url.Parse(m.PeerURL())
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = m.InitialCluster
	if m.Token != "" {
		cfg.InitialClusterToken = m.Token
	}
	if _, err := os.Stat(filepath.Join(m.Dir, "member")); err == nil {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	// bcrypt's minimum cost (golang.org/x/crypto/bcrypt.MinCost): every
	// password dbpilot gives this etcd is 128 or 256 random bits, which no
	// cost factor makes harder to guess, while the default cost (10) makes
	// each login (clientv3.New with a username) take up to seconds on a
	// loaded machine, longer than an agent's etcd.dial_timeout.
	cfg.BcryptCost = 4
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(log.Named("etcd").WithOptions(zap.IncreaseLevel(zap.ErrorLevel)))
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd member %s: %w", m.Name, err)
	}
	return e, nil
}

// EnableAuth turns on authentication (simple tokens, etcd's default) on the
// etcd at clientURL, typically one Start returned: the root user's password
// is kept in passwordFile (created with mode 0600 and a random password on
// the first call). On a later start, when authentication is on already,
// it checks that the password in the file still authenticates as root.
// It returns the root password. Production etcd clusters should use JWT
// tokens (--auth-token jwt,…) instead of simple tokens; see
// docs/security.md.
func EnableAuth(ctx context.Context, clientURL, passwordFile string, log *zap.Logger) (string, error) {
	pw, err := LoadOrCreatePassword(passwordFile)
	if err != nil {
		return "", err
	}
	quiet := log.Named("etcd-client").WithOptions(zap.IncreaseLevel(zap.ErrorLevel))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 5 * time.Second, Logger: quiet})
	if err != nil {
		return "", fmt.Errorf("etcd client: %w", err)
	}
	_, err = enableAuth(ctx, cli, pw, log)
	cli.Close()
	if err != nil {
		return "", err
	}
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 5 * time.Second, Logger: quiet,
		Username: RootUser, Password: pw})
	if err != nil {
		return "", fmt.Errorf("etcd root login with the password in %s: %w", passwordFile, err)
	}
	defer root.Close()
	if _, err := root.UserList(ctx); err != nil {
		return "", fmt.Errorf("etcd root login with the password in %s: %w", passwordFile, err)
	}
	return pw, nil
}
