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
	v, parts := decodeSeal(encodeSeal(42, []int32{0, 7, 270}), 271)
	if v != 42 || len(parts) != 3 || !parts[0] || !parts[7] || !parts[270] {
		t.Fatalf("round trip: %d %v", v, parts)
	}
	for _, b := range [][]byte{
		nil, {1, 2, 3}, append(encodeSeal(1, nil), 1, 2),
		encodeSeal(1, []int32{271}),       // out of range
		encodeSeal(1, []int32{-1}),        // negative
		encodeSeal(1, make([]int32, 272)), // more partitions than the cluster has
	} {
		if v, parts := decodeSeal(b, 271); v != 0 || parts != nil {
			t.Errorf("decodeSeal(%v) = %d, %v; want nothing", b, v, parts)
		}
	}
	if v, parts := decodeSeal(encodeSeal(9, nil), 271); v != 9 || len(parts) != 0 {
		t.Errorf("empty list: %d %v", v, parts)
	}
}

// FuzzDecodeSeal: a peer's seal list never panics, and what decodes is in
// range and re-encodes to partitions of the input.
func FuzzDecodeSeal(f *testing.F) {
	f.Add(encodeSeal(42, []int32{0, 7, 270}))
	f.Add(encodeSeal(1, []int32{271}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, parts := decodeSeal(b, 271)
		if parts == nil {
			if v != 0 {
				t.Fatalf("version %d without partitions", v)
			}
			return
		}
		if len(parts) > 271 {
			t.Fatalf("%d partitions", len(parts))
		}
		for p := range parts {
			if p < 0 || p >= 271 {
				t.Fatalf("partition %d out of range", p)
			}
		}
	})
}

// FuzzDecodeMeta: gossip metadata from a peer never panics or recurses.
func FuzzDecodeMeta(f *testing.F) {
	good, err := nodeMeta{Addr: "127.0.0.1:5701", Zone: "a"}.encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(nestedTail(400))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeMeta(b)
	})
}
