//go:build process

package process_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/queues"
)

// TestQueueKillOwnerLosesNothing is the total-queue check under a crash:
// producers offer unique items and consumers Take+Ack them while the member
// owning the queue's partition is killed with SIGKILL. Every acknowledged
// offer must be delivered and acknowledged at least once, nothing may be
// invented, and redeliveries are counted (they may only concern items
// whose ack was not confirmed).
func TestQueueKillOwnerLosesNothing(t *testing.T) {
	ctx := ctxT(t, 120*time.Second)
	procs := startCluster(t, ctx, 3)
	sts := waitSettled(t, ctx, procs...)
	c := dial(t, ctx, procs...)
	const name = "work"
	q := queues.New(c, name)
	owner := sts[0].Table.Assignment[c.PartitionOf(name)]
	t.Logf("queue %q on partition %d, owned by %s", name, c.PartitionOf(name), owner)

	var (
		mu        sync.Mutex
		offered   = map[string]bool{} // item -> acknowledged (false: outcome unknown)
		received  = map[string]int{}
		acked     = map[string]bool{}
		ackFailed = map[string]int{} // item -> acks that failed or found it gone
	)
	stop := make(chan struct{})
	var producers, consumers sync.WaitGroup
	for p := range 4 {
		producers.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				item := fmt.Sprintf("p%d-%d", p, n)
				octx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := q.Offer(octx, []byte(item))
				cancel()
				mu.Lock()
				offered[item] = err == nil
				mu.Unlock()
				if err != nil && ctx.Err() != nil {
					return
				}
			}
		})
	}
	consumed := make(chan struct{})
	for range 4 {
		consumers.Go(func() {
			for {
				select {
				case <-consumed:
					return
				default:
				}
				tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				d, ok, err := q.TakeWait(tctx, 200*time.Millisecond, queues.WithVisibility(2*time.Second))
				if err != nil || !ok {
					cancel()
					if ctx.Err() != nil {
						return
					}
					continue
				}
				mu.Lock()
				received[string(d.Item)]++
				mu.Unlock()
				okAck, err := d.Ack(tctx)
				cancel()
				mu.Lock()
				if err == nil && okAck {
					acked[string(d.Item)] = true
				} else {
					ackFailed[string(d.Item)]++
				}
				mu.Unlock()
			}
		})
	}
	runFor(ctx, 2*time.Second)
	var victim = procs[0]
	for _, p := range procs {
		if p.Name == owner {
			victim = p
		}
	}
	killed := kill(t, ctx, victim)
	rest := without(procs, victim)
	res := (<-watchSettled(ctx, killed, rest...)).must(t, "kill -9 "+victim.Name)
	runFor(ctx, 2*time.Second)
	close(stop)
	producers.Wait()

	// Let the consumers finish the queue, then stop them.
	if err := waitEmpty(ctx, q); err != nil {
		t.Fatal(err)
	}
	close(consumed)
	consumers.Wait()

	mu.Lock()
	defer mu.Unlock()
	var ackedOffers, unknownOffers, lost, invented, redelivered int
	for item, ok := range offered {
		if ok {
			ackedOffers++
			if !acked[item] {
				lost++
				if lost <= 5 {
					t.Errorf("acknowledged offer %q never delivered and acknowledged", item)
				}
			}
		} else {
			unknownOffers++
		}
	}
	for item, n := range received {
		if _, ok := offered[item]; !ok {
			invented++
			t.Errorf("item %q delivered but never offered", item)
		}
		if n > 1 {
			redelivered++
			// Only an item whose earlier delivery was not acknowledged
			// may come again.
			if ackFailed[item] == 0 {
				t.Errorf("item %q delivered %d times, but no ack of it failed", item, n)
			}
		}
	}
	t.Logf("kill -9 of queue owner %s: settled %v after; offers acknowledged %d, outcome unknown %d; delivered %d distinct, redelivered %d, items with failed acks %d; lost %d, invented %d",
		victim.Name, res.took.Round(time.Millisecond), ackedOffers, unknownOffers, len(received), redelivered, len(ackFailed), lost, invented)
	if ackedOffers == 0 {
		t.Fatal("no offer was acknowledged: the test exercised nothing")
	}
}

// waitEmpty waits until q has no ready and no in-flight item.
func waitEmpty(ctx context.Context, q *queues.Queue) error {
	for {
		st, err := q.Stats(ctx)
		if err == nil && st.Ready == 0 && st.InFlight == 0 {
			return nil
		}
		if err != nil && !errors.Is(err, op.ErrTimeout) && ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("queue not drained: %+v %v", st, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// consumerEnv makes the test binary a consumer process that takes items
// without acknowledging them (see heldConsumer).
const consumerEnv = "SHOAL_TEST_HELD_CONSUMER"

// heldConsumer is the child process of TestConsumerKilledHoldingDeliveries:
// it takes every item of the queue named in consumerEnv ("addr queue n")
// without acknowledging, prints "held N", and blocks until killed.
func heldConsumer() int {
	var addr, name string
	var n int
	if _, err := fmt.Sscan(os.Getenv(consumerEnv), &addr, &name, &n); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	c, err := client.Dial(ctx, client.Config{Addrs: []string{addr}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	q := queues.New(c, name)
	for i := 0; i < n; i++ {
		// A long visibility timeout: only the end of this process's
		// session may return the items.
		if _, ok, err := q.TakeWait(ctx, 10*time.Second, queues.WithVisibility(time.Hour)); err != nil || !ok {
			fmt.Fprintln(os.Stderr, "take:", ok, err)
			return 1
		}
	}
	fmt.Printf("held %d\n", n)
	select {}
}

// TestConsumerKilledHoldingDeliveries kills (-9) a consumer process that
// holds deliveries with an hour-long visibility timeout: its session ends
// after the session TTL, and its items go to another consumer. The time
// from the kill to the redelivery is measured.
func TestConsumerKilledHoldingDeliveries(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	procs := startCluster(t, ctx, 3)
	waitSettled(t, ctx, procs...)
	c := dial(t, ctx, procs...)
	q := queues.New(c, "held")
	const n = 5
	for i := range n {
		if err := q.Offer(ctx, fmt.Appendf(nil, "item-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), consumerEnv+"="+fmt.Sprintf("%s held %d", procs[1].DataAddr, n))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != fmt.Sprintf("held %d\n", n) {
		t.Fatalf("consumer said %q, %v", line, err)
	}
	if st, err := q.Stats(ctx); err != nil || st.InFlight != n || st.Ready != 0 {
		t.Fatalf("before the kill: %+v %v", st, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	got := map[string]bool{}
	var first time.Duration
	for len(got) < n {
		d, ok, err := q.TakeWait(ctx, 30*time.Second)
		if err != nil || !ok {
			t.Fatalf("redelivery: %v %v (got %d of %d)", ok, err, len(got), n)
		}
		if first == 0 {
			first = time.Since(killed)
		}
		if d.Count != 2 {
			t.Errorf("item %q delivery count %d, want 2", d.Item, d.Count)
		}
		got[string(d.Item)] = true
		if _, err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("consumer killed holding %d deliveries: first redelivered %v after the kill, all %d after %v (session TTL %v)",
		n, first.Round(time.Millisecond), n, time.Since(killed).Round(time.Millisecond), grid.DefaultSessionTTL)
	if first > grid.DefaultSessionTTL+10*time.Second {
		t.Errorf("redelivery took %v", first)
	}
}
