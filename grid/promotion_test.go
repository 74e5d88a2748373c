package grid_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
)

// A backup added to a partition (after a promotion or a join) holds
// nothing until its owner's copy arrives. A coordinator that saw the owner
// depart used to promote such a backup like any other: in the partition
// loops test a coordinator that had been cut off came back, still saw one
// live member of the majority as dead, and made the other one owner of
// that member's partitions from backups that were still waiting for their
// copies: about a tenth of every acknowledged write was gone after the
// heal. Now a partial backup is promoted only when no complete replica is
// left and no departed holder answers, and the partition is then reported
// lost.
func TestPartialBackupNotPromotedWhileOwnerAnswers(t *testing.T) {
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 60*time.Second)
	m0 := c.Member(0)
	if !m0.IsCoordinator() {
		t.Fatalf("%s is not the coordinator", m0.Name())
	}
	tbl := m0.Table()
	// A partition owned by m1 and backed up by m2.
	m1, m2 := c.Member(1), c.Member(2)
	p := int32(-1)
	for q := range int32(tbl.Count) {
		if slices.Equal(tbl.ReplicaNames(q), []string{m1.Name(), m2.Name()}) {
			p = q
			break
		}
	}
	if p < 0 {
		t.Fatalf("no partition with replicas [%s %s]", m1.Name(), m2.Name())
	}
	key := keyIn(m0, p)
	mp := maps.New(m0, "m")
	if err := mp.Put(ctx, key, []byte("v")); err != nil {
		t.Fatal(err)
	}
	// m2 becomes a backup still waiting for its copy, and the
	// coordinator's failure detector declares the owner m1 dead while it
	// is alive.
	m2.EmptyReplicaForTest(p)
	rounds := m0.CoordinatorRoundsForTest()
	m0.ForgetMembersForTest(m1.Name())
	gridtest.Eventually(t, 20*time.Second, func() (bool, string) {
		n := m0.CoordinatorRoundsForTest()
		return n >= rounds+3, fmt.Sprintf("%d coordinator rounds since, want 3", n-rounds)
	})
	tb := m0.Table()
	if o, _ := tb.Owner(p); o.Name != m1.Name() || slices.Contains(tb.Lost, p) {
		t.Fatalf("partition %d: owner %s at table %d (lost %v); want %s, which answers, kept", p, o.Name, tb.Version, tb.Lost, m1.Name())
	}
	v, ok, err := mp.Get(ctx, key)
	if err != nil || !ok || string(v) != "v" {
		t.Fatalf("get %s = %q, %v, %v; want the acknowledged value", key, v, ok, err)
	}

	// When the owner is really gone, the partial backup is all that is
	// left: it is promoted, and the partition is reported lost.
	events, unsub := m0.Subscribe(64)
	defer unsub()
	m2.EmptyReplicaForTest(p)
	c.Crash(1)
	var lost *grid.PartitionLost
	for lost == nil {
		select {
		case ev := <-events:
			if ev.Type == grid.PartitionsLost && slices.Contains(ev.Lost.Partitions, p) {
				lost = ev.Lost
			}
		case <-ctx.Done():
			t.Fatalf("no partitions-lost event for partition %d", p)
		}
	}
	tb = m0.Table()
	if o, _ := tb.Owner(p); o.Name != m2.Name() || !slices.Contains(tb.Lost, p) {
		t.Fatalf("partition %d: owner %s at table %d (lost %v); want %s, reported lost", p, o.Name, tb.Version, tb.Lost, m2.Name())
	}
	if _, ok, err := mp.Get(ctx, key); err != nil || ok {
		t.Fatalf("get %s after the loss = %v, %v; want absent", key, ok, err)
	}
}

