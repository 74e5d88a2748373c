package locks

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestArgsRoundTrip(t *testing.T) {
	for _, a := range []args{{}, {limit: 1}, {attempt: 9}, {limit: maxHolds, attempt: 1<<64 - 1}} {
		got, err := decodeArgs(encodeArgs(a))
		if err != nil || got != a {
			t.Errorf("%+v: got %+v %v", a, got, err)
		}
	}
	for _, bad := range [][]byte{{0xff}, {1, 2, 3}, {0xff, 0xff, 0xff, 0xff, 0x7f}} {
		if _, err := decodeArgs(bad); err == nil {
			t.Errorf("%x accepted", bad)
		}
	}
}

func TestStatusRoundTrip(t *testing.T) {
	st := Status{Name: "L", Held: true, Mine: true, LeaseEnded: true, Holder: Holder{7, "me"}, Token: 1 << 60, Count: 3,
		LeaseEnd: time.Unix(0, 12345), Waiters: 2, Queue: []Holder{{1, "a"}, {2, ""}}}
	got, err := decodeStatus(encodeStatus(&st))
	if err != nil || !reflect.DeepEqual(got, st) {
		t.Fatalf("got %+v %v", got, err)
	}
	empty := Status{Name: "x"}
	if got, err := decodeStatus(encodeStatus(&empty)); err != nil || !reflect.DeepEqual(got, empty) {
		t.Fatalf("empty: %+v %v", got, err)
	}
	b := encodeStatus(&st)
	for i := range len(b) {
		if _, err := decodeStatus(b[:i]); err == nil {
			t.Fatalf("truncated status of %d bytes accepted", i)
		}
	}
	if _, err := decodeStatus(append(b, 0)); err == nil || !strings.Contains(err.Error(), "trailing") {
		t.Fatalf("trailing byte: %v", err)
	}
	b[0] = 9
	if _, err := decodeStatus(b); err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("bad version: %v", err)
	}
}

func TestEventRoundTrip(t *testing.T) {
	e := event{kind: eventSessionEnded, session: 3, owner: "o", token: 99}
	got, err := decodeEvent(encodeEvent(e))
	if err != nil || got != e {
		t.Fatalf("got %+v %v", got, err)
	}
	b := encodeEvent(e)
	b[1] = byte(eventEnd)
	if _, err := decodeEvent(b); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

func TestReaderRefusesLyingCounts(t *testing.T) {
	b := binary.AppendVarint([]byte{snapshotVersion}, 5)
	b = binary.AppendUvarint(b, 1<<40) // a billion locks in a few bytes
	if err := newState(0).Restore(time.Time{}, b); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("lying count: %v", err)
	}
	b = binary.AppendUvarint([]byte{statusVersion}, 1<<50) // a name longer than the payload
	if _, err := decodeStatus(b); err == nil {
		t.Fatal("lying string length accepted")
	}
}

// FuzzCodecs feeds arbitrary bytes to every decoder: none may panic or
// allocate beyond the input, and whatever decodes must re-encode to bytes
// that decode to the same value (snapshots: the same bytes).
func FuzzCodecs(f *testing.F) {
	h := &harness{t: &testing.T{}, s: newState(0), now: time.Unix(100, 0), owner: true}
	h.do(call{op: OpLock, name: "L", session: 1, owner: "a", num: 50})
	h.do(call{op: OpLock, name: "L", session: 2, owner: "b", timeout: time.Second, args: args{limit: 2, attempt: 5}})
	h.do(call{op: OpLock, name: "M", session: 3, owner: "c"})
	f.Add(byte(0), encodeSnapshot(h.s))
	f.Add(byte(0), encodeSnapshot(newState(0)))
	st := Status{Name: "L", Held: true, Holder: Holder{1, "a"}, Token: 5, Count: 1, Waiters: 1, Queue: []Holder{{2, "b"}}}
	f.Add(byte(1), encodeStatus(&st))
	f.Add(byte(2), encodeArgs(args{limit: 3, attempt: 4}))
	f.Add(byte(3), encodeEvent(event{kind: eventAcquired, session: 1, owner: "a", token: 2}))
	f.Fuzz(func(t *testing.T, kind byte, b []byte) {
		switch kind % 4 {
		case 0:
			s := newState(0)
			if err := s.Restore(time.Time{}, b); err != nil {
				if len(s.locks) != 0 || s.last != 0 {
					t.Fatal("failed restore changed the state")
				}
				return
			}
			again := encodeSnapshot(s)
			s2 := newState(0)
			if err := s2.Restore(time.Time{}, again); err != nil {
				t.Fatalf("re-encoded snapshot refused: %v", err)
			}
			if !bytes.Equal(encodeSnapshot(s2), again) {
				t.Fatal("snapshot not stable")
			}
		case 1:
			st, err := decodeStatus(b)
			if err != nil {
				return
			}
			st2, err := decodeStatus(encodeStatus(&st))
			if err != nil || !reflect.DeepEqual(st, st2) {
				t.Fatalf("status round trip: %+v %+v %v", st, st2, err)
			}
		case 2:
			a, err := decodeArgs(b)
			if err != nil {
				return
			}
			if a2, err := decodeArgs(encodeArgs(a)); err != nil || a2 != a {
				t.Fatalf("args round trip: %+v %+v %v", a, a2, err)
			}
		case 3:
			e, err := decodeEvent(b)
			if err != nil {
				return
			}
			if e2, err := decodeEvent(encodeEvent(e)); err != nil || e2 != e {
				t.Fatalf("event round trip: %+v %+v %v", e, e2, err)
			}
		}
	})
}
