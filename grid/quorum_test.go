package grid_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// TestQuorumLostAfterCrashes crashes two of three members (default
// reliable profile: majority rule): the survivor refuses map operations
// with ErrQuorum saying how many members it sees and needs, reports and
// emits the loss, and publishes no table. A new member does not count (it
// might be joining a cut-off minority); a crashed member that comes back
// (same name, new address, empty) brings the quorum back.
func TestQuorumLostAfterCrashes(t *testing.T) {
	c := gridtest.New(t, 3, gridtest.WithMemberConfig(func(i int, cfg *grid.Config) {
		if i == 4 {
			cfg.Name = "m1" // the crashed m1, restarted
		}
	}))
	ctx := ctxT(t, 60*time.Second)
	m0 := c.Member(0)
	events, unsub := m0.Subscribe(64)
	defer unsub()
	mp := maps.New(m0, "users")
	// a key that m0 owns survives the crashes of the others
	key := ""
	for i := 0; key == ""; i++ {
		k := fmt.Sprintf("k%d", i)
		if o, _ := m0.Table().Owner(m0.PartitionOf(k)); o.Name == m0.Name() {
			key = k
		}
	}
	if err := mp.Put(ctx, key, []byte("1")); err != nil {
		t.Fatal(err)
	}
	if st := m0.Stats(); !st.Quorum || st.QuorumVisible != 3 || st.QuorumNeeded != 2 || st.ExpectedSize != 3 {
		t.Fatalf("stats before the crashes: %+v", st)
	}
	c.Crash(1)
	c.Crash(2)
	gridtest.Eventually(t, 20*time.Second, func() (bool, string) { return !m0.HasQuorum(), "survivor still claims quorum" })
	version := m0.Table().Version
	st := m0.Stats()
	if st.Quorum || st.QuorumVisible != 1 || st.QuorumNeeded != 2 || st.ExpectedSize != 3 {
		t.Fatalf("stats after the crashes: %+v", st)
	}
	for _, key := range []string{"a", "b", "c", "d", "e", "f"} {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := mp.Put(cctx, key, []byte("x"))
		cancel()
		if !errors.Is(err, op.ErrQuorum) || !strings.Contains(err.Error(), "1 of 3 members visible, 2 needed") {
			t.Fatalf("Put %s after losing 2 of 3: %v; want ErrQuorum saying 1 of 3 visible, 2 needed", key, err)
		}
	}
	if v := m0.Table().Version; v != version {
		t.Fatalf("the survivor published table %d without a quorum (had %d)", v, version)
	}
	var lost bool
	for !lost {
		select {
		case ev := <-events:
			if ev.Type == grid.QuorumLost {
				lost = true
				if ev.Quorum == nil || ev.Quorum.Live != 1 || ev.Quorum.Need != 2 {
					t.Fatalf("quorum-lost event: %+v", ev.Quorum)
				}
			}
		case <-ctx.Done():
			t.Fatal("no quorum-lost event")
		}
	}
	c.Add() // m3: joins, but no table includes it
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) { return len(m0.Members()) == 2, "m3 did not join" })
	if m0.HasQuorum() {
		t.Fatal("a member that no table includes gave the survivor its quorum")
	}
	c.Add() // m1 again
	gridtest.Eventually(t, 20*time.Second, func() (bool, string) { return m0.HasQuorum(), "quorum not regained" })
	c.WaitStable()
	if err := mp.Put(ctx, "b", []byte("2")); err != nil {
		t.Fatalf("Put after the quorum came back: %v", err)
	}
	if v, ok, err := mp.Get(ctx, key); err != nil || !ok || string(v) != "1" {
		t.Fatalf("Get %s = %q %v %v, want the write from before the crashes", key, v, ok, err)
	}
}

// TestQuorumKeptWhenScalingDown stops two of three members gracefully, one
// at a time: graceful leaves lower the expected size, so the last member
// keeps its quorum and every entry.
func TestQuorumKeptWhenScalingDown(t *testing.T) {
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 60*time.Second)
	m0 := c.Member(0)
	mp := maps.New(m0, "users")
	fill(t, mp, 100)
	c.Shutdown(2)
	c.WaitStable()
	c.Shutdown(1)
	c.WaitStable()
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
		st := m0.Stats()
		return st.Quorum && st.ExpectedSize == 1, "expected size not lowered"
	})
	if err := mp.Put(ctx, "new", []byte("v")); err != nil {
		t.Fatalf("Put on the last member after a graceful scale-down: %v", err)
	}
	n, err := mp.Size(ctx)
	if err != nil || n != 101 {
		t.Fatalf("Size = %d, %v; want 101", n, err)
	}
}
