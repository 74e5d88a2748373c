package maps

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
	"github.com/shoalgrid/shoal/op"
)

var keySets = [][]string{
	nil,
	{},
	{""},
	{"a"},
	{"a", "b", "", "ünïcødé", "a"},
	{strings.Repeat("k", 40), strings.Repeat("x", 300), strings.Repeat("y", 70000)},
	func() []string {
		ks := make([]string, 70000) // array32 header
		for i := range ks {
			ks[i] = string(rune('a' + i%26))
		}
		return ks
	}(),
}

func TestKeysRoundTrip(t *testing.T) {
	for i, keys := range keySets {
		b := encodeKeys(keys)
		got, err := decodeKeys(b)
		if err != nil || !slices.Equal(got, keys) {
			t.Fatalf("set %d: round trip = %d keys, %v", i, len(got), err)
		}
		// The payload is plain msgpack of a []string, both ways.
		var std []string
		if err := msgpack.Unmarshal(b, &std); err != nil || !slices.Equal(std, keys) {
			t.Fatalf("set %d: msgpack.Unmarshal = %d keys, %v", i, len(std), err)
		}
		m, _ := msgpack.Marshal(keys)
		if got, err := decodeKeys(m); err != nil || !slices.Equal(got, keys) {
			t.Fatalf("set %d: decode of msgpack.Marshal = %d keys, %v", i, len(got), err)
		}
	}
}

func TestEntriesRoundTrip(t *testing.T) {
	sets := [][]kv{
		nil,
		{},
		{{"", nil}},
		{{"a", []byte{}}, {"b", []byte("2")}, {"c", nil}},
		{{"big", bytes.Repeat([]byte{7}, 70000)}, {strings.Repeat("k", 300), []byte("v")}},
	}
	for i, es := range sets {
		b := encodeEntries(es)
		got, err := decodeEntries(b)
		if err != nil || !equalKVs(got, es) {
			t.Fatalf("set %d: round trip = %v, %v", i, got, err)
		}
		for j := range got { // nil and empty stay apart
			if (got[j].value == nil) != (es[j].value == nil) {
				t.Fatalf("set %d entry %d: nil-ness changed", i, j)
			}
		}
		var std map[string][]byte
		if err := msgpack.Unmarshal(b, &std); err != nil || len(std) != len(es) {
			t.Fatalf("set %d: msgpack.Unmarshal = %v, %v", i, std, err)
		}
	}
	// Decoded values must not alias the payload.
	b := encodeEntries([]kv{{"k", []byte("value")}})
	got, _ := decodeEntries(b)
	got[0].value[0] = 'X'
	if again, _ := decodeEntries(b); string(again[0].value) != "value" {
		t.Fatal("decoded value aliases the payload")
	}
}

func TestDecodeGarbage(t *testing.T) {
	garbage := [][]byte{
		{},
		{0xc1},
		{0x91},                         // array of 1, no element
		{0x91, 0x01},                   // element not a string
		{0xdd, 0xff, 0xff, 0xff, 0xff}, // forged array count
		{0x91, 0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}, // forged str length
		{0x90, 0x00},      // trailing byte
		{0x81, 0xa1, 'k'}, // map without value
		{0x81, 0xa1, 'k', 0xc6, 0xff, 0xff, 0xff, 0xff}, // forged bin length
		{0xdf, 0xff, 0xff, 0xff, 0xff},                  // forged map count
	}
	for i, b := range garbage {
		if _, err := decodeKeys(b); err == nil && b[0]&0xf0 == 0x90 {
			t.Errorf("keys garbage %d (% x) decoded", i, b)
		}
		if _, err := decodeEntries(b); err == nil && b[0]&0xf0 == 0x80 {
			t.Errorf("entries garbage %d (% x) decoded", i, b)
		}
	}
	if ks, err := decodeKeys([]byte{0xc0}); err != nil || ks != nil {
		t.Errorf("nil key list: %v, %v", ks, err)
	}
	if es, err := decodeEntries([]byte{0xc0}); err != nil || es != nil {
		t.Errorf("nil entries: %v, %v", es, err)
	}
}

