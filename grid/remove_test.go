package grid_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// TestRemoveDeadMember: an operator removes crashed members from the
// expected size. Removing a live member (or the member itself) is
// refused; a crashed one is removed through any member (the call is
// forwarded to the coordinator) while a quorum remains; without a quorum
// only a forced removal goes through, after which the survivor serves
// protected structures again.
func TestRemoveDeadMember(t *testing.T) {
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 90*time.Second)
	m0, m1, m2 := c.Member(0), c.Member(1), c.Member(2)
	n1, n2 := m1.Name(), m2.Name()
	if !m0.IsCoordinator() {
		t.Fatalf("%s is not the coordinator", m0.Name())
	}
	for _, name := range []string{n2, m0.Name(), ""} {
		if _, err := m0.RemoveMember(ctx, name, false); !errors.Is(err, op.ErrBadRequest) {
			t.Fatalf("removing %q (alive): %v, want ErrBadRequest", name, err)
		}
	}

	c.Crash(2)
	gridtest.Eventually(t, 30*time.Second, func() (bool, string) {
		return len(m0.Members()) == 2 && len(m1.Members()) == 2, "the survivors still see the crashed member"
	})
	if q := m0.QuorumView(); q.Expected != 3 || !m0.HasQuorum() {
		t.Fatalf("after one crash: %+v, quorum %v; want an expected size of 3 with a quorum", q, m0.HasQuorum())
	}
	v, err := m1.RemoveMember(ctx, n2, false) // forwarded to the coordinator
	if err != nil {
		t.Fatalf("remove %s: %v", n2, err)
	}
	if tb := m0.Table(); tb.Version < v || !slices.Equal(tb.Voters, []string{m0.Name(), n1}) {
		t.Fatalf("table %d after the removal (answered %d) has voters %v", tb.Version, v, tb.Voters)
	}
	gridtest.Eventually(t, 30*time.Second, func() (bool, string) {
		q0, q1 := m0.QuorumView(), m1.QuorumView()
		return q0.Expected == 2 && q1.Expected == 2, "expected sizes " + q0.String() + " / " + q1.String()
	})
	// Removing it again changes nothing.
	if _, err := m0.RemoveMember(ctx, n2, false); err != nil {
		t.Fatalf("second removal: %v", err)
	}

	c.Crash(1)
	gridtest.Eventually(t, 30*time.Second, func() (bool, string) {
		return !m0.HasQuorum(), "the survivor still has a quorum"
	})
	if err := maps.New(m0, "m").Put(ctx, "k", []byte("v")); !errors.Is(err, op.ErrQuorum) {
		t.Fatalf("put without a quorum: %v, want ErrQuorum", err)
	}
	if _, err := m0.RemoveMember(ctx, n1, false); !errors.Is(err, op.ErrQuorum) {
		t.Fatalf("unforced removal without a quorum: %v, want ErrQuorum", err)
	}
	if _, err := m0.RemoveMember(ctx, n1, true); err != nil {
		t.Fatalf("forced removal: %v", err)
	}
	if !m0.HasQuorum() || !slices.Equal(m0.Table().Voters, []string{m0.Name()}) {
		t.Fatalf("after the forced removal: quorum %v, voters %v", m0.HasQuorum(), m0.Table().Voters)
	}
	if err := maps.New(m0, "m").Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("put after the removal: %v", err)
	}
}
