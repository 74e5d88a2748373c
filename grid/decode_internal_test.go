package grid

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
	"github.com/shoalgrid/shoal/op"
)

// nestedTail is an array nested depth levels deep around nil.
func nestedTail(depth int) []byte {
	return append(bytes.Repeat([]byte{0x91}, depth), 0xc0)
}

// Backup records, snapshots and gossip metadata are a peer's bytes too: a
// value nested millions of levels deep must be refused, not recursed into.
func TestPeerPayloadsRefuseDeepNesting(t *testing.T) {
	const depth = 5_000_000
	var rs recordScratch
	rec, err := rs.encodeRecord(time.Unix(1, 0), &op.Request{Service: "map", Name: "m", Key: "k", Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	rec = bytes.Clone(rec)
	// The request inside the record: re-tag it as 13 fields.
	i := bytes.IndexByte(rec, 0x9c)
	if i < 0 {
		t.Fatalf("no 12-field request in % x", rec[:16])
	}
	deep := append(bytes.Clone(rec), nestedTail(depth)...)
	deep[i] = 0x9d
	var pool sync.Pool
	if _, _, err := decodeRecord(&pool, rec); err != nil {
		t.Fatalf("good record: %v", err)
	}
	if _, _, err := decodeRecord(&pool, deep); !errors.Is(err, mpsafe.ErrTooDeep) || !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("deep record: %v", err)
	}
	// Snapshots: a service blob is opaque, but an identity record with a
	// deep value is not.
	snap := append([]byte{0x90, 0x91}, nestedTail(depth)...)
	if _, err := decodeSnapshot(snap); !errors.Is(err, mpsafe.ErrTooDeep) {
		t.Fatalf("deep snapshot: %v", err)
	}
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

// FuzzDecodeRecord: backup records decode without panicking or recursing,
// whatever a peer sends, including requests with trailing fields.
func FuzzDecodeRecord(f *testing.F) {
	var rs recordScratch
	rec, err := rs.encodeRecord(time.Unix(1, 0), &op.Request{Service: "map", Name: "m", Key: "k", Value: []byte("v"), Origin: 7, CallSeq: 9})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(bytes.Clone(rec))
	i := bytes.IndexByte(rec, 0x9c)
	for _, tail := range [][]byte{{0x92, 0x01, 0xa1, 'x'}, nestedTail(64), nestedTail(65)} {
		b := append(bytes.Clone(rec), tail...)
		b[i] = 0x9d
		f.Add(b)
	}
	f.Add([]byte{0x01, 0xc1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var pool sync.Pool
		_, req, err := decodeRecord(&pool, b)
		if err != nil {
			if !errors.Is(err, op.ErrBadRequest) {
				t.Fatalf("error %v does not wrap op.ErrBadRequest", err)
			}
			return
		}
		if req == nil {
			t.Fatal("nil request without an error")
		}
	})
}
