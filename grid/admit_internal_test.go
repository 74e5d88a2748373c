package grid

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

// TestAdmitProtocolAndMetadata refuses a node of another member protocol
// version and one without Shoal metadata (admit is what memberlist's alive
// and merge delegates call); a matching node is admitted.
func TestAdmitProtocolAndMetadata(t *testing.T) {
	cfg, err := Config{Name: "self", PartitionCount: 31}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	m := &Member{cfg: cfg, view: map[string]MemberInfo{}}
	node := func(meta nodeMeta) *memberlist.Node {
		b, err := meta.encode()
		if err != nil {
			t.Fatal(err)
		}
		return &memberlist.Node{Name: "peer", Addr: net.IPv4(127, 0, 0, 1), Port: 7000, Meta: b}
	}
	good := nodeMeta{Addr: "127.0.0.1:5701", Proto: metaProto, Cluster: cfg.Cluster, Partitions: 31}
	if err := m.admit(node(good), true); err != nil {
		t.Fatalf("matching node refused: %v", err)
	}
	other := good
	other.Proto = metaProto + 1
	if err := m.admit(node(other), false); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "member protocol") {
		t.Fatalf("other protocol: %v", err)
	}
	if err := m.admit(&memberlist.Node{Name: "x", Meta: []byte("junk")}, false); !errors.Is(err, ErrRefused) {
		t.Fatalf("foreign metadata: %v", err)
	}
}
