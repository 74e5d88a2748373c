package grid_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/partition"
)

// The coordinator was starved long enough for the others to declare it
// dead: another member coordinated, promoted the backup of a partition the
// coordinator owned, and that new owner acknowledged a write. Back in the
// gossip view (it is the oldest member, so it coordinates again), the old
// coordinator learns from a refused publication that a member follows a
// newer table. It must continue from that table, not republish its own
// older layout above it: that made it the partition's owner again with its
// stale copy (the promoted owner, demoted to backup, acknowledged the old
// owner's next records as duplicates), and the acknowledged write was lost.
// Seen as "146 acknowledged writes lost" and "size after join = 24197"
// in TestJoinLoadedClusterUnderLoad under heavy CPU load.
func TestCoordinatorBehindContinuesFromNewerTable(t *testing.T) {
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 60*time.Second)
	m0 := c.Member(0)
	if !m0.IsCoordinator() {
		t.Fatalf("%s is not the coordinator", m0.Name())
	}
	cur := m0.Table()
	owned := cur.Owned(m0.Name())
	if len(owned) == 0 {
		t.Fatalf("%s owns nothing", m0.Name())
	}
	p := owned[0]
	names := cur.ReplicaNames(p)
	if len(names) != 2 {
		t.Fatalf("partition %d has replicas %v, want an owner and one backup", p, names)
	}
	byName := map[string]*grid.Member{}
	var third string
	for _, m := range c.Live() {
		byName[m.Name()] = m
		if m.Name() != names[0] && m.Name() != names[1] {
			third = m.Name()
		}
	}
	backup, other := byName[names[1]], byName[third]
	key := func(prefix string) string {
		for i := 0; ; i++ {
			if k := fmt.Sprintf("%s%d", prefix, i); m0.PartitionOf(k) == p {
				return k
			}
		}
	}
	before, after := key("before-"), key("after-")
	if err := maps.New(m0, "m").Put(ctx, before, []byte("1")); err != nil {
		t.Fatal(err)
	}

	// The table the other coordinator published: the backup promoted,
	// the third member its new backup, a few versions ahead.
	replicas := make([][]string, cur.Count)
	for q := range replicas {
		replicas[q] = cur.ReplicaNames(int32(q))
	}
	replicas[p] = []string{backup.Name(), third}
	newer, err := partition.New(cur.Version+3, cur.Count, cur.Members, replicas)
	if err != nil {
		t.Fatal(err)
	}
	newer.Voters, newer.Epoch = cur.Voters, cur.Epoch
	for _, m := range []*grid.Member{backup, other} {
		if !m.AdoptTableForTest(newer) {
			t.Fatalf("%s refused table %d", m.Name(), newer.Version)
		}
	}
	// The promoted owner acknowledges a write (its new backup holds it).
	if err := maps.New(backup, "m").Put(ctx, after, []byte("2")); err != nil {
		t.Fatal(err)
	}
	// The old coordinator learns that a member is ahead of it.
	m0.PeerAheadForTest(newer.Version)
	c.WaitStable()

	if v := m0.Table().Version; v <= newer.Version {
		t.Fatalf("table %d after the round, want newer than %d", v, newer.Version)
	}
	for _, m := range c.Live() {
		for k, want := range map[string]string{before: "1", after: "2"} {
			v, ok, err := maps.New(m, "m").Get(ctx, k)
			if err != nil || !ok || string(v) != want {
				t.Errorf("get %s (partition %d) through %s at table %d (replicas %v): %q, found %v, %v; want %q",
					k, p, m.Name(), m.Table().Version, m.Table().ReplicaNames(p), v, ok, err, want)
			}
		}
	}
}
