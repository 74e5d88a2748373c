package mpsafe

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// nested returns an array nested depth levels deep around nil.
func nested(depth int) []byte {
	return append(bytes.Repeat([]byte{0x91}, depth), 0xc0)
}

// hidden hides a reader's type so Skip cannot see how much input is left.
type hidden struct{ r io.Reader }

func (h hidden) Read(p []byte) (int, error) { return h.r.Read(p) }

func TestValueEndBoundsDepth(t *testing.T) {
	for _, d := range []int{0, 1, 15, 16, 17, MaxDepth} {
		b := nested(d)
		if end, err := ValueEnd(b, MaxDepth); err != nil || end != len(b) {
			t.Errorf("depth %d: end %d, %v", d, end, err)
		}
	}
	// Maps count too, and so do containers that are not the first value.
	deepMap := append(bytes.Repeat([]byte{0x81, 0xc0}, MaxDepth+1), 0xc0)
	for name, b := range map[string][]byte{
		"arrays":          nested(MaxDepth + 1),
		"maps":            deepMap,
		"second element":  append([]byte{0x92, 0x01}, nested(MaxDepth)...),
		"five million":    nested(5_000_000),
		"in a later item": append(append([]byte{0x93, 0x91, 0xc0, 0x91, 0xc0}, bytes.Repeat([]byte{0x91}, MaxDepth)...), 0xc0),
	} {
		start := time.Now()
		if _, err := ValueEnd(b, MaxDepth); !errors.Is(err, ErrTooDeep) {
			t.Errorf("%s: %v, want ErrTooDeep", name, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: took %v", name, d)
		}
	}
	// Siblings at the limit are fine: depth, not the number of containers.
	wide := []byte{0xdc, 0x01, 0x00}
	for range 256 {
		wide = append(wide, nested(MaxDepth-1)...)
	}
	if end, err := ValueEnd(wide, MaxDepth); err != nil || end != len(wide) {
		t.Errorf("256 siblings at the limit: end %d, %v", end, err)
	}
}

func TestCheckSequence(t *testing.T) {
	if err := Check(append(nested(2), 0x01, 0xa1, 'x'), MaxDepth); err != nil {
		t.Errorf("three values: %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":        {},
		"cut second":   {0x01, 0xa2, 'x'},
		"deep second":  append([]byte{0x01}, nested(MaxDepth+1)...),
		"lying length": {0xc6, 0xff, 0xff, 0xff, 0xff, 1},
	} {
		if err := Check(b, MaxDepth); err == nil {
			t.Errorf("%s: passed", name)
		}
	}
}

// Skip must not recurse: five million levels (the frame that killed a
// member through msgpack's Skip) are refused at the limit, on an in-memory
// reader and on a stream alike.
func TestSkipDoesNotRecurse(t *testing.T) {
	b := nested(5_000_000)
	for name, r := range map[string]func() io.Reader{
		"bytes":  func() io.Reader { return bytes.NewReader(b) },
		"stream": func() io.Reader { return bufio.NewReader(hidden{bytes.NewReader(b)}) },
	} {
		if err := Skip(msgpack.NewDecoder(r()), MaxDepth); !errors.Is(err, ErrTooDeep) {
			t.Errorf("%s: %v, want ErrTooDeep", name, err)
		}
	}
	ok := append(append([]byte{0x92}, nested(MaxDepth-1)...), 0xa1, 'x', 0x07)
	r := bytes.NewReader(ok)
	if err := Skip(msgpack.NewDecoder(r), MaxDepth); err != nil || r.Len() != 1 {
		t.Fatalf("skip: %v, %d bytes left, want 1", err, r.Len())
	}
}

func TestSkipRefusesLyingLengths(t *testing.T) {
	for name, b := range map[string][]byte{
		"str32":   {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'},
		"bin32":   {0xc6, 0x7f, 0xff, 0xff, 0xff, 'a'},
		"array32": {0xdd, 0xff, 0xff, 0xff, 0xff, 1},
		"map32":   {0xdf, 0x0f, 0xff, 0xff, 0xff, 1},
	} {
		if err := Skip(msgpack.NewDecoder(bytes.NewReader(b)), MaxDepth); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: %v, want io.ErrUnexpectedEOF", name, err)
		}
	}
}

// FuzzSkip checks Skip and ValueEnd against each other and against
// msgpack's own Skip (within the depth limit).
func FuzzSkip(f *testing.F) {
	for _, v := range []any{nil, 1, "s", []byte("b"), []any{1, "x", []any{nil}}, map[string]any{"a": map[string]int{"b": 1}}, time.Unix(1, 2)} {
		b, err := msgpack.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(nested(MaxDepth + 1))
	f.Add([]byte{0xdb, 0x00, 0x00, 0x00, 0x02, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		end, err := ValueEnd(b, MaxDepth)
		r := bytes.NewReader(b)
		serr := Skip(msgpack.NewDecoder(r), MaxDepth)
		send := len(b) - r.Len()
		if (err == nil) != (serr == nil) || (err == nil && end != send) {
			t.Fatalf("% x: ValueEnd %d, %v; Skip %d, %v", b, end, err, send, serr)
		}
		if err != nil {
			return
		}
		r = bytes.NewReader(b)
		if merr := msgpack.NewDecoder(r).Skip(); merr != nil || len(b)-r.Len() != end {
			t.Fatalf("% x: ValueEnd %d; msgpack Skip %d, %v", b, end, len(b)-r.Len(), merr)
		}
	})
}
