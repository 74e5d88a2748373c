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
