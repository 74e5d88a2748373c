package queues_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/queues"
)

// A work queue on an embedded member: producers Offer, a consumer Takes an
// item, processes it and Acks it; an item that is not acknowledged in time
// (or whose consumer's process dies) is delivered again.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := grid.Start(ctx, grid.Config{
		Name:     "n1",
		BindAddr: "127.0.0.1:0",
		DataAddr: "127.0.0.1:0",
		Services: []op.Service{queues.Service{}},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Shutdown(context.Background())
	if err := m.WaitReady(ctx); err != nil {
		fmt.Println(err)
		return
	}

	// In a client program, pass a *client.Client instead of the member.
	orders := queues.New(m, "orders")
	for _, o := range []string{"order-1", "order-2"} {
		if err := orders.Offer(ctx, []byte(o)); err != nil {
			fmt.Println(err)
			return
		}
	}

	d, ok, err := orders.TakeWait(ctx, time.Second, queues.WithVisibility(time.Minute))
	if err != nil || !ok {
		fmt.Println(ok, err)
		return
	}
	fmt.Println("processing", string(d.Item), "delivery", d.Count)
	// Ack reports false when the delivery had already timed out and the
	// item went back to the queue.
	acked, err := d.Ack(ctx)
	fmt.Println("acknowledged:", acked, err)

	ready, inFlight, _ := orders.Len(ctx)
	fmt.Println("ready:", ready, "in flight:", inFlight)
	// Output:
	// processing order-1 delivery 1
	// acknowledged: true <nil>
	// ready: 1 in flight: 0
}
