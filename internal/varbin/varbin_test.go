package varbin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func uv(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestReads runs one read over each input and checks the value, the error
// (nil, ErrTruncated, or a message part) and the bytes left.
func TestReads(t *testing.T) {
	overflow := append(bytes.Repeat([]byte{0xff}, 9), 0x7f) // 70 bits
	tests := []struct {
		name string
		in   []byte
		read func(*Reader) any
		want any
		err  string // "" no error, "truncated" ErrTruncated, else a message part
		left int
	}{
		{"byte", []byte{7, 8}, func(r *Reader) any { return r.Byte() }, byte(7), "", 1},
		{"byte empty", nil, func(r *Reader) any { return r.Byte() }, byte(0), "truncated", 0},
		{"bool 0", []byte{0}, func(r *Reader) any { return r.Bool() }, false, "", 0},
		{"bool 1", []byte{1, 9}, func(r *Reader) any { return r.Bool() }, true, "", 1},
		{"bool 2", []byte{2}, func(r *Reader) any { return r.Bool() }, false, "bad boolean 2", 0},
		{"bool empty", nil, func(r *Reader) any { return r.Bool() }, false, "truncated", 0},
		{"uvarint", uv(300), func(r *Reader) any { return r.Uvarint() }, uint64(300), "", 0},
		{"uvarint max", uv(1<<64 - 1), func(r *Reader) any { return r.Uvarint() }, uint64(1<<64 - 1), "", 0},
		{"uvarint cut", uv(300)[:1], func(r *Reader) any { return r.Uvarint() }, uint64(0), "truncated", 0},
		{"uvarint empty", nil, func(r *Reader) any { return r.Uvarint() }, uint64(0), "truncated", 0},
		{"uvarint overflow", overflow, func(r *Reader) any { return r.Uvarint() }, uint64(0), "overflows", 0},
		{"varint", binary.AppendVarint(nil, -300), func(r *Reader) any { return r.Varint() }, int64(-300), "", 0},
		{"varint cut", binary.AppendVarint(nil, -300)[:1], func(r *Reader) any { return r.Varint() }, int64(0), "truncated", 0},
		{"varint overflow", overflow, func(r *Reader) any { return r.Varint() }, int64(0), "overflows", 0},
		{"count", cat(uv(2), []byte{1, 2, 3, 4}), func(r *Reader) any { return r.Count(2) }, 2, "", 4},
		{"count exceeds", cat(uv(3), []byte{1, 2, 3, 4, 5}), func(r *Reader) any { return r.Count(2) }, 0, "count 3 exceeds the 5 bytes left", 0},
		{"count huge", uv(1 << 60), func(r *Reader) any { return r.Count(1) }, 0, "exceeds", 0},
		{"count min 0", cat(uv(1), []byte{1}), func(r *Reader) any { return r.Count(0) }, 1, "", 1},
		{"count cut", []byte{0x80}, func(r *Reader) any { return r.Count(1) }, 0, "truncated", 0},
		{"bytes", cat(uv(2), []byte("ab!")), func(r *Reader) any { return r.Bytes() }, []byte("ab"), "", 1},
		{"bytes empty", uv(0), func(r *Reader) any { return r.Bytes() }, []byte{}, "", 0},
		{"bytes short", cat(uv(4), []byte("abc")), func(r *Reader) any { return r.Bytes() }, []byte(nil), "truncated", 0},
		{"bytes huge", uv(1 << 60), func(r *Reader) any { return r.Bytes() }, []byte(nil), "truncated", 0},
		{"string", cat(uv(3), []byte("abc")), func(r *Reader) any { return r.String(3) }, "abc", "", 0},
		{"string over limit", cat(uv(3), []byte("abc")), func(r *Reader) any { return r.String(2) }, "", "length 3 exceeds the limit of 2", 0},
		{"string short", cat(uv(9), []byte("abc")), func(r *Reader) any { return r.String(100) }, "", "truncated", 0},
		{"string huge", uv(1 << 60), func(r *Reader) any { return r.String(1 << 30) }, "", "truncated", 0},
		{"next", []byte{1, 2, 3}, func(r *Reader) any { return r.Next(2) }, []byte{1, 2}, "", 1},
		{"next short", []byte{1, 2, 3}, func(r *Reader) any { return r.Next(4) }, []byte(nil), "truncated", 0},
		{"next negative", []byte{1}, func(r *Reader) any { return r.Next(-1) }, []byte(nil), "truncated", 0},
		{"done", nil, func(r *Reader) any { return r.Done() }, error(nil), "", 0},
		{"done trailing", []byte{1, 2}, func(r *Reader) any { r.Done(); return nil }, nil, "2 trailing bytes", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(tc.in)
			got := tc.read(&r)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
			checkErr(t, r.Err(), tc.err)
			if r.Len() != tc.left {
				t.Errorf("%d bytes left, want %d", r.Len(), tc.left)
			}
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "":
		if err != nil {
			t.Errorf("error %v", err)
		}
	case want == "truncated":
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("error %v, want ErrTruncated", err)
		}
	case err == nil || !strings.Contains(err.Error(), want):
		t.Errorf("error %v, want one saying %q", err, want)
	}
}

// TestSticky checks that after the first error every read returns zero,
// consumes nothing, and the first error is the one reported.
func TestSticky(t *testing.T) {
	in := cat([]byte{5}, uv(1), []byte("x"), uv(3))
	r := NewReader(in)
	first := errors.New("first")
	r.Fail(first)
	r.Fail(errors.New("second"))
	if r.Byte() != 0 || r.Bool() || r.Uvarint() != 0 || r.Varint() != 0 || r.Count(1) != 0 ||
		r.Bytes() != nil || r.String(10) != "" || r.Next(1) != nil || r.Len() != 0 {
		t.Fatal("a read after an error returned something")
	}
	if err := r.Done(); err != first {
		t.Fatalf("Done = %v, want the first error", err)
	}
	// A read error sticks the same way: the bytes after it are not read.
	r = NewReader([]byte{2, 7})
	r.Bool()
	if r.Byte() != 0 || !strings.Contains(r.Done().Error(), "bad boolean") {
		t.Fatalf("read after a bad boolean: %v", r.Err())
	}
}

// TestSequence reads back what the append functions wrote.
func TestSequence(t *testing.T) {
	var b []byte
	b = append(b, 9)
	b = AppendBool(b, true)
	b = AppendBool(b, false)
	b = binary.AppendUvarint(b, 1<<40)
	b = binary.AppendVarint(b, -5)
	b = AppendString(b, "name")
	b = AppendBytes(b, []byte{0, 1})
	b = AppendBytes(b, nil)
	b = binary.AppendUvarint(b, 2)
	b = AppendString(b, "")
	b = AppendString(b, "z")
	r := NewReader(b)
	if r.Byte() != 9 || !r.Bool() || r.Bool() || r.Uvarint() != 1<<40 || r.Varint() != -5 ||
		r.String(4) != "name" || !bytes.Equal(r.Bytes(), []byte{0, 1}) || len(r.Bytes()) != 0 {
		t.Fatalf("read back wrong: %v", r.Err())
	}
	n := r.Count(1)
	var got []string
	for range n {
		got = append(got, r.String(1))
	}
	if err := r.Done(); err != nil || !reflect.DeepEqual(got, []string{"", "z"}) {
		t.Fatalf("got %q, %v", got, err)
	}
	// Every shorter prefix fails, and nothing panics.
	for i := range len(b) {
		r := NewReader(b[:i])
		r.Byte()
		r.Bool()
		r.Bool()
		r.Uvarint()
		r.Varint()
		r.String(4)
		r.Bytes()
		r.Bytes()
		for range r.Count(1) {
			r.String(1)
		}
		if r.Done() == nil {
			t.Fatalf("prefix of %d bytes accepted", i)
		}
	}
}

// TestBytesAliases checks that Bytes shares the input and cannot be
// appended over what follows it.
func TestBytesAliases(t *testing.T) {
	in := cat(uv(2), []byte("abcd"))
	r := NewReader(in)
	p := r.Bytes()
	p[0] = 'X'
	if in[1] != 'X' {
		t.Fatal("Bytes copied the input")
	}
	_ = append(p, '!')
	if in[3] != 'c' {
		t.Fatal("appending to a Bytes result overwrote the input")
	}
}

// TestForgedLengthsDoNotAllocate checks that a forged count or length is
// refused before anything of its size is allocated: the error is all a
// refusal allocates (a few allocations, a few hundred bytes at most).
func TestForgedLengthsDoNotAllocate(t *testing.T) {
	forged := cat(uv(1<<60), []byte("abc"))
	for name, read := range map[string]func(*Reader){
		"count":  func(r *Reader) { _ = make([]int, 0, r.Count(1)) },
		"bytes":  func(r *Reader) { r.Bytes() },
		"string": func(r *Reader) { _ = r.String(1 << 62) },
	} {
		var r Reader
		run := func() {
			r = NewReader(forged)
			read(&r)
		}
		allocs := testing.AllocsPerRun(100, run)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 100 {
			run()
		}
		runtime.ReadMemStats(&after)
		if r.Err() == nil {
			t.Errorf("%s: forged length accepted", name)
		}
		if perRun := (after.TotalAlloc - before.TotalAlloc) / 100; allocs > 4 || perRun > 512 {
			t.Errorf("%s: %v allocations, %d bytes a refusal", name, allocs, perRun)
		}
	}
}

// FuzzReader interprets the first bytes of the input as a program of reads
// over the rest: no read may panic, a failed reader must stay failed, and
// every read must consume at most what is left.
func FuzzReader(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8}, cat(uv(1), []byte{1}, uv(3), []byte("abc")))
	f.Add([]byte{5, 5, 5}, uv(1<<60))
	f.Add([]byte{2, 3, 4}, bytes.Repeat([]byte{0xff}, 12))
	f.Fuzz(func(t *testing.T, prog, in []byte) {
		r := NewReader(in)
		for _, op := range prog {
			before, failed := r.Len(), r.Err() != nil
			switch op % 9 {
			case 0:
				r.Byte()
			case 1:
				r.Bool()
			case 2:
				r.Uvarint()
			case 3:
				r.Varint()
			case 4:
				if n := r.Count(int(op>>4) + 1); n*(int(op>>4)+1) > r.Len() {
					t.Fatalf("count %d of %d-byte elements with %d bytes left", n, op>>4+1, r.Len())
				}
			case 5:
				if p := r.Bytes(); len(p) > before || cap(p) != len(p) {
					t.Fatalf("%d bytes (cap %d) read from %d", len(p), cap(p), before)
				}
			case 6:
				if s := r.String(int(op >> 3)); len(s) > int(op>>3) {
					t.Fatalf("string of %d bytes over the limit %d", len(s), op>>3)
				}
			case 7:
				r.Next(int(op >> 4))
			case 8:
				r.Done()
			}
			if r.Len() > before {
				t.Fatalf("op %d: %d bytes left, %d before", op, r.Len(), before)
			}
			if failed && r.Err() == nil {
				t.Fatal("an error went away")
			}
		}
	})
}
