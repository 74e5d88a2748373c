package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/op"
)

// hiddenReader hides a reader's type, so that a decoder reading from it
// cannot tell how much input is left and takes decodeBytes's chunked path.
type hiddenReader struct{ r io.Reader }

func (h hiddenReader) Read(p []byte) (int, error) { return h.r.Read(p) }

func seedRequests() []*op.Request {
	return []*op.Request{
		{},
		{Service: "map", Name: "users", Op: 1, Partition: 42, Key: "user:1", Value: []byte("hello"), Aux: []byte{}, Num: 60000, TableVersion: 3, Timeout: time.Second},
		{Service: "queue", Op: math.MaxUint8, Partition: math.MinInt32, Num: math.MinInt64, TableVersion: math.MaxUint64, Timeout: math.MaxInt64},
		{Partition: math.MaxInt32, Key: strings.Repeat("k", 300), Value: bytes.Repeat([]byte{0xc1}, 300)},
	}
}

func seedResponses() []*op.Response {
	return []*op.Response{
		{},
		{Code: op.CodeWrongOwner, Msg: "moved", Found: true, Value: []byte("v"), Num: -1, TableVersion: 9},
		{Code: math.MaxUint16, Value: []byte{}, Num: math.MaxInt64, TableVersion: math.MaxUint64},
		{Msg: strings.Repeat("m", 300), Value: bytes.Repeat([]byte{0xc1}, 300)},
	}
}

func mustEncode(tb testing.TB, f func(*msgpack.Encoder) error) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := f(msgpack.NewEncoder(&buf)); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// withTrailing rewrites body, an array of n fields, as one of n+2 fields
// whose last two are the msgpack values encoded in extra.
func withTrailing(body []byte, n int, extra ...byte) []byte {
	hdr := 1 // EncodeArrayLen writes a fixarray up to 15 elements
	if n > 15 {
		hdr = 3
	}
	out := []byte{0xdc, byte((n + 2) >> 8), byte(n + 2)}
	out = append(out, body[hdr:]...)
	return append(out, extra...)
}

func checkDecodeErr(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) || !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("decode error %q does not wrap ErrMalformed and op.ErrBadRequest", err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, r := range seedRequests() {
		b := mustEncode(f, func(e *msgpack.Encoder) error { return EncodeRequest(e, r) })
		f.Add(b)
		f.Add(b[:len(b)/2])
		// With trailing fields from a later version.
		f.Add(withTrailing(b, requestFields, 0xa1, 'x', 0x81, 0xa1, 'k', 0x92, 0x01, 0xc0))
		// Trailing fields nested at, and just past, MaxDepth: the path
		// whose recursive skip a 5 MB frame once overflowed.
		f.Add(withTrailing(b, requestFields, append(append([]byte{0xc0}, bytes.Repeat([]byte{0x91}, MaxDepth-1)...), 0xc0)...))
		f.Add(withTrailing(b, requestFields, append(append([]byte{0xc0}, bytes.Repeat([]byte{0x81, 0xc0}, MaxDepth)...), 0xc0)...))
	}
	// A Value claiming 4 GiB.
	f.Add(append(mustEncode(f, func(e *msgpack.Encoder) error { return e.EncodeArrayLen(requestFields) }),
		0xa0, 0xa0, 0x00, 0x00, 0xa0, 0xc6, 0xff, 0xff, 0xff, 0xff))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRequestBytes(data)
		// The same bytes through a stream decoder agree.
		var s op.Request
		serr := DecodeRequest(msgpack.NewDecoder(bufio.NewReaderSize(hiddenReader{bytes.NewReader(data)}, 16)), &s)
		if (err == nil) != (serr == nil) {
			t.Fatalf("in-memory decode: %v; stream decode: %v", err, serr)
		}
		if err != nil {
			checkDecodeErr(t, err)
			checkDecodeErr(t, serr)
			return
		}
		if !reflect.DeepEqual(r, &s) {
			t.Fatalf("in-memory decode %+v, stream decode %+v", r, &s)
		}
		// Interning names (as a Conn's read loop does) changes nothing,
		// also when the names were seen before.
		var names Names
		for range 2 {
			var in op.Request
			if err := decodeRequestBody(msgpack.NewDecoder(bytes.NewReader(data)), data, &in, &names); err != nil {
				t.Fatalf("interned decode: %v; plain decode succeeded", err)
			}
			if !reflect.DeepEqual(r, &in) {
				t.Fatalf("interned decode %+v, plain decode %+v", &in, r)
			}
		}
		// A decoded request re-encodes to the same value.
		b := mustEncode(t, func(e *msgpack.Encoder) error { return EncodeRequest(e, r) })
		r2, err := DecodeRequestBytes(b)
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", r, err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", r, r2)
		}
	})
}

