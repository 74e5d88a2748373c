package grid_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/locks"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/queues"
	"github.com/shoalgrid/shoal/quorum"
	"github.com/shoalgrid/shoal/sysop"
)

// TestMergeQueuesLocksAndReport: a member lets go of partitions it owned on
// the losing side of a split (structures without a quorum rule). Queue
// items offered there are appended on the winning side, the lock granted
// there is revoked and the winning side's tokens move above its token, map
// entries follow each map's policy, and the merge report (counts per
// structure and policy) reaches subscribers of the system stream through
// another member, the member's own event subscribers and its status.
func TestMergeQueuesLocksAndReport(t *testing.T) {
	c := gridtest.New(t, 3,
		gridtest.WithServices(queues.Service{}, locks.Service{}),
		gridtest.WithConfig(func(cfg *grid.Config) {
			cfg.Quorum = &quorum.Rule{Mode: quorum.Off}
			cfg.StructureMerge = []grid.StructureMerge{{Pattern: "cache", Policy: grid.MergePutIfAbsent}}
		}))
	ctx := ctxT(t, 60*time.Second)
	loser, other := c.Member(1), c.Member(2)
	reports := make(chan []byte, 4)
	stop, err := other.SubscribeEvents(ctx, sysop.Service, sysop.MergeStream, func(b []byte) { reports <- b })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	events, unsub := loser.Subscribe(64)
	defer unsub()

	// The winning side's state, written during the split.
	if err := queues.New(other, "jobs").Offer(ctx, []byte("w1")); err != nil {
		t.Fatal(err)
	}
	if err := maps.New(other, "cache").Put(ctx, "k1", []byte("winner")); err != nil {
		t.Fatal(err)
	}
	// The losing side's partitions, as the loser held them. Its owner's
	// clock ran an hour ahead: its lock tokens are above the winner's.
	ahead := time.Now().Add(time.Hour)
	pq, pl := loser.PartitionOf("jobs"), loser.PartitionOf("L")
	qs := queues.Service{}.NewState(pq)
	for _, it := range []string{"l1", "l2"} {
		qs.Apply(ahead, &op.Request{Op: queues.OpOffer, Name: "jobs", Key: "jobs", Value: []byte(it)})
	}
	ls := locks.Service{}.NewState(pl)
	lr := ls.Apply(ahead, &op.Request{Op: locks.OpTryLock, Name: "L", Key: "L", Value: []byte("o"), Origin: 99, CallSeq: 1})
	if !lr.Found {
		t.Fatalf("lock on the losing side: %+v", lr)
	}
	pc := loser.PartitionOf("k1")
	sameP := func(prefix string) string { // a key of partition pc
		for i := 0; ; i++ {
			if k := fmt.Sprintf("%s%d", prefix, i); loser.PartitionOf(k) == pc {
				return k
			}
		}
	}
	k2, u1 := sameP("k2-"), sameP("u1-")
	ms := maps.Service{}.NewState(pc)
	for _, kv := range [][3]string{{"cache", "k1", "loser"}, {"cache", k2, "loser"}, {"users", u1, "loser"}} {
		ms.Apply(ahead, &op.Request{Op: maps.OpPut, Name: kv[0], Key: kv[1], Value: []byte(kv[2])})
	}
	snaps := map[int32]map[string][]byte{}
	add := func(p int32, svc string, st op.State) {
		b, err := st.Snapshot(ahead)
		if err != nil {
			t.Fatal(err)
		}
		if snaps[p] == nil {
			snaps[p] = map[string][]byte{}
		}
		snaps[p][svc] = b
	}
	add(pq, queues.ServiceName, qs)
	add(pl, locks.ServiceName, ls)
	add(pc, maps.ServiceName, ms)
	loser.MergeOrphansForTest(loser.Table().Version, 6, snaps)

	// The report, through another member's subscription.
	var rep *sysop.MergeReport
	select {
	case b := <-reports:
		if rep, err = sysop.DecodeMergeReport(b); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("no merge report on the system stream")
	}
	want := []sysop.MergeCount{
		{Service: locks.ServiceName, Structure: "L", Policy: "revoke", Entries: 1, Discarded: 1},
		{Service: maps.ServiceName, Structure: "cache", Policy: "put-if-absent", Entries: 2, Stored: 1, Discarded: 1},
		{Service: maps.ServiceName, Structure: "users", Policy: "discard", Entries: 1, Discarded: 1},
		{Service: queues.ServiceName, Structure: "jobs", Policy: "append", Entries: 2, Stored: 2},
	}
	if rep.Member != loser.Name() || rep.Partitions != 3 || rep.Entries != 6 || !slices.Equal(rep.Structures, want) {
		t.Fatalf("merge report %+v\nwant structures %+v", rep, want)
	}
	for got := false; !got; {
		select {
		case ev := <-events:
			got = ev.Type == grid.MergeReported && ev.Merge != nil && slices.Equal(ev.Merge.Structures, want)
		case <-ctx.Done():
			t.Fatal("no MergeReported event")
		}
	}
	if n := loser.Stats().MergeReports; n != 1 {
		t.Fatalf("merge_reports = %d, want 1", n)
	}

	// The queue: the winner's item, then the loser's.
	var items []string
	for {
		it, ok, err := queues.New(other, "jobs").Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		items = append(items, string(it))
	}
	if !slices.Equal(items, []string{"w1", "l1", "l2"}) {
		t.Fatalf("queue after the merge: %v", items)
	}
	// The lock: the losing side's grant is revoked, the next token is
	// above the one it issued.
	tok, ok, err := locks.New(other, "L").TryLock(ctx)
	if err != nil || !ok {
		t.Fatalf("lock after the merge: %v, %v (the losing side's grant must not hold it)", ok, err)
	}
	if int64(tok) <= lr.Num {
		t.Fatalf("token %d after the merge, not above the losing side's %d", tok, lr.Num)
	}
	// The maps: put-if-absent kept the winner's k1 and added k2.
	for k, want := range map[string]string{"k1": "winner", k2: "loser"} {
		v, _, err := maps.New(other, "cache").Get(ctx, k)
		if err != nil || string(v) != want {
			t.Fatalf("cache %s = %q, %v; want %q", k, v, err, want)
		}
	}
	if _, found, _ := maps.New(other, "users").Get(ctx, u1); found {
		t.Fatal("a map with the discard policy was merged")
	}
}
