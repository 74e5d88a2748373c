package backup

import (
	"bytes"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// BenchmarkRecordCodec compares the two forms of a backup record of a
// 100-byte put, encoded as the owner does and decoded as a backup does: a
// wire.KindRecord body (frame), and the older sysBackup request whose
// Value is the record (request: the record encoded into a scratch buffer,
// copied into the request, the request decoded as a Conn does, then the
// record).
func BenchmarkRecordCodec(b *testing.B) {
	req := &op.Request{Service: "map", Name: "bench", Op: 2, Partition: 17, Key: "key-000123", Value: bytes.Repeat([]byte{'v'}, 100), TableVersion: 9, Origin: 1 << 40, CallSeq: 77}
	now := time.Unix(1, 2)
	var out bytes.Buffer
	enc := msgpack.NewEncoder(&out)
	d := NewDecoder()
	b.Run("frame", func(b *testing.B) {
		rec := Record{Partition: 17, Seq: 1000, Term: 9, TableVersion: 9, Time: now, Req: req}
		b.ReportAllocs()
		for b.Loop() {
			out.Reset()
			if err := EncodeRecord(enc, &rec); err != nil {
				b.Fatal(err)
			}
			if _, err := d.Record(out.Bytes()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("request", func(b *testing.B) {
		var scratch bytes.Buffer
		senc := msgpack.NewEncoder(&scratch)
		term := make([]byte, 8)
		// Decoded as a Conn's read loop does: a reused decoder and names
		// table, the body walked by mpsafe first.
		var rd bytes.Reader
		dec := msgpack.NewDecoder(&rd)
		var names wire.Names
		b.ReportAllocs()
		for b.Loop() {
			scratch.Reset()
			if err := EncodeRecordValue(senc, now, req); err != nil {
				b.Fatal(err)
			}
			outer := op.Request{Service: "_grid", Op: 3, Partition: 17, Num: 1000, TableVersion: 9, Value: scratch.Bytes(), Aux: term}
			out.Reset()
			if err := wire.EncodeRequest(enc, &outer); err != nil {
				b.Fatal(err)
			}
			if _, err := mpsafe.ValueEnd(out.Bytes(), wire.MaxDepth); err != nil {
				b.Fatal(err)
			}
			rd.Reset(out.Bytes())
			dec.ResetReader(&rd)
			var r op.Request
			if err := wire.DecodeRequestNames(dec, &r, &names); err != nil {
				b.Fatal(err)
			}
			if _, _, err := d.RecordValue(r.Value); err != nil {
				b.Fatal(err)
			}
		}
	})
}
