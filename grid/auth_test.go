package grid_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

var (
	clusterKey = bytes.Repeat([]byte("k"), 32)
	otherKey   = bytes.Repeat([]byte("o"), 32)
)

func withKey(keys ...[]byte) gridtest.Option {
	return gridtest.WithConfig(func(c *grid.Config) { c.ClusterKeys = keys })
}

// Member-only operations of the _grid service, by number (see server.go):
// what an attacker that reached the data port would send.
var memberOps = []struct {
	name string
	op   uint8
}{
	{"table publish", 2},
	{"backup record", 3},
	{"backup sync chunk", 4},
	{"re-plan trigger", 5},
	{"hand-off", 6},
	{"replica sequences", 7},
	{"backup probe", 9},
	{"replicated delta", 13},
	{"replicated pull", 14},
}

// The takeover of issue 9: a process that claims to be a member and
// publishes a table, freezes partitions with a hand-off or pushes backup
// sync chunks. With a cluster key it is refused at the handshake (no key,
// or another key), and as a client it is refused every member operation;
// the cluster keeps its data.
func TestFakeMemberRefused(t *testing.T) {
	c := gridtest.New(t, 2, withKey(clusterKey))
	ctx := ctxT(t, 20*time.Second)
	m := maps.New(c.Member(0), "precious")
	for i := range 100 {
		if err := m.Put(ctx, fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	addr := c.Member(0).Addr()
	for _, tc := range []struct {
		name string
		keys [][]byte
	}{{"no key", nil}, {"another key", [][]byte{wire.DeriveKey(otherKey, "handshake")}}} {
		fake := wire.Hello{Role: wire.RoleMember, Name: "intruder", Cluster: "shoal", Partitions: 271}
		conn, err := wire.Dial(ctx, nil, addr, fake, wire.Options{MemberKeys: tc.keys})
		if err == nil {
			conn.Close()
			t.Fatalf("%s: a fake member completed the handshake", tc.name)
		}
		if !errors.Is(err, op.ErrUnauthenticated) {
			t.Errorf("%s: dial error %v, want op.ErrUnauthenticated", tc.name, err)
		}
	}
	conn := dialClient(t, addr)
	for _, o := range memberOps {
		req := &op.Request{Service: "_grid", Op: o.op, Partition: 0, Key: "intruder", Value: []byte{1, 2, 3}, Aux: make([]byte, 16), Num: 1, TableVersion: 1 << 40}
		resp, err := conn.Call(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", o.name, err)
		}
		if !errors.Is(resp.Err(), op.ErrForbidden) {
			t.Errorf("%s from a client: %v, want op.ErrForbidden", o.name, resp.Err())
		}
	}
	// Reserved state operations (timers, cancellations, session ends) are
	// the core's, never a client's.
	resp, err := conn.Call(ctx, &op.Request{Service: maps.ServiceName, Name: "precious", Op: op.OpSessionEnded, Partition: 0})
	if err != nil || !errors.Is(resp.Err(), op.ErrForbidden) {
		t.Errorf("reserved op from a client: %v %v, want op.ErrForbidden", err, resp.Err())
	}
	// Clients still read the table and the status.
	if resp, err := conn.Call(ctx, &op.Request{Service: "_grid", Op: 1}); err != nil || resp.Err() != nil || !resp.Found {
		t.Errorf("table read from a client: %v %v", err, resp.Err())
	}
	n, err := m.Size(ctx)
	if err != nil || n != 100 {
		t.Fatalf("size after the attacks: %d %v, want 100", n, err)
	}
}

// Members with the same key form a cluster and replicate (their
// connections are proven both ways).
func TestKeyedClusterWorks(t *testing.T) {
	c := gridtest.New(t, 3, withKey(clusterKey))
	ctx := ctxT(t, 20*time.Second)
	m := maps.New(c.Member(1), "m")
	for i := range 50 {
		if err := m.Put(ctx, fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	c.Crash(0)
	c.WaitStable()
	if n, err := maps.New(c.Member(1), "m").Size(ctx); err != nil || n != 50 {
		t.Fatalf("size after a crash: %d %v", n, err)
	}
}

// A process without the cluster key (or with another one) cannot join the
// gossip: Start fails with ErrClusterKey, and the cluster never lists it.
func TestGossipWithoutKeyNotAdmitted(t *testing.T) {
	c := gridtest.New(t, 1, withKey(clusterKey))
	seed := c.Member(0)
	for _, tc := range []struct {
		name string
		keys [][]byte
	}{{"no key", nil}, {"another key", [][]byte{otherKey}}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m, err := grid.Start(ctx, grid.Config{
				Name: "intruder", BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
				Join: []string{seed.GossipAddr()}, Gossip: grid.FastGossip(), ClusterKeys: tc.keys,
				Logger: seedLogger(),
			})
			if err == nil {
				m.Close()
				t.Fatal("a member without the key joined")
			}
			if !errors.Is(err, grid.ErrClusterKey) || !errors.Is(err, op.ErrUnauthenticated) {
				t.Errorf("Start error %v, want grid.ErrClusterKey", err)
			}
			for _, mi := range seed.Members() {
				if mi.Name == "intruder" {
					t.Fatal("the seed lists the intruder")
				}
			}
		})
	}
}

// A member with a key cannot join a cluster without one either.
func TestKeyedMemberCannotJoinUnkeyedCluster(t *testing.T) {
	c := gridtest.New(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := grid.Start(ctx, grid.Config{
		Name: "keyed", BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
		Join: []string{c.Member(0).GossipAddr()}, Gossip: grid.FastGossip(), ClusterKeys: [][]byte{clusterKey},
		Logger: seedLogger(),
	})
	if err == nil {
		m.Close()
		t.Fatal("a keyed member joined an unkeyed cluster")
	}
	if !errors.Is(err, grid.ErrClusterKey) {
		t.Errorf("Start error %v, want grid.ErrClusterKey", err)
	}
}

// A key rotation midway: members that already use the new key (first)
// and still accept the old one work with members that still use the old
// key and already accept the new one (docs/security.md).
func TestClusterKeyRotation(t *testing.T) {
	c := gridtest.New(t, 1, withKey(clusterKey, otherKey))
	ctx := ctxT(t, 20*time.Second)
	m, err := grid.Start(ctx, grid.Config{
		Name: "rotated", BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
		Join: []string{c.Member(0).GossipAddr()}, Gossip: grid.FastGossip(), ClusterKeys: [][]byte{otherKey, clusterKey},
		Services: []op.Service{maps.Service{}},
		Logger:   seedLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	gridtest.Eventually(t, 15*time.Second, func() (bool, string) {
		t := m.Table()
		return t != nil && len(t.Members) == 2, "waiting for a two-member table"
	})
	if err := maps.New(m, "r").Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
}

func TestConfigRefusesWeakSecurity(t *testing.T) {
	for name, cfg := range map[string]grid.Config{
		"short key":        {ClusterKeys: [][]byte{[]byte("short")}},
		"tokens, no key":   {Tokens: []grid.Token{{Secret: "0123456789abcdef"}}},
		"short token":      {ClusterKeys: [][]byte{clusterKey}, Tokens: []grid.Token{{Secret: "short"}}},
		"bad grant":        {ClusterKeys: [][]byte{clusterKey}, Tokens: []grid.Token{{Secret: "0123456789abcdef", Grants: []grid.Grant{{Pattern: "[", Role: grid.RoleRead}}}}},
		"duplicate tokens": {ClusterKeys: [][]byte{clusterKey}, Tokens: []grid.Token{{Secret: "0123456789abcdef"}, {Secret: "0123456789abcdef"}}},
	} {
		cfg.BindAddr, cfg.DataAddr = "127.0.0.1:0", "127.0.0.1:0"
		m, err := grid.Start(context.Background(), cfg)
		if err == nil {
			m.Close()
			t.Errorf("%s: accepted", name)
		} else if !errors.Is(err, grid.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

func seedLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
