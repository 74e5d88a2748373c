package wire

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
	"github.com/shoalgrid/shoal/op"
)

// valueEnd is the walk checkBody does.
func valueEnd(b []byte) (int, error) { return mpsafe.ValueEnd(b, MaxDepth) }

// skipEnd is msgpack's own answer to valueEnd: how many bytes Skip consumes.
func skipEnd(b []byte) (int, error) {
	r := bytes.NewReader(b)
	if err := msgpack.NewDecoder(r).Skip(); err != nil {
		return 0, err
	}
	return len(b) - r.Len(), nil
}

func TestCheckBody(t *testing.T) {
	enc := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	valid := [][]byte{
		enc(nil), enc(true), enc(false), enc(0), enc(-1), enc(127), enc(-32), enc(255), enc(-129),
		enc(1 << 40), enc(-1 << 40), enc(uint64(1) << 63), enc(float32(1.5)), enc(2.5),
		enc(""), enc("abc"), enc(string(make([]byte, 300))), enc(string(make([]byte, 70000))),
		enc([]byte{}), enc(make([]byte, 300)), enc(make([]byte, 70000)),
		enc([]any{}), enc([]any{1, "a", []any{nil}}), enc(make([]int, 20)), enc(make([]int, 70000)),
		enc(map[string]any{}), enc(map[string]any{"a": map[string]any{"b": []byte{1}}}),
		enc(time.Unix(1, 0)), enc(time.Unix(1, 5)), enc(time.Unix(1<<40, 5)),
		{0xd4, 1, 0}, {0xd5, 1, 0, 0}, {0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{0xc7, 0, 1}, {0xc7, 2, 1, 0, 0}, {0xc8, 0, 1, 5, 0}, {0xc9, 0, 0, 0, 0, 9},
		{0xde, 0, 1, 1, 2}, {0xdf, 0, 0, 0, 1, 0xa0, 0xc0},
		mustEncode(t, func(e *msgpack.Encoder) error { return EncodeRequest(e, seedRequests()[1]) }),
		mustEncode(t, func(e *msgpack.Encoder) error { return EncodeResponse(e, seedResponses()[1]) }),
	}
	for _, b := range valid {
		end, err := valueEnd(b)
		if err != nil || end != len(b) {
			t.Errorf("%x: end %d, %v; want %d", b, end, err, len(b))
		}
		// Trailing bytes are not part of the value.
		if end, err := valueEnd(append(b[:len(b):len(b)], 0xc1, 0xc1)); err != nil || end != len(b) {
			t.Errorf("%x + trailing: end %d, %v; want %d", b, end, err, len(b))
		}
		cuts := []int{0, 1, len(b) / 2, len(b) - 1}
		if len(b) <= 4096 {
			cuts = cuts[:0]
			for i := range len(b) {
				cuts = append(cuts, i)
			}
		}
		for _, i := range cuts {
			if err := checkBody(b[:i]); err == nil {
				t.Errorf("%x cut to %d bytes passed", b[:min(len(b), 16)], i)
			}
		}
	}
	invalid := map[string][]byte{
		"empty":                   {},
		"reserved code":           {0xc1},
		"reserved code in array":  {0x92, 0x01, 0xc1},
		"str32 claims 4 GiB":      {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'},
		"bin32 claims 4 GiB":      {0xc6, 0xff, 0xff, 0xff, 0xff, 'a'},
		"ext32 claims 4 GiB":      {0xc9, 0xff, 0xff, 0xff, 0xff, 1, 'a'},
		"ext8 missing type":       {0xc7, 0},
		"array32 of 4G":           append([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, make([]byte, 100)...),
		"map32 of 4G":             append([]byte{0xdf, 0xff, 0xff, 0xff, 0xff}, make([]byte, 100)...),
		"map needs two per entry": {0x82, 1, 2, 3},
		"nested claim":            {0x91, 0x91, 0x81, 0xa1, 'k', 0xdb, 0x6c, 0x09, 0xc4, 0x30, 'x'},
		"fixext16 cut":            {0xd8, 1, 0, 0},
		"str16 length cut":        {0xda, 0x01},
	}
	for name, b := range invalid {
		if err := checkBody(b); err == nil {
			t.Errorf("%s: passed", name)
		}
	}
}

func TestCheckBodyDeepNesting(t *testing.T) {
	ok := append(bytes.Repeat([]byte{0x91}, MaxDepth), 0xc0)
	if end, err := valueEnd(ok); err != nil || end != len(ok) {
		t.Fatalf("%d levels: end %d, %v", MaxDepth, end, err)
	}
	const depth = 1 << 20
	b := append(bytes.Repeat([]byte{0x91}, depth), 0xc0)
	start := time.Now()
	if _, err := valueEnd(b); !errors.Is(err, mpsafe.ErrTooDeep) {
		t.Fatalf("%d levels: %v, want ErrTooDeep", depth, err)
	}
	if err := checkBody(b[:depth]); err == nil {
		t.Fatal("nesting without a leaf passed")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

// TestLyingHeadersDoNotAccumulate: msgpack grows a decoder's buffer towards
// the length a header claims and keeps it after the read fails. Frames with
// lying headers, decoded one after another by one long-lived decoder (as a
// Conn does) or by msgpack's pooled decoders (DecodeHello), must not make
// that buffer, or the work per frame, grow.
func TestLyingHeadersDoNotAccumulate(t *testing.T) {
	claim := []byte{0xdb, 0x6c, 0x09, 0xc4, 0x30} // str32 of ~1.8 GB
	reqHdr := mustEncode(t, func(e *msgpack.Encoder) error { return e.EncodeArrayLen(requestFields) })
	if reqHdr[0]&0xf0 != 0x90 || requestFields >= 15 {
		t.Fatalf("test assumes a fixarray request header, got %x", reqHdr)
	}
	nested := append(append([]byte{}, reqHdr...), bytes.Repeat([]byte{0xc0}, requestFields)...)
	nested[len(reqHdr)-1]++ // one trailing field ...
	nested = append(nested, append([]byte{0x91, 0x81, 0xa1, 'k'}, claim...)...)
	cases := map[string][]byte{
		"request string field":    append(append([]byte{}, reqHdr...), claim...),
		"request trailing nested": nested, // ... holding [ {"k": claim} ]
		"hello field":             append([]byte{0x81, 0xa4, 'n', 'a', 'm', 'e'}, claim...),
		"hello unknown field":     append([]byte{0x81, 0xa1, 'x'}, claim...),
	}
	for name, body := range cases {
		rd := bytes.NewReader(nil)
		dec := msgpack.NewDecoder(rd)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 60 {
			var err error
			if name[:5] == "hello" {
				_, err = DecodeHello(body)
			} else {
				rd.Reset(body)
				dec.Reset(rd)
				err = decodeRequestBody(dec, body, new(op.Request), &Names{})
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: %v, want ErrMalformed", name, err)
			}
		}
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
			t.Errorf("%s: 60 frames of %d bytes allocated %d MiB", name, len(body), n>>20)
		}
	}
}

// FuzzCheckBody checks valueEnd against msgpack's own Skip: both accept the
// same inputs and agree on where the value ends.
func FuzzCheckBody(f *testing.F) {
	f.Add([]byte{0x92, 0x01, 0xa1, 'x'})
	f.Add([]byte{0x81, 0xa1, 'k', 0xc7, 1, 2, 3})
	f.Add([]byte{0xdd, 0, 0, 0, 2, 0xd4, 1, 2, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(mustEncode(f, func(e *msgpack.Encoder) error { return EncodeRequest(e, seedRequests()[1]) }))
	f.Add([]byte{0xdb, 0x00, 0x00, 0x00, 0x02, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		end, err := valueEnd(b)
		if errors.Is(err, mpsafe.ErrTooDeep) {
			return // msgpack's Skip has no depth limit
		}
		want, werr := skipEnd(b) // a fresh decoder: bounded even for lying headers
		if (err == nil) != (werr == nil) || end != want {
			t.Fatalf("valueEnd = %d, %v; msgpack Skip = %d, %v", end, err, want, werr)
		}
	})
}

func TestInternerSharesNamesAndStaysBounded(t *testing.T) {
	var in Names
	decode := func(s string) string {
		t.Helper()
		b := mustEncode(t, func(e *msgpack.Encoder) error { return e.EncodeString(s) })
		got, err := in.decodeString(msgpack.NewDecoder(bytes.NewReader(b)))
		if err != nil || got != s {
			t.Fatalf("decode %q: got %q, %v", s, got, err)
		}
		return got
	}
	a, b := decode("orders"), decode("orders")
	if unsafe.StringData(a) != unsafe.StringData(b) {
		t.Error("the same name decoded twice is not shared")
	}
	decode("")
	long := strings.Repeat("x", internMaxLen+1)
	decode(long)
	if _, ok := in.strs[long]; ok {
		t.Error("a name longer than internMaxLen was interned")
	}
	for i := range internMaxCount + 10 {
		decode(fmt.Sprintf("name-%d", i))
	}
	if len(in.strs) > internMaxCount {
		t.Errorf("Names holds %d names, bound is %d", len(in.strs), internMaxCount)
	}
}
