package grid_test

import (
	"io"
	"log"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/wire"
)

// fakeNode is the gossip-only attacker: a bare memberlist node whose
// metadata claims the start time 1, so that it looks like the oldest member
// and would be taken for the coordinator.
type fakeNode struct{ meta []byte }

func (f fakeNode) NodeMeta(int) []byte                  { return f.meta }
func (fakeNode) NotifyMsg([]byte)                       {}
func (fakeNode) GetBroadcasts(int, int) [][]byte        { return nil }
func (fakeNode) LocalState(bool) []byte                 { return nil }
func (fakeNode) MergeRemoteState(buf []byte, join bool) {}

func startFakeNode(t *testing.T, seed string, gossipKey []byte) (*memberlist.Memberlist, error) {
	t.Helper()
	// It copies what admission checks (cluster name, partition count,
	// protocol): without a key nothing proves it is not a member.
	meta, err := msgpack.Marshal(map[string]any{"a": "127.0.0.1:1", "s": int64(1), "p": 1, "c": "shoal", "n": 271})
	if err != nil {
		t.Fatal(err)
	}
	mc := memberlist.DefaultLocalConfig()
	mc.Name = "fake-oldest"
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = "127.0.0.1", 0, 0
	mc.Delegate = fakeNode{meta: meta}
	mc.Logger = log.New(io.Discard, "", 0)
	if gossipKey != nil {
		kr, err := memberlist.NewKeyring(nil, gossipKey)
		if err != nil {
			t.Fatal(err)
		}
		mc.Keyring = kr
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	_, err = ml.Join([]string{seed})
	return ml, err
}

// Without a cluster key the attack of issue 9 works (which is why gridnode
// then listens on loopback only): the fake node is admitted and becomes the
// "oldest member". With a key it cannot join, whatever key it guesses, and
// the real member stays the coordinator.
func TestFakeGossipNode(t *testing.T) {
	t.Run("no key: admitted (insecure mode)", func(t *testing.T) {
		c := gridtest.New(t, 1)
		seed := c.Member(0)
		if _, err := startFakeNode(t, seed.GossipAddr(), nil); err != nil {
			t.Fatalf("join: %v", err)
		}
		gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
			return !seed.IsCoordinator(), "waiting for the fake node to take over coordination"
		})
	})
	t.Run("key: refused", func(t *testing.T) {
		c := gridtest.New(t, 1, withKey(clusterKey))
		seed := c.Member(0)
		for _, key := range [][]byte{nil, wire.DeriveKey(otherKey, "gossip"), clusterKey} {
			if _, err := startFakeNode(t, seed.GossipAddr(), key); err == nil {
				t.Fatalf("fake node with key %x joined", key)
			}
		}
		for _, mi := range seed.Members() {
			if mi.Name == "fake-oldest" {
				t.Fatal("the seed lists the fake node")
			}
		}
		if !seed.IsCoordinator() {
			t.Fatal("the seed no longer coordinates")
		}
	})
}
