package backup

import (
	"testing"
	"time"
)

func TestMarks(t *testing.T) {
	if seq, term, ok := ParseMark(Mark(7, 1<<63)); !ok || seq != 7 || term != 1<<63 {
		t.Fatalf("mark round trip: %d %d %v", seq, term, ok)
	}
	for _, b := range [][]byte{nil, make([]byte, 15)} {
		if _, _, ok := ParseMark(b); ok {
			t.Errorf("a %d-byte mark parsed", len(b))
		}
	}
	if term, ok := ParseTerm(Mark(9, 3)); !ok || term != 9 {
		t.Fatalf("term: %d %v", term, ok)
	}
	if _, ok := ParseTerm(make([]byte, 7)); ok {
		t.Error("a 7-byte term parsed")
	}
}

func TestAssembly(t *testing.T) {
	a := NewAssembly(time.Unix(5, 0))
	for _, c := range []struct {
		off   int64
		chunk string
		ok    bool
	}{
		{0, "abc", true},
		{3, "de", true},
		{3, "de", false}, // a repeated chunk
		{6, "x", false},  // a missing chunk
		{5, "f", true},
	} {
		if ok := a.Add(c.off, []byte(c.chunk)); ok != c.ok {
			t.Fatalf("Add(%d, %q) = %v, want %v", c.off, c.chunk, ok, c.ok)
		}
	}
	if string(a.Bytes()) != "abcdef" || !a.Started.Equal(time.Unix(5, 0)) {
		t.Fatalf("assembled %q", a.Bytes())
	}
}
