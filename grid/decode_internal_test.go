package grid

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
)

// nestedTail is an array nested depth levels deep around nil.
func nestedTail(depth int) []byte {
	return append(bytes.Repeat([]byte{0x91}, depth), 0xc0)
}

// Gossip metadata is a peer's bytes too: a value nested hundreds of
// levels deep must be refused, not recursed into. (Backup records and
// snapshots: backup/codec_test.go.)
func TestPeerPayloadsRefuseDeepNesting(t *testing.T) {
	// Gossip metadata with an unknown deep field.
	meta, err := msgpack.Marshal(map[string]any{"a": "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	meta[0]++ // one more pair
	meta = append(append(meta, 0xa1, 'x'), nestedTail(400)...)
	if _, err := decodeMeta(meta); !errors.Is(err, mpsafe.ErrTooDeep) {
		t.Fatalf("deep metadata: %v", err)
	}
}

// The seal list of a sysReplicaSeqs request comes from a peer: anything
// malformed seals nothing, a well-formed one round-trips.
func TestDecodeSeal(t *testing.T) {
	v, parts := decodeSeal(encodeSeal(42, []int32{0, 7, 270}))
	if v != 42 || len(parts) != 3 || !parts[0] || !parts[7] || !parts[270] {
		t.Fatalf("round trip: %d %v", v, parts)
	}
	for _, b := range [][]byte{nil, {1, 2, 3}, append(encodeSeal(1, nil), 1, 2)} {
		if v, parts := decodeSeal(b); v != 0 || parts != nil {
			t.Errorf("decodeSeal(%v) = %d, %v; want nothing", b, v, parts)
		}
	}
	if v, parts := decodeSeal(encodeSeal(9, nil)); v != 9 || len(parts) != 0 {
		t.Errorf("empty list: %d %v", v, parts)
	}
}
