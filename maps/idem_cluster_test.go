package maps_test

// Tests of idempotency stores on real in-process clusters (grid/gridtest),
// embedded and through the client: leases that end, sessions that end,
// Done and Release.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// idemSessionTTL is the session TTL of the members and the client whose
// end these tests wait for: short, yet long enough that a loaded machine
// does not end a session that still heartbeats.
const idemSessionTTL = 600 * time.Millisecond

// idemCluster starts 3 members running the idempotency-store service with
// the given session TTL (0: the default).
func idemCluster(t *testing.T, sessionTTL time.Duration) *gridtest.Cluster {
	t.Helper()
	return gridtest.New(t, 3, gridtest.WithServices(maps.IdemService{}), gridtest.WithConfig(func(c *grid.Config) {
		c.SessionTTL = sessionTTL
	}))
}

func idemDial(t *testing.T, cl *gridtest.Cluster, name string, sessionTTL time.Duration) *client.Client {
	t.Helper()
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addrs: addrs, Name: name, SessionTTL: sessionTTL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// claimable polls until s (another caller) claims id with a lease, and
// returns how long that took.
func claimable(t *testing.T, ctx context.Context, s *maps.IdempotencyStore, id string, lease time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		first, err := s.ClaimLease(ctx, id, lease)
		if err != nil {
			t.Fatalf("claim %s: %v", id, err)
		}
		if first {
			return time.Since(start)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never became claimable again", id)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func mustClaim(t *testing.T, ctx context.Context, s *maps.IdempotencyStore, id string, lease time.Duration, want bool) {
	t.Helper()
	var first bool
	var err error
	if lease > 0 {
		first, err = s.ClaimLease(ctx, id, lease)
	} else {
		first, err = s.Claim(ctx, id)
	}
	if err != nil || first != want {
		t.Fatalf("claim %s (lease %v) = %v, %v; want %v", id, lease, first, err, want)
	}
}

func mustSeen(t *testing.T, ctx context.Context, s *maps.IdempotencyStore, id string, seen, done bool) {
	t.Helper()
	gs, gd, err := s.Seen(ctx, id)
	if err != nil || gs != seen || gd != done {
		t.Fatalf("seen %s = %v, %v, %v; want %v, %v", id, gs, gd, err, seen, done)
	}
}

// TestIdemClusterLeases runs the two-phase protocol with two callers, a
// and b, embedded (two members) and through two clients.
func TestIdemClusterLeases(t *testing.T) {
	cl := idemCluster(t, 0)
	for _, tc := range []struct {
		name string
		invs func(t *testing.T) (op.Invoker, op.Invoker)
	}{
		{"embedded", func(*testing.T) (op.Invoker, op.Invoker) { return cl.Member(0), cl.Member(1) }},
		{"client", func(t *testing.T) (op.Invoker, op.Invoker) {
			return idemDial(t, cl, "idem-a", 0), idemDial(t, cl, "idem-b", 0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ia, ib := tc.invs(t)
			store := "in-" + tc.name
			a := maps.NewIdempotencyStore(ia, store, time.Hour)
			b := maps.NewIdempotencyStore(ib, store, time.Hour)

			// One-phase: exactly one first.
			mustClaim(t, ctx, a, "once", 0, true)
			mustClaim(t, ctx, b, "once", 0, false)
			mustClaim(t, ctx, a, "once", 0, false)
			mustSeen(t, ctx, b, "once", true, true)

			// A lease that ends makes the id claimable again, and the
			// old holder can no longer finish it.
			const lease = 200 * time.Millisecond
			claimed := time.Now()
			mustClaim(t, ctx, a, "lease", lease, true)
			mustClaim(t, ctx, b, "lease", lease, false)
			mustSeen(t, ctx, b, "lease", true, false)
			took := claimable(t, ctx, b, "lease", time.Hour)
			if since := time.Since(claimed); since < lease {
				t.Fatalf("reclaimed %v after the claim, before the %v lease ended", since, lease)
			}
			t.Logf("lease of %v: claimable again after %v of polling", lease, took.Round(time.Millisecond))
			if ok, err := a.Done(ctx, "lease"); err != nil || ok {
				t.Fatalf("old holder's Done after its lease = %v, %v; want false", ok, err)
			}
			if ok, err := b.Done(ctx, "lease"); err != nil || !ok {
				t.Fatalf("new holder's Done = %v, %v", ok, err)
			}

			// Done is permanent (until the TTL): past the lease, still a
			// duplicate, and Release by the holder no longer drops it.
			mustClaim(t, ctx, a, "done", lease, true)
			if ok, err := a.Done(ctx, "done"); err != nil || !ok {
				t.Fatalf("Done = %v, %v", ok, err)
			}
			past := time.Now().Add(2 * lease)
			for time.Now().Before(past) {
				mustClaim(t, ctx, b, "done", lease, false)
				select {
				case <-ctx.Done():
					t.Fatal(ctx.Err())
				case <-time.After(20 * time.Millisecond):
				}
			}
			mustSeen(t, ctx, b, "done", true, true)
			if ok, err := a.Release(ctx, "done"); err != nil || ok {
				t.Fatalf("Release of a done claim = %v, %v; want false", ok, err)
			}
			mustClaim(t, ctx, b, "done", 0, false)

			// Release lets a retry claim it at once; only the holder
			// can release.
			mustClaim(t, ctx, a, "rel", time.Hour, true)
			if ok, err := b.Release(ctx, "rel"); err != nil || ok {
				t.Fatalf("non-holder's Release = %v, %v; want false", ok, err)
			}
			mustClaim(t, ctx, b, "rel", time.Hour, false)
			if ok, err := a.Release(ctx, "rel"); err != nil || !ok {
				t.Fatalf("Release = %v, %v", ok, err)
			}
			mustSeen(t, ctx, b, "rel", false, false)
			mustClaim(t, ctx, b, "rel", time.Hour, true)
			mustClaim(t, ctx, a, "rel", time.Hour, false)

			// The TTL ends: a done id can be claimed again.
			short := maps.NewIdempotencyStore(ia, store+"-short", 300*time.Millisecond)
			shortB := maps.NewIdempotencyStore(ib, store+"-short", 300*time.Millisecond)
			mustClaim(t, ctx, short, "ttl", 0, true)
			mustClaim(t, ctx, shortB, "ttl", 0, false)
			took = claimable(t, ctx, shortB, "ttl", 100*time.Millisecond)
			t.Logf("TTL of 300ms: claimable again after %v of polling", took.Round(time.Millisecond))
		})
	}
}

// TestIdemClientSessionEnds: a client holding claims with hour-long
// leases stops without a goodbye (Close sends none); once its session
// ends, another client can claim the ids. Done claims survive it.
func TestIdemClientSessionEnds(t *testing.T) {
	cl := idemCluster(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder := idemDial(t, cl, "idem-holder", idemSessionTTL)
	other := idemDial(t, cl, "idem-other", 0)
	h := maps.NewIdempotencyStore(holder, "in", 2*time.Hour)
	o := maps.NewIdempotencyStore(other, "in", 2*time.Hour)
	const n = 20
	for i := range n {
		mustClaim(t, ctx, h, fmt.Sprintf("m-%d", i), time.Hour, true)
	}
	mustClaim(t, ctx, h, "finished", time.Hour, true)
	if ok, err := h.Done(ctx, "finished"); err != nil || !ok {
		t.Fatalf("Done = %v, %v", ok, err)
	}
	for i := range n {
		mustClaim(t, ctx, o, fmt.Sprintf("m-%d", i), time.Hour, false)
	}
	holder.Close()
	stopped := time.Now()
	first := claimable(t, ctx, o, "m-0", time.Hour)
	// The end of the session reaches each member's partitions in its own
	// time: poll for every id.
	for i := 1; i < n; i++ {
		claimable(t, ctx, o, fmt.Sprintf("m-%d", i), time.Hour)
	}
	mustClaim(t, ctx, o, "finished", time.Hour, false)
	mustSeen(t, ctx, o, "finished", true, true)
	t.Logf("client (session TTL %v) closed holding %d claims: first claimable again after %v, all %d after %v",
		idemSessionTTL, n, first.Round(time.Millisecond), n, time.Since(stopped).Round(time.Millisecond))
}

// TestIdemMemberSessionEnds: a member holding an embedded claim crashes;
// once its session ends another member can claim the id, also when the
// crashed member owned the id's partition.
func TestIdemMemberSessionEnds(t *testing.T) {
	cl := idemCluster(t, idemSessionTTL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := maps.NewIdempotencyStore(cl.Member(2), "in", 2*time.Hour)
	o := maps.NewIdempotencyStore(cl.Member(0), "in", 2*time.Hour)
	const n = 20
	victim, tbl := cl.Member(2), cl.Member(2).Table()
	ownedByVictim := 0
	for i := range n {
		id := fmt.Sprintf("m-%d", i)
		mustClaim(t, ctx, h, id, time.Hour, true)
		if owner, ok := tbl.Owner(victim.PartitionOf(id)); ok && owner.Name == victim.Name() {
			ownedByVictim++
		}
	}
	if ownedByVictim == 0 {
		t.Fatal("no id is on a partition of the member that crashes: the failover is not exercised")
	}
	cl.Crash(2)
	crashed := time.Now()
	first := claimable(t, ctx, o, "m-0", time.Hour)
	for i := 1; i < n; i++ {
		id := fmt.Sprintf("m-%d", i)
		claimable(t, ctx, o, id, time.Hour)
	}
	t.Logf("member (session TTL %v) crashed holding %d claims (%d on its own partitions): first claimable again after %v, all %d after %v",
		idemSessionTTL, n, ownedByVictim, first.Round(time.Millisecond), n, time.Since(crashed).Round(time.Millisecond))
}
