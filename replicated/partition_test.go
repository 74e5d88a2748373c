//go:build process

package replicated_test

// A network partition between in-process members, cut with iptables
// (internal/netcut; needs root, skipped otherwise): both sides keep taking
// writes to replicated maps; after the heal every member converges to the
// newest write of each key, and fires the events that get it there.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/internal/netcut"
	"github.com/shoalgrid/shoal/replicated"
)

// partAddr is member i's loopback address, away from the addresses the
// process tests use (netcut.Addr), so both can run at once.
func partAddr(i int) string { return fmt.Sprintf("127.0.0.%d", 141+i) }

func TestPartitionHeals(t *testing.T) {
	netcut.Skip(t)
	cl := cluster(t, 4, gridtest.WithMemberConfig(func(i int, c *grid.Config) {
		c.BindAddr = partAddr(i) + ":0"
		c.DataAddr = partAddr(i) + ":0"
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	members := cl.Live()
	w := watchAll(t, ctx, members, "conf")
	want := map[string]string{}
	put := func(m *grid.Member, k, v string) {
		t.Helper()
		if err := replicated.New(m, "conf").Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	for i := range 10 {
		put(members[i%4], fmt.Sprint("k", i), "before")
	}
	gridtest.Eventually(t, converge, func() (bool, string) { return converged(ctx, members, "conf", want) })

	a, b := members[:2], members[2:]
	nc := netcut.New(t)
	if err := nc.Cut([]string{partAddr(0), partAddr(1)}, []string{partAddr(2), partAddr(3)}); err != nil {
		t.Fatal(err)
	}
	sees := func(side []*grid.Member, n int) func() (bool, string) {
		return func() (bool, string) {
			for _, m := range side {
				if got := len(m.Members()); got != n {
					return false, fmt.Sprintf("%s sees %d members, want %d", m.Name(), got, n)
				}
			}
			return true, ""
		}
	}
	gridtest.Eventually(t, converge, sees(a, 2))
	gridtest.Eventually(t, converge, sees(b, 2))

	// Side a writes k0..k4 and deletes k5; side b then writes k3..k7
	// (later, so its writes of k3, k4, k5 win) and deletes k8.
	for i := range 5 {
		put(a[i%2], fmt.Sprint("k", i), "side-a")
	}
	if _, err := replicated.New(a[0], "conf").Delete(ctx, "k5"); err != nil {
		t.Fatal(err)
	}
	put(a[1], "only-a", "x")
	// Each side converges on its own.
	gridtest.Eventually(t, converge, func() (bool, string) { return converged(ctx, a, "conf", nil) })
	for i := 3; i < 8; i++ {
		put(b[i%2], fmt.Sprint("k", i), "side-b")
	}
	if _, err := replicated.New(b[1], "conf").Delete(ctx, "k8"); err != nil {
		t.Fatal(err)
	}
	delete(want, "k8")
	put(b[0], "only-b", "y")
	gridtest.Eventually(t, converge, func() (bool, string) { return converged(ctx, b, "conf", nil) })
	if v, ok, _ := replicated.New(a[0], "conf").Get(ctx, "k6"); !ok || string(v) != "before" {
		t.Fatalf("side a sees k6 = %q during the cut: the cut leaks", v)
	}

	if err := nc.Heal(); err != nil {
		t.Fatal(err)
	}
	gridtest.Eventually(t, 60*time.Second, func() (bool, string) { return converged(ctx, members, "conf", want) })
	events := map[string]string{}
	for k, v := range want {
		events[k] = v
	}
	events["k8"] = ""
	gridtest.Eventually(t, converge, func() (bool, string) { return w.agrees(events) })
}
