package maps_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// startIdemMember starts one embedded member running the idempotency-store
// service; a program would use a cluster (or a *client.Client) instead.
func startIdemMember(ctx context.Context) (*grid.Member, error) {
	m, err := grid.Start(ctx, grid.Config{
		Name:     "n1",
		BindAddr: "127.0.0.1:0",
		DataAddr: "127.0.0.1:0",
		Services: []op.Service{maps.Service{}, maps.IdemService{}},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	if err := m.WaitReady(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// An idempotent receiver: each message id is processed once, however many
// times (and on however many members) the message arrives.
func ExampleIdempotencyStore() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := startIdemMember(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Shutdown(context.Background())

	seen := maps.NewIdempotencyStore(m, "orders-in", 24*time.Hour)
	for _, id := range []string{"order-1", "order-2", "order-1"} {
		first, err := seen.Claim(ctx, id)
		switch {
		case err != nil:
			fmt.Println("error, retry later:", err) // never "duplicate"
		case !first:
			fmt.Println(id, "duplicate, dropped")
		default:
			fmt.Println(id, "processed")
		}
	}
	// Output:
	// order-1 processed
	// order-2 processed
	// order-1 duplicate, dropped
}

// Two-phase use for processing that can fail: claim with a lease, then
// Done (remembered until the TTL) or Release (a retry may claim it).
func ExampleIdempotencyStore_ClaimLease() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := startIdemMember(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Shutdown(context.Background())

	seen := maps.NewIdempotencyStore(m, "payments-in", 24*time.Hour)
	first, _ := seen.ClaimLease(ctx, "pay-7", time.Minute)
	fmt.Println("claimed:", first)
	inProgress, done, _ := seen.Seen(ctx, "pay-7")
	fmt.Println("seen:", inProgress, "done:", done)

	// Processing failed: release, so that the redelivery is processed.
	released, _ := seen.Release(ctx, "pay-7")
	fmt.Println("released:", released)

	first, _ = seen.ClaimLease(ctx, "pay-7", time.Minute)
	fmt.Println("claimed again:", first)
	ok, _ := seen.Done(ctx, "pay-7")
	fmt.Println("done:", ok)
	first, _ = seen.ClaimLease(ctx, "pay-7", time.Minute)
	fmt.Println("claimed after done:", first)
	// Output:
	// claimed: true
	// seen: true done: false
	// released: true
	// claimed again: true
	// done: true
	// claimed after done: false
}