// FuzzDecodeRequests: a KindRequests body never panics, never allocates
// by a count it claims, and what decodes re-encodes to the same requests.
func FuzzDecodeRequests(f *testing.F) {
	rs := seedRequests()
	b := mustEncode(f, func(e *msgpack.Encoder) error { return EncodeRequests(e, rs) })
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add(mustEncode(f, func(e *msgpack.Encoder) error { return EncodeRequests(e, rs[:1]) }))
	// A count of 4 billion with nothing behind it, and an empty list.
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x90})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodeRequestsBytes(data)
		if err != nil {
			checkDecodeErr(t, err)
			return
		}
		if len(got) < 1 || len(got) > MaxRequestsPerFrame || len(got) > len(data) {
			t.Fatalf("%d requests from %d bytes", len(got), len(data))
		}
		again, err := DecodeRequestsBytes(mustEncode(t, func(e *msgpack.Encoder) error { return EncodeRequests(e, got) }))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("re-encoded requests decode to %+v, %v; want %+v", again, err, got)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	for _, r := range seedResponses() {
		b := mustEncode(f, func(e *msgpack.Encoder) error { return EncodeResponse(e, r) })
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(withTrailing(b, responseFields, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xc4, 0x01, 0x00))
		f.Add(withTrailing(b, responseFields, append(append([]byte{0xc0}, bytes.Repeat([]byte{0x91}, MaxDepth-1)...), 0xc0)...))
		f.Add(withTrailing(b, responseFields, append(append([]byte{0xc0}, bytes.Repeat([]byte{0x91}, MaxDepth)...), 0xc0)...))
	}
	f.Add(append(mustEncode(f, func(e *msgpack.Encoder) error { return e.EncodeArrayLen(responseFields) }),
		0x00, 0xa0, 0xc3, 0xc6, 0xff, 0xff, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeResponseBytes(data)
		var s op.Response
		serr := DecodeResponse(msgpack.NewDecoder(bufio.NewReaderSize(hiddenReader{bytes.NewReader(data)}, 16)), &s)
		if (err == nil) != (serr == nil) {
			t.Fatalf("in-memory decode: %v; stream decode: %v", err, serr)
		}
		if err != nil {
			checkDecodeErr(t, err)
			checkDecodeErr(t, serr)
			return
		}
		if !reflect.DeepEqual(r, &s) {
			t.Fatalf("in-memory decode %+v, stream decode %+v", r, &s)
		}
		b := mustEncode(t, func(e *msgpack.Encoder) error { return EncodeResponse(e, r) })
		r2, err := DecodeResponseBytes(b)
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", r, err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the response:\n%+v\n%+v", r, r2)
		}
		_ = r.Err() // any code maps to an error without panicking
	})
}

