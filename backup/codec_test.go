package backup

import (
	"bytes"
	"errors"
	"reflect"
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

func testReq() *op.Request {
	return &op.Request{Service: "map", Name: "m", Op: 2, Partition: 7, Key: "k", Value: []byte("v"), Aux: []byte("a"), Num: -3, TableVersion: 12, Origin: 7, CallSeq: 9}
}

func encodeRecord(t testing.TB, r *Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := EncodeRecord(msgpack.NewEncoder(&buf), r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodeRecordValue(t testing.TB, now time.Time, req *op.Request) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := EncodeRecordValue(msgpack.NewEncoder(&buf), now, req); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRecordRoundTrip(t *testing.T) {
	in := Record{Partition: 270, Seq: 1 << 40, Term: 99, TableVersion: 100, Time: time.Unix(5, 6), Req: testReq()}
	b := encodeRecord(t, &in)
	d := NewDecoder()
	out, err := d.Record(b)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Time.Equal(in.Time) || !reflect.DeepEqual(out.Req, in.Req) {
		t.Fatalf("round trip: %+v %+v, want %+v %+v", out, out.Req, in, in.Req)
	}
	req := out.Req
	out.Time, in.Time, out.Req, in.Req = time.Time{}, time.Time{}, nil, nil
	if out != in {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
	// The decoded request does not alias the frame's buffer (the read loop
	// reuses it).
	clear(b)
	if string(req.Value) != "v" || req.Key != "k" || string(req.Aux) != "a" {
		t.Fatal("decoded request aliases the input")
	}

	now, req, err := d.RecordValue(encodeRecordValue(t, time.Unix(1, 2), testReq()))
	if err != nil || !now.Equal(time.Unix(1, 2)) || !reflect.DeepEqual(req, testReq()) {
		t.Fatalf("legacy round trip: %v %+v %v", now, req, err)
	}
}

func TestRecordRejects(t *testing.T) {
	good := encodeRecord(t, &Record{Partition: 1, Seq: 2, Term: 3, TableVersion: 4, Time: time.Unix(1, 0), Req: testReq()})
	withField := func(i int, v []byte) []byte {
		// Replace header field i (1-based after the array tag) of a record
		// whose header fields are all positive fixints.
		b := bytes.Clone(good)
		return append(append(b[:i:i], v...), good[i+1:]...)
	}
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"not an array", []byte{0x01}},
		{"too few fields", []byte{0x95, 1, 2, 3, 4, 5}},
		{"negative partition", withField(1, []byte{0xff})},
		{"partition beyond int32", withField(1, []byte{0xcf, 0, 0, 0, 1, 0, 0, 0, 0})},
		{"string sequence", withField(2, []byte{0xa1, 'x'})},
		{"truncated", good[:len(good)-1]},
		{"length beyond the bytes", append(bytes.Clone(good[:len(good)-3]), 0xc6, 0x7f, 0xff)},
		{"deep request", append([]byte{0x96, 1, 2, 3, 4, 5}, nestedTail(5_000_000)...)},
	} {
		_, err := NewDecoder().Record(c.b)
		if !errors.Is(err, op.ErrBadRequest) {
			t.Errorf("%s: %v, want an error wrapping op.ErrBadRequest", c.name, err)
		}
	}
	// A newer owner's extra field is skipped.
	b := bytes.Clone(good)
	b[0]++
	b = append(b, 0x92, 0x01, 0xa1, 'x')
	if r, err := NewDecoder().Record(b); err != nil || r.Seq != 2 {
		t.Fatalf("extra field: %+v %v", r, err)
	}
}

// Backup records and snapshots are a peer's bytes: a value nested millions
// of levels deep must be refused, not recursed into.
func TestPeerPayloadsRefuseDeepNesting(t *testing.T) {
	const depth = 5_000_000
	rec := encodeRecordValue(t, time.Unix(1, 0), &op.Request{Service: "map", Name: "m", Key: "k", Value: []byte("v")})
	// The request inside the record: re-tag it as 13 fields.
	i := bytes.IndexByte(rec, 0x9c)
	if i < 0 {
		t.Fatalf("no 12-field request in % x", rec[:16])
	}
	deep := append(bytes.Clone(rec), nestedTail(depth)...)
	deep[i] = 0x9d
	d := NewDecoder()
	if _, _, err := d.RecordValue(rec); err != nil {
		t.Fatalf("good record: %v", err)
	}
	if _, _, err := d.RecordValue(deep); !errors.Is(err, mpsafe.ErrTooDeep) || !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("deep record: %v", err)
	}
	// Snapshots: a service blob is opaque, but an identity record with a
	// deep value is not.
	snap := append([]byte{0x90, 0x91}, nestedTail(depth)...)
	if _, err := DecodeSnapshot(snap); !errors.Is(err, mpsafe.ErrTooDeep) {
		t.Fatalf("deep snapshot: %v", err)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	recs := []DedupRecord{
		{Origin: 1, Call: 2, Seq: 3, At: 4, Code: uint16(op.CodeWrongType), Msg: "m", Found: true, Value: []byte("v"), Num: -5},
		{Origin: 6, Call: 7, Seq: 8, At: 9},
	}
	b, err := EncodeSnapshot([]string{"map", "lock"}, [][]byte{[]byte("state"), {}}, recs)
	if err != nil {
		t.Fatal(err)
	}
	s, err := DecodeSnapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Services) != 2 || string(s.Services["map"]) != "state" || len(s.Services["lock"]) != 0 {
		t.Fatalf("services: %q", s.Services)
	}
	recs[1].Value = []byte{} // msgpack bin of length 0 decodes as empty
	if len(s.Dedup) != 2 || !reflect.DeepEqual(s.Dedup[0], recs[0]) || s.Dedup[1].Seq != 8 {
		t.Fatalf("identities: %+v", s.Dedup)
	}
	if _, err := EncodeSnapshot([]string{"map"}, nil, nil); !errors.Is(err, op.ErrInternal) {
		t.Errorf("mismatched names and states: %v", err)
	}
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"service count beyond the bytes", []byte{0xdd, 0x7f, 0xff, 0xff, 0xff}},
		{"truncated", b[:len(b)-1]},
		{"identity with 8 fields", []byte{0x90, 0x91, 0x98, 1, 2, 3, 4, 5, 0xa0, 0xc2, 0xc4, 0}},
		{"code beyond uint16", []byte{0x90, 0x91, 0x99, 1, 2, 3, 4, 0xce, 0, 1, 0, 0, 0xa0, 0xc2, 0xc4, 0, 0}},
	} {
		if _, err := DecodeSnapshot(c.b); !errors.Is(err, op.ErrBadRequest) {
			t.Errorf("%s: %v, want an error wrapping op.ErrBadRequest", c.name, err)
		}
	}
}

