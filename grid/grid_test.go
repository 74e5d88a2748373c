package grid_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
)

func TestMain(m *testing.M) {
	// memberlist's Shutdown does not wait for a probe in flight: its
	// goroutine ends when the probe's timer fires, which under heavy CPU
	// load can be later than goleak's retries (seen once in 13 loaded runs
	// of TestJoinLoadedClusterUnderLoad: PASS, then exit status 1).
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestThreeMembersFormClusterAndAgree(t *testing.T) {
	c := gridtest.New(t, 3)
	t0 := c.Member(0).Table()
	for _, m := range c.Live() {
		if got := m.Table().Version; got != t0.Version {
			t.Fatalf("%s table %d, want %d", m.Name(), got, t0.Version)
		}
	}
	owned := 0
	for _, m := range c.Live() {
		n := len(t0.Owned(m.Name()))
		t.Logf("%s owns %d partitions", m.Name(), n)
		if n == 0 {
			t.Errorf("%s owns nothing", m.Name())
		}
		owned += n
	}
	if owned != t0.Count {
		t.Fatalf("owned %d partitions in all, want %d", owned, t0.Count)
	}
}

func TestPutThroughOneReadThroughOthers(t *testing.T) {
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 60*time.Second)
	const n = 10000
	m0 := maps.New(c.Member(0), "users")
	for i := range n {
		if err := m0.Put(ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprintf("v%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, mem := range c.Live() {
		mp := maps.New(mem, "users")
		size, err := mp.Size(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if size != n {
			t.Fatalf("size via %s = %d, want %d", mem.Name(), size, n)
		}
	}
	for _, i := range []int{1, 2} {
		mp := maps.New(c.Member(i), "users")
		for k := range n {
			v, ok, err := mp.Get(ctx, fmt.Sprintf("k%d", k))
			if err != nil || !ok || string(v) != fmt.Sprintf("v%d", k) {
				t.Fatalf("get k%d via member %d: %q %v %v", k, i, v, ok, err)
			}
		}
	}
}
