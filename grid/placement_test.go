package grid_test

import (
	"slices"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/quorum"
)

// With zone-aware placement, the two replicas of every partition live in
// different zones.
func TestZoneAwarePlacementSeparatesReplicas(t *testing.T) {
	zones := []string{"a", "a", "b", "b"}
	c := gridtest.New(t, 4,
		gridtest.WithConfig(func(cfg *grid.Config) { cfg.Placement = partition.ZoneAware }),
		gridtest.WithMemberConfig(func(i int, cfg *grid.Config) { cfg.Zone = zones[i%len(zones)] }))
	tbl := c.Member(0).Table()
	for p := range int32(tbl.Count) {
		var zs []string
		for r := range tbl.ReplicaCount(p) {
			mb, _ := tbl.Replica(p, r)
			zs = append(zs, mb.Zone)
		}
		if len(zs) != 2 || zs[0] == zs[1] {
			t.Fatalf("partition %d replicas in zones %v", p, zs)
		}
	}
}

// Losing every replica of some partitions (two of three members at once
// with one backup) emits a partitions-lost event naming them, and those
// partitions work again, empty. Quorum is off: with the default majority
// rule the survivor would stop serving instead.
func TestPartitionLostEvent(t *testing.T) {
	c := gridtest.New(t, 3, gridtest.WithConfig(func(cfg *grid.Config) { cfg.Quorum = &quorum.Rule{Mode: quorum.Off} }))
	events, cancel := c.Member(0).Subscribe(64)
	defer cancel()
	ctx := ctxT(t, 30*time.Second)
	mp := maps.New(c.Member(0), "lost")
	fill(t, mp, 300)
	tbl := c.Member(0).Table()
	var both []int32 // partitions held only by members 1 and 2
	for p := range int32(tbl.Count) {
		names := tbl.ReplicaNames(p)
		if !slices.Contains(names, c.Member(0).Name()) {
			both = append(both, p)
		}
	}
	c.Crash(1)
	c.Crash(2)
	c.WaitStable()
	var lost *grid.PartitionLost
	for lost == nil {
		select {
		case ev := <-events:
			if ev.Type == grid.PartitionsLost {
				lost = ev.Lost
			}
		case <-ctx.Done():
			t.Fatal("no partitions-lost event")
		}
	}
	// Which partitions are lost depends on whether the cluster noticed the
	// first crash (and re-replicated onto member 0) before the second:
	// only partitions held by members 1 and 2 alone can be lost.
	if len(lost.Partitions) == 0 {
		t.Fatal("empty partitions-lost event")
	}
	for _, p := range lost.Partitions {
		if !slices.Contains(both, p) {
			t.Fatalf("partition %d reported lost but member 0 held a replica", p)
		}
	}
	t.Logf("%d of %d partitions held only by the crashed members were lost", len(lost.Partitions), len(both))
	for i := range 300 {
		if err := mp.Put(ctx, "k"+string(rune(i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
}
