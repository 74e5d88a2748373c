package grid_test

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
)

// A member joins a cluster holding 100,000 entries while writers keep
// writing: migrations complete, no acknowledged write is lost, and callers
// see no error.
func TestJoinLoadedClusterUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 100,000 entries")
	}
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 120*time.Second)
	const n, size = 100_000, 100
	val := make([]byte, size)
	mp := maps.New(c.Member(0), "big")
	g, gctx := errgroup.WithContext(ctx)
	for w := range 16 {
		g.Go(func() error {
			for i := w; i < n; i += 16 {
				if err := mp.Put(gctx, fmt.Sprintf("k%06d", i), val); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	l := runWriters(t, ctx, []*grid.Member{c.Member(0), c.Member(1)}, 4, 100)
	before := statsSum(c)
	start := time.Now()
	c.Add()
	c.WaitStable()
	took := time.Since(start)
	after := statsSum(c)
	copies := after.MigrationsIn - before.MigrationsIn
	mb := float64(after.MigrationBytesOut-before.MigrationBytesOut) / 1e6
	t.Logf("join of a 4th member with %d entries: stable after %v, %d partition copies, %.1f MB copied (%.0f MB/s over the whole join)", n, took.Round(time.Millisecond), copies, mb, mb/took.Seconds())
	l.halt()
	l.verify(t, c.Member(3))
	if size, err := maps.New(c.Member(3), "big").Size(ctx); err != nil || size != n {
		t.Fatalf("size after join = %d, %v; want %d", size, err, n)
	}
}

func statsSum(c *gridtest.Cluster) grid.Stats {
	var s grid.Stats
	for _, m := range c.Live() {
		st := m.Stats()
		s.MigrationsIn += st.MigrationsIn
		s.MigrationsOut += st.MigrationsOut
		s.MigrationBytesOut += st.MigrationBytesOut
	}
	return s
}