func TestWellFormed(t *testing.T) {
	type inner struct {
		A int
		B []string
		C map[string]float64
	}
	valid := []any{
		nil, true, false, 0, -1, -33, 127, 128, 1 << 20, -(1 << 40), uint64(1 << 63),
		1.5, float32(2.5), "", "short", strings.Repeat("s", 40), strings.Repeat("s", 300), strings.Repeat("s", 70000),
		[]byte{}, []byte("bin"), bytes.Repeat([]byte{1}, 300), bytes.Repeat([]byte{1}, 70000),
		[]int{}, []int{1, 2, 3}, make([]int, 20), make([]int, 70000),
		map[string]int{}, map[string]int{"a": 1}, inner{A: 1, B: []string{"x"}, C: map[string]float64{"p": 1}},
		time.Unix(1, 2), time.Unix(1<<40, 5), // ext types
		[]any{nil, "x", []any{map[string]any{"deep": []any{1}}}},
	}
	for _, v := range valid {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := wellFormed(b); err != nil {
			t.Errorf("%T %.40v: %v", v, v, err)
		}
	}
	for _, b := range [][]byte{
		{}, {0xc1}, {0x01, 0x02}, {0x92, 0x01}, {0xcd, 0x01}, {0xa3, 'a'},
		{0xc6, 0xff, 0xff, 0xff, 0xff}, {0xdd, 0xff, 0xff, 0xff, 0xff}, {0xdf, 0x80, 0, 0, 0},
		{0xd8, 0x01}, {0xc7, 0x05, 0x01, 0x00},
	} {
		if err := wellFormed(b); err == nil {
			t.Errorf("% x accepted", b)
		}
	}
}

func FuzzDecodeKeys(f *testing.F) {
	for _, ks := range keySets[:5] {
		f.Add(encodeKeys(ks))
	}
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := decodeKeys(b)
		if err != nil {
			return
		}
		again, err := decodeKeys(encodeKeys(keys))
		if err != nil || !slices.Equal(again, keys) {
			t.Fatalf("re-encode round trip: %q vs %q, %v", again, keys, err)
		}
	})
}

func FuzzDecodeEntries(f *testing.F) {
	f.Add(encodeEntries(nil))
	f.Add(encodeEntries([]kv{{"a", []byte{}}, {"b", []byte("2")}, {"c", nil}}))
	f.Add([]byte{0x81, 0xa1, 'k', 0xc6, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := decodeEntries(b)
		if err != nil {
			return
		}
		again, err := decodeEntries(encodeEntries(es))
		if err != nil || !equalKVs(again, es) {
			t.Fatalf("re-encode round trip: %v vs %v, %v", again, es, err)
		}
	})
}

func FuzzRestore(f *testing.F) {
	s := newTestState()
	s.Apply(t0, ptr(put("m", "a", "1", 0)))
	s.Apply(t0, ptr(put("m", "b", "2", 50)))
	s.Apply(t0, ptr(put("n", "a", "", 0)))
	snap, _ := s.Snapshot(t0)
	f.Add(snap)
	empty, _ := newTestState().Snapshot(t0)
	f.Add(empty)
	s.Apply(t0, &op.Request{Op: OpListen, Name: "m", Origin: 5, Num: 9, Aux: []byte{listenFlagValues}})
	s.Apply(t0, &op.Request{Op: OpListen, Name: "m", Origin: 6, Num: 1})
	listened, _ := s.Snapshot(t0)
	f.Add(listened)
	f.Add([]byte{0x92, 0x01, 0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := newTestState()
		if err := s.Restore(t0, b); err != nil {
			if s.Len() != 0 {
				t.Fatal("failed restore changed the state")
			}
			return
		}
		checkInvariants(t, s)
		// A restored state snapshots to a canonical form that restores to
		// itself.
		snap, err := s.Snapshot(t0)
		if err != nil {
			t.Fatal(err)
		}
		r := newTestState()
		if err := r.Restore(t0, snap); err != nil {
			t.Fatalf("restore of own snapshot: %v", err)
		}
		if snap2, _ := r.Snapshot(t0); !bytes.Equal(snap, snap2) || r.Len() != s.Len() {
			t.Fatal("snapshot not stable")
		}
	})
}

