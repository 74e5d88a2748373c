//go:build process

package process_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/internal/netcut"
	"github.com/shoalgrid/shoal/locks"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/sysop"
)

// TestPartitionNoLockOnMinority cuts member 3 (and a client next to it) off
// from members 1 and 2 with the default quorum guard (majority): the
// minority grants no lock, not even one whose partition member 3 owns,
// while the majority side keeps granting them; after the heal the
// majority's holder still holds its lock and its token is the newest, even
// when the record of its session was on the cut-off member.
func TestPartitionNoLockOnMinority(t *testing.T) {
	netcut.Skip(t)
	ctx := ctxT(t, 90*time.Second)
	procs := startClusterAt(t, ctx, 3)
	n1, n2, n3 := procs[0], procs[1], procs[2]
	minor := dialFrom(t, ctx, netcut.ClientAddr(1), n3)
	// The majority client's session record on member 3's side: the case
	// where its heartbeats must move to the record's new owner during the
	// cut, or its session (and its lock) ends.
	var major *client.Client
	for range 100 {
		c := dialFrom(t, ctx, netcut.ClientAddr(2), n1)
		tb := c.Table()
		if o, _ := tb.Owner(sysop.SessionPartition(c.Session(), tb.Count)); o.Name == n3.Name {
			major = c
			break
		}
		c.Close()
	}
	if major == nil {
		t.Fatal("no client session with its record on member 3 in 100 dials")
	}

	// A lock whose partition member 3 owns: the cut-off member could grant
	// it locally if nothing stopped it.
	name := keyOwnedBy(minor.Table(), "job-", n3)

	nc := netcut.New(t)
	if err := nc.Cut(append(ipsOf(n3), netcut.ClientAddr(1)), append(ipsOf(n1, n2), netcut.ClientAddr(2))); err != nil {
		t.Fatal(err)
	}
	waitQuorum(t, ctx, n3, false)

	// The minority: every attempt fails; none is granted.
	granted, refused, other := 0, 0, 0
	for range 20 {
		cctx, cancel := context.WithTimeout(ctx, partitionOpTimeout)
		_, ok, err := locks.New(minor, name).TryLock(cctx)
		cancel()
		switch {
		case err == nil && ok:
			granted++
		case errors.Is(err, op.ErrQuorum):
			refused++
		default:
			other++
		}
	}
	if granted != 0 {
		t.Fatalf("the minority granted %d locks", granted)
	}
	if refused == 0 {
		t.Errorf("no ErrQuorum from the minority (%d other errors)", other)
	}

	// The majority takes the lock over (member 3's partitions move to it).
	var token uint64
	if err := proctestPoll(ctx, func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, partitionOpTimeout)
		defer cancel()
		tok, ok, err := locks.New(major, name).TryLock(cctx)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("lock %s held", name)
		}
		token = tok
		return nil
	}); err != nil {
		t.Fatalf("majority could not lock %s during the cut: %v", name, err)
	}

	if err := nc.Heal(); err != nil {
		t.Fatal(err)
	}
	waitQuorum(t, ctx, n3, true)
	waitSettled(t, ctx, procs...)
	// After the heal the lock is still the majority's: the minority's side
	// has no grant to bring back, and the majority client's session
	// survived the cut even when the owner of its session record was on
	// the minority side (its heartbeats move to the new owner within a
	// third of the TTL).
	st, err := locks.New(minor, name).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Held || st.Token != token {
		t.Fatalf("after the heal: held %v token %d, want the majority's token %d", st.Held, st.Token, token)
	}
	t.Logf("minority: %d attempts refused with ErrQuorum, %d other errors, 0 granted; majority granted %s (token %d), still held after the heal", refused, other, name, token)
}

// proctestPoll retries f every 50 ms until it succeeds or ctx ends.
func proctestPoll(ctx context.Context, f func(context.Context) error) error {
	var err error
	for {
		if err = f(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
