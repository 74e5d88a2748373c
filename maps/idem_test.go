package maps

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

type idemPair struct {
	t             *testing.T
	owner, backup *idemState
	now           time.Time
}

func newIdemPair(t *testing.T) *idemPair {
	return &idemPair{t: t, owner: IdemService{}.NewState(3).(*idemState), backup: IdemService{}.NewState(3).(*idemState), now: time.Unix(1_800_000_000, 0)}
}

func (p *idemPair) do(code uint8, origin uint64, id string, num int64, aux []byte) *op.Response {
	p.t.Helper()
	req := &op.Request{Service: IdemServiceName, Name: "in", Key: id, Op: code, Num: num, Aux: aux, Origin: origin, CallSeq: 1}
	var x op.Exec
	x.Reset(p.now, 3, true, req)
	resp := p.owner.Execute(&x, req)
	if (IdemService{}).Mutates(code) {
		var y op.Exec
		y.Reset(p.now, 3, false, req)
		p.backup.Execute(&y, req)
		a, _ := p.owner.Snapshot(p.now)
		b, _ := p.backup.Snapshot(p.now)
		if !bytes.Equal(a, b) {
			p.t.Fatal("owner and backup diverged")
		}
	}
	return resp
}

func lease(ms uint64) []byte { return binary.AppendUvarint(nil, ms) }

func TestIdemClaimOnce(t *testing.T) {
	p := newIdemPair(t)
	if r := p.do(OpClaim, 1, "m1", 1000, nil); !r.Found {
		t.Fatal("first claim refused")
	}
	if r := p.do(OpClaim, 2, "m1", 1000, nil); r.Found || r.Num != claimDone {
		t.Fatalf("second claim = %+v", r)
	}
	// After the TTL the id can be claimed again.
	p.now = p.now.Add(time.Second)
	if r := p.do(OpClaim, 2, "m1", 1000, nil); !r.Found {
		t.Fatal("claim after TTL refused")
	}
}

func TestIdemTwoPhase(t *testing.T) {
	p := newIdemPair(t)
	if r := p.do(OpClaim, 1, "m", 60_000, lease(500)); !r.Found {
		t.Fatal("claim refused")
	}
	if r := p.do(OpClaim, 2, "m", 60_000, lease(500)); r.Found || r.Num != claimInProgress {
		t.Fatalf("concurrent claim = %+v", r)
	}
	if r := p.do(OpDone, 2, "m", 60_000, nil); r.Found {
		t.Fatal("non-holder marked done")
	}
	// Release lets a retry claim it.
	if r := p.do(OpRelease, 1, "m", 0, nil); !r.Found {
		t.Fatal("release failed")
	}
	if r := p.do(OpClaim, 2, "m", 60_000, lease(500)); !r.Found {
		t.Fatal("claim after release refused")
	}
	// The lease ends: claimable again, and the old holder's Done fails.
	p.now = p.now.Add(500 * time.Millisecond)
	if r := p.do(OpClaim, 3, "m", 60_000, lease(500)); !r.Found {
		t.Fatal("claim after lease end refused")
	}
	if r := p.do(OpDone, 2, "m", 0, nil); r.Found {
		t.Fatal("expired holder marked done")
	}
	if r := p.do(OpDone, 3, "m", 0, nil); !r.Found {
		t.Fatal("holder could not mark done")
	}
	// Done is permanent past the lease, until the TTL.
	p.now = p.now.Add(30 * time.Second)
	if r := p.do(OpClaim, 4, "m", 60_000, nil); r.Found || r.Num != claimDone {
		t.Fatalf("claim of done id = %+v", r)
	}
}

func TestIdemSessionEnded(t *testing.T) {
	p := newIdemPair(t)
	p.do(OpClaim, 7, "a", 60_000, lease(60_000))
	p.do(OpClaim, 7, "b", 60_000, nil) // one-phase: stays
	p.do(OpClaim, 8, "c", 60_000, lease(60_000))
	p.do(op.OpSessionEnded, 0, "", 7, nil)
	if r := p.do(OpClaim, 9, "a", 60_000, nil); !r.Found {
		t.Fatal("dead session's in-progress claim not freed")
	}
	if r := p.do(OpClaim, 9, "b", 60_000, nil); r.Found {
		t.Fatal("done claim freed by session end")
	}
	if r := p.do(OpClaim, 9, "c", 60_000, nil); r.Found {
		t.Fatal("live session's claim freed")
	}
}

func TestIdemBadInputAndSnapshot(t *testing.T) {
	p := newIdemPair(t)
	for _, c := range []struct {
		code uint8
		num  int64
		aux  []byte
		want error
	}{
		{OpClaim, 0, nil, op.ErrBadRequest},
		{OpClaim, 10, lease(20), op.ErrBadRequest},
		{OpClaim, 10, []byte{0xff}, op.ErrBadRequest},
		{99, 0, nil, op.ErrUnknownOp},
	} {
		if r := p.do(c.code, 1, "x", c.num, c.aux); !errors.Is(r.Err(), c.want) {
			t.Errorf("op %d num %d: %v", c.code, c.num, r.Err())
		}
	}
	p.do(OpClaim, 1, "x", 1000, lease(10))
	p.do(OpClaim, 1, "y", 1000, nil)
	snap, _ := p.owner.Snapshot(p.now)
	s := IdemService{}.NewState(3).(*idemState)
	if err := s.Restore(p.now, snap); err != nil || s.Len() != 2 {
		t.Fatalf("restore: %v len %d", err, s.Len())
	}
	if again, _ := s.Snapshot(p.now); !bytes.Equal(again, snap) {
		t.Fatal("snapshot round trip differs")
	}
	for _, bad := range [][]byte{nil, {2}, {1, 5}, append(snap[:len(snap):len(snap)], 1)} {
		if err := s.Restore(p.now, bad); !errors.Is(err, op.ErrBadRequest) {
			t.Errorf("restore %x: %v", bad, err)
		}
	}
	// Sweep reclaims only well-expired claims.
	if n := p.owner.Sweep(p.now.Add(2*time.Second), 10); n != 0 {
		t.Fatalf("swept %d claims inside the grace period", n)
	}
	if n := p.owner.Sweep(p.now.Add(idemSweepGrace+2*time.Second), 10); n != 2 {
		t.Fatalf("swept %d, want 2", n)
	}
}

func FuzzIdemRestore(f *testing.F) {
	p := newIdemPair(&testing.T{})
	p.do(OpClaim, 1, "x", 1000, lease(10))
	snap, _ := p.owner.Snapshot(p.now)
	f.Add(snap)
	f.Fuzz(func(t *testing.T, b []byte) {
		s := IdemService{}.NewState(0).(*idemState)
		if s.Restore(time.Time{}, b) != nil {
			return
		}
		again, _ := s.Snapshot(time.Time{})
		if err := (IdemService{}).NewState(0).Restore(time.Time{}, again); err != nil {
			t.Fatal(err)
		}
	})
}