func FuzzDecodeHello(f *testing.F) {
	for _, h := range []Hello{
		{Magic: Magic, Proto: ProtocolVersion, Role: RoleClient, Name: "c1", Cluster: "dev", Partitions: 271},
		{Magic: Magic, Proto: 2, Role: RoleMember, Name: "m1", Cluster: "prod", Partitions: 1, Err: "refused"},
		{Magic: "HTTP/"},
	} {
		b, err := msgpack.Marshal(&h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	// Found by this target: an unknown key whose value claims 1.8 GB grew
	// msgpack's pooled decoders on every call until one call took seconds.
	f.Add([]byte("\x87\xc4\n0000000\x1e-\x90\xdbl\t\xc40"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeHello(data)
		if err != nil {
			checkDecodeErr(t, err)
			if h != (Hello{}) {
				t.Fatalf("failed decode returned %+v", h)
			}
			return
		}
		if h.Magic != Magic {
			t.Fatalf("accepted magic %q", h.Magic)
		}
		b, err := msgpack.Marshal(&h)
		if err != nil {
			t.Fatal(err)
		}
		h2, err := DecodeHello(b)
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", h, err)
		}
		if h != h2 {
			t.Fatalf("round trip changed the hello:\n%+v\n%+v", h, h2)
		}
	})
}

// FuzzReadFrame feeds arbitrary bytes to readFrame with a small limit: it
// never panics, never allocates more than the limit, refuses an oversized
// frame after reading only its header, and what it returns re-serialises to
// exactly the bytes it consumed.
func FuzzReadFrame(f *testing.F) {
	fr := func(kind Kind, id uint64, body []byte) []byte {
		b := make([]byte, headerSize, headerSize+len(body))
		binary.BigEndian.PutUint32(b, uint32(9+len(body)))
		b[4] = byte(kind)
		binary.BigEndian.PutUint64(b[5:], id)
		return append(b, body...)
	}
	req := mustEncode(f, func(e *msgpack.Encoder) error { return EncodeRequest(e, seedRequests()[1]) })
	f.Add(fr(KindRequest, 1, req), uint16(200))
	f.Add(append(fr(KindResponse, 2, []byte{1, 2, 3}), fr(KindRequest, 3, nil)...), uint16(16))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0, 0}, uint16(100))
	f.Add([]byte{0, 0, 0, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0}, uint16(100))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint16(1000))
	f.Add([]byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, m uint16) {
		max := int(m) % 2048
		r := bytes.NewReader(data)
		var buf []byte
		consumed := 0
		for {
			kind, id, body, err := readFrame(r, buf, max)
			if cap(body) > max {
				t.Fatalf("allocated %d bytes with a limit of %d", cap(body), max)
			}
			read := len(data) - r.Len()
			if err != nil {
				if errors.Is(err, op.ErrTooLarge) && read != consumed+headerSize {
					t.Fatalf("read %d bytes of an oversized frame, want only its header", read-consumed)
				}
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
					!errors.Is(err, ErrMalformed) && !errors.Is(err, op.ErrTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if headerSize+len(body) > max {
				t.Fatalf("returned a %d-byte frame with a limit of %d", headerSize+len(body), max)
			}
			var hdr [headerSize]byte
			binary.BigEndian.PutUint32(hdr[:], uint32(9+len(body)))
			hdr[4] = byte(kind)
			binary.BigEndian.PutUint64(hdr[5:], id)
			if got := append(hdr[:], body...); !bytes.Equal(got, data[consumed:read]) {
				t.Fatalf("frame %x does not match the input %x", got, data[consumed:read])
			}
			consumed = read
			buf = body
		}
	})
}

// TestReadFrameRefusesWithoutAllocating is FuzzReadFrame's allocation
// property measured for a 4 GiB length claim.
func TestReadFrameRefusesWithoutAllocating(t *testing.T) {
	hdr := []byte{0xff, 0xff, 0xff, 0xf0, byte(KindRequest), 0, 0, 0, 0, 0, 0, 0, 1, 0xaa}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		_, _, body, err := readFrame(bytes.NewReader(hdr), nil, 1<<20)
		if !errors.Is(err, op.ErrTooLarge) || body != nil {
			t.Fatalf("got %d bytes, %v; want op.ErrTooLarge", len(body), err)
		}
	}
	runtime.ReadMemStats(&after)
	// A reader and an error per call: far below one MiB in total.
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("refusing 100 frames allocated %d bytes", n)
	}
}