// FuzzDecodeRecordValue: legacy backup records decode without panicking
// or recursing, whatever a peer sends, including requests with trailing
// fields.
func FuzzDecodeRecordValue(f *testing.F) {
	rec := encodeRecordValue(f, time.Unix(1, 0), testReq())
	f.Add(bytes.Clone(rec))
	i := bytes.IndexByte(rec, 0x9c)
	for _, tail := range [][]byte{{0x92, 0x01, 0xa1, 'x'}, nestedTail(64), nestedTail(65)} {
		b := append(bytes.Clone(rec), tail...)
		b[i] = 0x9d
		f.Add(b)
	}
	f.Add([]byte{0x01, 0xc1})
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, b []byte) {
		_, req, err := d.RecordValue(b)
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

// FuzzDecodeRecord: record frames decode without panicking, recursing or
// allocating what a length prefix claims beyond the bytes present; what
// decodes re-encodes to a record that decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	good := encodeRecord(f, &Record{Partition: 3, Seq: 4, Term: 5, TableVersion: 6, Time: time.Unix(7, 8), Req: testReq()})
	f.Add(good)
	f.Add(append([]byte{0x96, 1, 2, 3, 4, 5}, nestedTail(65)...))
	f.Add(append([]byte{0x96, 1, 2, 3, 4, 5, 0x9c, 0xdb, 0x7f, 0xff, 0xff, 0xff}, 'x'))
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := d.Record(b)
		if err != nil {
			if !errors.Is(err, op.ErrBadRequest) {
				t.Fatalf("error %v does not wrap op.ErrBadRequest", err)
			}
			return
		}
		if r.Req == nil {
			t.Fatal("nil request without an error")
		}
		again, err := d.Record(encodeRecord(t, &r))
		if err != nil || again.Seq != r.Seq || again.Term != r.Term || again.Partition != r.Partition || !reflect.DeepEqual(again.Req, r.Req) {
			t.Fatalf("re-encoded record: %+v %v, want %+v", again, err, r)
		}
	})
}

// FuzzDecodeSnapshot: snapshots decode without panicking or trusting a
// length; what decodes re-encodes to the same content.
func FuzzDecodeSnapshot(f *testing.F) {
	b, err := EncodeSnapshot([]string{"map"}, [][]byte{[]byte("s")}, []DedupRecord{{Origin: 1, Call: 2, Seq: 3, Msg: "m", Value: []byte("v")}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{0x90, 0xdd, 0x7f, 0xff, 0xff, 0xff})
	f.Add(append([]byte{0x90, 0x91}, nestedTail(65)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSnapshot(b)
		if err != nil {
			if !errors.Is(err, op.ErrBadRequest) {
				t.Fatalf("error %v does not wrap op.ErrBadRequest", err)
			}
			return
		}
		var names []string
		var blobs [][]byte
		for n, st := range s.Services {
			names = append(names, n)
			blobs = append(blobs, st)
		}
		again, err := EncodeSnapshot(names, blobs, s.Dedup)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := DecodeSnapshot(again)
		if err != nil || len(s2.Services) != len(s.Services) || len(s2.Dedup) != len(s.Dedup) {
			t.Fatalf("re-encoded snapshot: %v", err)
		}
	})
}
