package replicated

import (
	"testing"

	"github.com/shoalgrid/shoal/op"
)

// FuzzMerge feeds arbitrary bytes to Merge (a peer's delta or diff): it
// must fail with an error or merge, never panic, and a message that fails
// must change nothing.
func FuzzMerge(f *testing.F) {
	_, d, _ := apply(newRep("b"), t0, OpPut, "m", "k", "v")
	_, d2, _ := apply(newRep("b"), t0, OpDelete, "m", "k", "")
	f.Add(d)
	f.Add(d2)
	f.Add([]byte{tagChanges, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, msg []byte) {
		r := newRep("a")
		apply(r, t0, OpPut, "m", "x", "y")
		before := r.Digest(t0)
		var x op.Exec
		x.Reset(t0, -1, false, nil)
		if err := r.Merge(&x, msg); err != nil {
			if string(r.Digest(t0)) != string(before) {
				t.Fatal("a refused message changed state")
			}
			return
		}
		// What merged can be listed and diffed.
		if _, _, err := r.Diff(t0, newRep("c").Digest(t0), 1<<20); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzDiff feeds arbitrary digests to Diff.
func FuzzDiff(f *testing.F) {
	r := newRep("a")
	apply(r, t0, OpPut, "m", "x", "y")
	f.Add(r.Digest(t0))
	f.Add([]byte{tagDigest, 1, 'm', 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, dig []byte) {
		_, _, _ = r.Diff(t0, dig, 1<<10)
	})
}

// FuzzDecode feeds arbitrary bytes to the decoders a client or a
// subscriber runs on a member's bytes.
func FuzzDecode(f *testing.F) {
	f.Add(encodeEvent(&Event{Type: Added, Key: "k", Value: []byte("v"), Version: Version{1, "a"}}))
	f.Add(encodeEntry(Version{1, "a"}, []byte("v")))
	f.Add([]byte{tagEntries, 1, 'k', 1, 1, 'a', 1, 'v'})
	f.Fuzz(func(t *testing.T, b []byte) {
		if ev, err := DecodeEvent(b); err == nil {
			if got, err := DecodeEvent(encodeEvent(&ev)); err != nil || got.Key != ev.Key || got.Version != ev.Version {
				t.Fatalf("event round trip: %+v, %v", got, err)
			}
		}
		_, _, _ = decodeEntry(b)
		_, _ = decodeEntries(b)
	})
}