// A coordinator back from the minority side of a cut meets the majority's
// members one by one: here it sees m2 again (and regains its quorum) while
// its failure detector still holds the verdict it reached during the cut
// about m1, which is alive. It used to remove m1 at once and move m1's
// partitions to their backups (m1 then dropped its copies as orphaned and
// reported a merge). Verdicts reached before the quorum was regained are
// checked over the data connections first.
func TestStaleVerdictAfterQuorumRegainedKeepsLiveOwner(t *testing.T) {
	c := gridtest.New(t, 3)
	m0, m1, m2 := c.Member(0), c.Member(1), c.Member(2)
	if !m0.IsCoordinator() {
		t.Fatalf("%s is not the coordinator", m0.Name())
	}
	before := m0.Table()
	owned := before.Owned(m1.Name())
	if len(owned) == 0 {
		t.Fatalf("%s owns nothing", m1.Name())
	}
	// The cut: m0 declares both others dead and loses its quorum.
	infos := m0.FailMembersForTest(m1.Name(), m2.Name())
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
		return !m0.HasQuorum(), "m0 still has its quorum"
	})
	// The heal, seen partly: m2 is back, m1 not yet.
	var back []grid.MemberInfo
	for _, mi := range infos {
		if mi.Name == m2.Name() {
			back = append(back, mi)
		}
	}
	m0.RestoreMembersForTest(back...)
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
		return m0.HasQuorum(), "m0 has not regained its quorum"
	})
	rounds := m0.CoordinatorRoundsForTest()
	gridtest.Eventually(t, 20*time.Second, func() (bool, string) {
		n := m0.CoordinatorRoundsForTest()
		return n >= rounds+3, fmt.Sprintf("%d coordinator rounds since, want 3", n-rounds)
	})
	tb := m0.Table()
	if _, ok := tb.Member(m1.Name()); !ok {
		t.Fatalf("table %d dropped %s, which answers", tb.Version, m1.Name())
	}
	for _, p := range owned {
		if o, _ := tb.Owner(p); o.Name != m1.Name() {
			t.Fatalf("partition %d moved from %s to %s at table %d", p, m1.Name(), o.Name, tb.Version)
		}
	}
}

// An owner that the coordinator's failure detector declared dead while it
// is alive keeps serving until the new table reaches its backups. With two
// backups, one synchronous, a write it made after the coordinator read
// the replicas' positions could be acknowledged by the synchronous backup
// while the coordinator promoted the other (same position, preferred as
// the target owner): that acknowledged write was lost. The replicas are
// now sealed as they report: the owner's later writes are refused there
// and never acknowledged.
func TestOwnerCannotWriteAfterPositionsCollected(t *testing.T) {
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 60*time.Second)
	m0, m1 := c.Member(0), c.Member(1)
	if !m0.IsCoordinator() {
		t.Fatalf("%s is not the coordinator", m0.Name())
	}
	tbl := m0.Table()
	p := int32(-1)
	for q := range int32(tbl.Count) {
		if o, _ := tbl.Owner(q); o.Name == m1.Name() {
			p = q
			break
		}
	}
	if p < 0 {
		t.Fatalf("%s owns nothing", m1.Name())
	}
	key := keyIn(m0, p)
	// The owner's own proxy: its writes go straight to its partition.
	mp := maps.New(m1, "m")
	if err := mp.Put(ctx, key, []byte("before")); err != nil {
		t.Fatal(err)
	}
	type result struct{ err error }
	done := make(chan result, 1)
	var once sync.Once
	m0.AfterCollectForTest(func(promote []int32) {
		if !slices.Contains(promote, p) {
			return
		}
		once.Do(func() {
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			done <- result{mp.Put(wctx, key, []byte("after"))}
		})
	})
	m0.ForgetMembersForTest(m1.Name())
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("the coordinator never collected positions to promote the partition")
	}
	if r.err == nil {
		t.Fatalf("a write of the owner %s was acknowledged after the coordinator read the replicas' positions", m1.Name())
	}
	// The promoted owner has the value acknowledged before.
	gridtest.Eventually(t, 20*time.Second, func() (bool, string) {
		o, _ := m0.Table().Owner(p)
		return o.Name != m1.Name(), fmt.Sprintf("partition %d still owned by %s", p, o.Name)
	})
	v, ok, err := maps.New(m0, "m").Get(ctx, key)
	if err != nil || !ok || (string(v) != "before" && string(v) != "after") {
		t.Fatalf("get %s = %q, %v, %v", key, v, ok, err)
	}
}

// A member does not renew the quorum lease of a member it declared
// failed (its partitions are about to move): the lease pings of a falsely
// suspected owner are refused, so it stops serving protected structures
// once its lease lapses; liveness probes (the coordinator's check of old
// verdicts) are still answered.
func TestNoLeaseForMemberDeclaredFailed(t *testing.T) {
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 30*time.Second)
	m0, m1 := c.Member(0), c.Member(1)
	if err := m1.PingForTest(ctx, m0, true); err != nil {
		t.Fatalf("lease ping before: %v", err)
	}
	m0.FailMembersForTest(m1.Name())
	if err := m1.PingForTest(ctx, m0, true); err == nil {
		t.Fatal("lease ping of a member declared failed was answered")
	}
	if err := m1.PingForTest(ctx, m0, false); err != nil {
		t.Fatalf("liveness probe of a member declared failed: %v", err)
	}
}

// keyIn returns a key of partition p.
func keyIn(m *grid.Member, p int32) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("k%d", i); m.PartitionOf(k) == p {
			return k
		}
	}
}
