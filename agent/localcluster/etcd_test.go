package localcluster

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestEtcdMembersStopStart checks the chaos campaign's etcd faults on a
// 3-member embedded etcd: quorum loss makes it unavailable, restarting the
// stopped members (data kept) brings it back, and so does restarting all.
func TestEtcdMembersStopStart(t *testing.T) {
	c := &Cluster{Opts: Options{Dir: t.TempDir(), EtcdMembers: 3, Log: zap.NewNop()}}
	if err := c.startEtcd(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.StopEtcd() }()
	if len(c.EtcdMembers) != 3 || c.URL != c.EtcdMembers[0].ClientURL {
		t.Fatalf("members %d, URL %s", len(c.EtcdMembers), c.URL)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.EtcdEndpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	put := func(v string, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := cli.Put(ctx, "k", v)
		return err
	}
	get := func() (string, error) {
		// Long enough for the client's reconnection backoff.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		r, err := cli.Get(ctx, "k")
		if err != nil || len(r.Kvs) == 0 {
			return "", err
		}
		return string(r.Kvs[0].Value), nil
	}
	if err := put("1", 5*time.Second); err != nil {
		t.Fatal(err)
	}

	if err := c.StopEtcd(0, 1); err != nil {
		t.Fatal(err)
	}
	if c.EtcdMembers[0].Running() || !c.EtcdMembers[2].Running() {
		t.Fatal("wrong members stopped")
	}
	if err := put("lost", time.Second); err == nil {
		t.Fatal("a write succeeded without quorum")
	}
	if err := c.StartEtcd(0, 1); err != nil {
		t.Fatal(err)
	}
	if err := put("2", 15*time.Second); err != nil {
		t.Fatalf("after quorum restored: %v", err)
	}

	if err := c.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartEtcd(); err != nil {
		t.Fatal(err)
	}
	if v, err := get(); err != nil || v != "2" {
		t.Fatalf("after a full restart: %q, %v (want the data kept)", v, err)
	}
}

// TestProxyCutsEveryTarget checks that a proxy in front of several targets
// cuts them all at once and heals them all.
func TestProxyCutsEveryTarget(t *testing.T) {
	var targets []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(c, c); c.Close() }()
			}
		}()
		targets = append(targets, ln.Addr().String())
	}
	p, err := NewProxy(targets...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	echo := func(addr string) error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		b := make([]byte, 1)
		_, err = io.ReadFull(c, b)
		return err
	}
	addrs := p.Addrs()
	if len(addrs) != 3 || p.Addr() != addrs[0] {
		t.Fatalf("addrs %v", addrs)
	}
	held, err := net.Dial("tcp", addrs[1])
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, a := range addrs {
		if err := echo(a); err != nil {
			t.Fatalf("%s before the cut: %v", a, err)
		}
	}
	p.Cut(true)
	for _, a := range addrs {
		if err := echo(a); err == nil {
			t.Errorf("%s answered while cut", a)
		}
	}
	_ = held.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := held.Read(make([]byte, 1)); err == nil {
		t.Error("a connection made before the cut survived it")
	}
	p.Cut(false)
	for _, a := range addrs {
		if err := echo(a); err != nil {
			t.Errorf("%s after healing: %v", a, err)
		}
	}
}