// FuzzWellFormed checks the validator against the msgpack decoder: a value is
// well formed exactly when the decoder can skip it with nothing left over.
func FuzzWellFormed(f *testing.F) {
	for _, v := range []any{nil, 1, "s", []byte("b"), []any{1, "x"}, map[string]int{"a": 1}, time.Unix(1, 2)} {
		b, _ := msgpack.Marshal(v)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := wellFormed(b)
		if errors.Is(err, mpsafe.ErrTooDeep) {
			return // msgpack's Skip has no depth limit
		}
		r := bytes.NewReader(b)
		d := msgpack.NewDecoder(r)
		serr := d.Skip()
		if serr == nil && r.Len() != 0 {
			serr = errors.New("trailing")
		}
		if (err == nil) != (serr == nil) {
			t.Fatalf("% x: wellFormed %v, Skip %v", b, err, serr)
		}
		_, _ = decodeValue[any](b)
		_, _ = decodeValue[[]byte](b)
	})
}

// A stored value is another client's bytes: one nested millions of levels
// deep must not overflow the stack of the client that reads it typed.
func TestDecodeValueRefusesDeepNesting(t *testing.T) {
	deep := append(bytes.Repeat([]byte{0x91}, 5_000_000), 0xc0)
	if _, err := decodeValue[any](deep); !errors.Is(err, mpsafe.ErrTooDeep) {
		t.Fatalf("deep value: %v, want ErrTooDeep", err)
	}
	ok := append(bytes.Repeat([]byte{0x91}, maxValueDepth), 0xc0)
	if _, err := decodeValue[any](ok); err != nil {
		t.Fatalf("%d levels: %v", maxValueDepth, err)
	}
}

// TestBatchGarbageChangesNothing sends malformed batch payloads: each is
// refused with op.ErrBadRequest and leaves the partition as it was (a
// put-all is all or none).
func TestBatchGarbageChangesNothing(t *testing.T) {
	s := newTestState()
	s.Apply(t0, &op.Request{Op: OpPut, Name: "m", Key: "k", Value: []byte("v")})
	good := encodeEntries([]kv{{key: "a", value: []byte("1")}, {key: "b", value: []byte("2")}})
	garbage := [][]byte{
		nil,
		{0xc1},
		good[:len(good)-1],                      // truncated: the first entry is whole
		append(append([]byte{}, good...), 0x00), // trailing byte
		{0xdf, 0xff, 0xff, 0xff, 0xff},          // forged map count
		{0x81, 0xa1, 'k', 0xc6, 0xff, 0xff, 0xff, 0xff}, // forged bin length
	}
	before, _ := s.Snapshot(t0)
	for i, b := range garbage {
		for _, code := range []uint8{OpPutAll, OpGetAll, OpDeleteAll} {
			r := s.Apply(t0, &op.Request{Op: code, Name: "m", Value: b})
			if r.Code != op.CodeBadRequest {
				t.Errorf("garbage %d, op %d: %+v, want a bad request", i, code, *r)
			}
		}
	}
	if r := s.Apply(t0, &op.Request{Op: OpPutAll, Name: "m", Value: good, Num: -1}); r.Code != op.CodeBadRequest {
		t.Errorf("negative TTL: %+v", *r)
	}
	if after, _ := s.Snapshot(t0); !bytes.Equal(before, after) {
		t.Fatal("a refused batch changed the state")
	}
}
