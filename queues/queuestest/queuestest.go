// Package queuestest is the conformance suite for queues: the same tests
// run against any op.Invoker (embedded members, remote clients), so both
// modes are held to one behaviour. The cluster under test must register
// queues.Service{Rules: queuestest.Rules}.
package queuestest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/queues"
)

// Rules are the queue rules the suite's cluster must be configured with.
var Rules = []queues.Rule{
	{Pattern: "bounded-*", Capacity: 2},
	{Pattern: "vis-*", Visibility: 300 * time.Millisecond},
	{Pattern: "dlq-*", MaxDeliveries: 2},
	{Pattern: "events-*", ItemEvents: true},
}

// Run runs the suite. invokers must return at least two invokers attached
// to the same cluster (through different members where possible).
func Run(t *testing.T, invokers func(t *testing.T) []op.Invoker) {
	invs := invokers(t)
	if len(invs) < 2 {
		t.Fatal("queuestest: need at least two invokers")
	}
	a, b := invs[0], invs[len(invs)-1]
	ctx := func(t *testing.T) context.Context {
		c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		t.Cleanup(cancel)
		return c
	}

	t.Run("FIFO", func(t *testing.T) {
		ctx := ctx(t)
		qa, qb := queues.New(a, "fifo"), queues.New(b, "fifo")
		for i := range 20 {
			if err := qa.Offer(ctx, fmt.Appendf(nil, "%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		if n, _, err := qb.Len(ctx); err != nil || n != 20 {
			t.Fatalf("len = %d %v", n, err)
		}
		if v, ok, err := qb.Peek(ctx); err != nil || !ok || string(v) != "0" {
			t.Fatalf("peek = %q %v %v", v, ok, err)
		}
		for i := range 20 {
			v, ok, err := qb.Poll(ctx)
			if err != nil || !ok || string(v) != fmt.Sprint(i) {
				t.Fatalf("poll %d = %q %v %v", i, v, ok, err)
			}
		}
		if _, ok, err := qa.Poll(ctx); err != nil || ok {
			t.Fatalf("poll on empty = %v %v", ok, err)
		}
	})

	t.Run("PollWaitWokenByOffer", func(t *testing.T) {
		ctx := ctx(t)
		qa, qb := queues.New(a, "wake"), queues.New(b, "wake")
		got := make(chan string, 2)
		var wg sync.WaitGroup
		wg.Go(func() {
			v, ok, err := qa.PollWait(ctx, 30*time.Second)
			if err != nil || !ok {
				got <- fmt.Sprintf("error %v %v", ok, err)
				return
			}
			got <- string(v)
		})
		// Offer only once the waiter is parked on the owner, so the
		// test exercises the wake-up, not a lucky poll.
		waitFor(ctx, t, func() bool {
			st, err := qb.Stats(ctx)
			return err == nil && st.WaitingTakers == 1
		})
		if err := qb.Offer(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if v := <-got; v != "x" {
			t.Fatalf("waiter got %s", v)
		}
	})

	t.Run("PollWaitTimesOut", func(t *testing.T) {
		ctx := ctx(t)
		q := queues.New(a, "timeout")
		start := time.Now()
		v, ok, err := q.PollWait(ctx, 200*time.Millisecond)
		if err != nil || ok {
			t.Fatalf("poll wait on empty = %q %v %v", v, ok, err)
		}
		if el := time.Since(start); el < 150*time.Millisecond || el > 10*time.Second {
			t.Fatalf("wait took %v", el)
		}
		// The timed-out waiter is gone: an item offered now is kept.
		if err := queues.New(b, "timeout").Offer(ctx, []byte("kept")); err != nil {
			t.Fatal(err)
		}
		if v, ok, err := q.Poll(ctx); err != nil || !ok || string(v) != "kept" {
			t.Fatalf("item offered after a timed-out wait = %q %v %v", v, ok, err)
		}
	})

	t.Run("CancelledWaiterGetsNothing", func(t *testing.T) {
		ctx := ctx(t)
		q := queues.New(a, "cancel")
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, _, err := q.PollWait(wctx, 0)
			done <- err
		}()
		waitFor(ctx, t, func() bool {
			st, err := q.Stats(ctx)
			return err == nil && st.WaitingTakers == 1
		})
		cancel()
		if err := <-done; err == nil {
			t.Fatal("cancelled wait returned no error")
		}
		// The cancel travels to the owner, which removes the waiter.
		waitFor(ctx, t, func() bool {
			st, err := q.Stats(ctx)
			return err == nil && st.WaitingTakers == 0
		})
		if err := queues.New(b, "cancel").Offer(ctx, []byte("mine")); err != nil {
			t.Fatal(err)
		}
		v, ok, err := q.Poll(ctx)
		if err != nil || !ok || string(v) != "mine" {
			t.Fatalf("item after a cancelled wait = %q %v %v", v, ok, err)
		}
	})

	t.Run("TakeAckNack", func(t *testing.T) {
		ctx := ctx(t)
		qa, qb := queues.New(a, "take"), queues.New(b, "take")
		for _, s := range []string{"a", "b"} {
			if err := qa.Offer(ctx, []byte(s)); err != nil {
				t.Fatal(err)
			}
		}
		d, ok, err := qb.Take(ctx)
		if err != nil || !ok || string(d.Item) != "a" || d.Count != 1 {
			t.Fatalf("take = %+v %v %v", d, ok, err)
		}
		if r, f, err := qa.Len(ctx); err != nil || r != 1 || f != 1 {
			t.Fatalf("len = %d ready %d in flight %v", r, f, err)
		}
		if ok, err := d.Nack(ctx); err != nil || !ok {
			t.Fatalf("nack = %v %v", ok, err)
		}
		d, ok, err = qa.Take(ctx)
		if err != nil || !ok || string(d.Item) != "a" || d.Count != 2 {
			t.Fatalf("redelivery = %+v %v %v", d, ok, err)
		}
		if ok, err := d.Ack(ctx); err != nil || !ok {
			t.Fatalf("ack = %v %v", ok, err)
		}
		if ok, err := d.Ack(ctx); err != nil || ok {
			t.Fatalf("second ack = %v %v", ok, err)
		}
		d, ok, err = qb.TakeWait(ctx, time.Second)
		if err != nil || !ok || string(d.Item) != "b" {
			t.Fatalf("take b = %+v %v %v", d, ok, err)
		}
		if _, err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("VisibilityTimeoutRedelivers", func(t *testing.T) {
		ctx := ctx(t)
		q := queues.New(a, "vis-1")
		if err := q.Offer(ctx, []byte("v")); err != nil {
			t.Fatal(err)
		}
		d, ok, err := q.Take(ctx)
		if err != nil || !ok {
			t.Fatalf("take = %v %v", ok, err)
		}
		// The owner's replicated timer returns it after 300 ms; a waiting
		// taker gets it then.
		d2, ok, err := queues.New(b, "vis-1").TakeWait(ctx, 20*time.Second)
		if err != nil || !ok || string(d2.Item) != "v" || d2.Count != 2 {
			t.Fatalf("redelivered = %+v %v %v", d2, ok, err)
		}
		if ok, err := d.Ack(ctx); err != nil || ok {
			t.Fatalf("late ack of the first delivery = %v %v", ok, err)
		}
		if ok, err := d2.Ack(ctx); err != nil || !ok {
			t.Fatalf("ack = %v %v", ok, err)
		}
	})

	t.Run("DeadLetters", func(t *testing.T) {
		ctx := ctx(t)
		q := queues.New(a, "dlq-1")
		if err := q.Offer(ctx, []byte("poison")); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			d, ok, err := q.Take(ctx)
			if err != nil || !ok {
				t.Fatalf("take %d = %v %v", i, ok, err)
			}
			if _, err := d.Nack(ctx); err != nil {
				t.Fatal(err)
			}
		}
		v, ok, err := queues.New(b, "dlq-1").DeadLetters().Poll(ctx)
		if err != nil || !ok || string(v) != "poison" {
			t.Fatalf("dead letter = %q %v %v", v, ok, err)
		}
	})

	t.Run("Bounded", func(t *testing.T) {
		ctx := ctx(t)
		q := queues.New(a, "bounded-1")
		for _, s := range []string{"1", "2"} {
			if err := q.Offer(ctx, []byte(s)); err != nil {
				t.Fatal(err)
			}
		}
		if err := q.Offer(ctx, []byte("3")); !errors.Is(err, op.ErrQueueFull) {
			t.Fatalf("offer past capacity = %v", err)
		}
		if err := q.OfferWait(ctx, []byte("3"), 100*time.Millisecond); !errors.Is(err, op.ErrQueueFull) {
			t.Fatalf("offer wait that times out = %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- queues.New(b, "bounded-1").OfferWait(ctx, []byte("3"), 30*time.Second) }()
		waitFor(ctx, t, func() bool {
			st, err := q.Stats(ctx)
			return err == nil && st.WaitingOffers == 1
		})
		var got []string
		for len(got) < 3 {
			v, ok, err := q.PollWait(ctx, 20*time.Second)
			if err != nil || !ok {
				t.Fatalf("poll = %v %v", ok, err)
			}
			got = append(got, string(v))
		}
		if err := <-done; err != nil {
			t.Fatalf("waiting offer = %v", err)
		}
		if fmt.Sprint(got) != "[1 2 3]" {
			t.Fatalf("order = %v", got)
		}
	})

	t.Run("Batches", func(t *testing.T) {
		ctx := ctx(t)
		q := queues.New(a, "batch")
		items := [][]byte{[]byte("a"), {}, []byte("c")}
		if err := q.OfferAll(ctx, items); err != nil {
			t.Fatal(err)
		}
		got, err := queues.New(b, "batch").Drain(ctx, 10)
		if err != nil || len(got) != 3 || string(got[0]) != "a" || len(got[1]) != 0 || string(got[2]) != "c" {
			t.Fatalf("drain = %q %v", got, err)
		}
		if err := queues.New(a, "bounded-2").OfferAll(ctx, [][]byte{{1}, {2}, {3}}); !errors.Is(err, op.ErrQueueFull) {
			t.Fatalf("batch past capacity = %v", err)
		}
		if n, _, _ := queues.New(a, "bounded-2").Len(ctx); n != 0 {
			t.Fatalf("partial batch applied: %d items", n)
		}
	})

	t.Run("ItemEvents", func(t *testing.T) {
		ctx := ctx(t)
		q := queues.New(b, "events-1")
		got := make(chan queues.ItemEvent, 16)
		stop, err := q.Listen(ctx, func(ev queues.ItemEvent) { got <- ev })
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		if err := queues.New(a, "events-1").Offer(ctx, []byte("e1")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := q.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		for _, want := range []queues.ItemEventKind{queues.ItemAdded, queues.ItemRemoved} {
			select {
			case ev := <-got:
				if ev.Kind != want || string(ev.Item) != "e1" {
					t.Fatalf("event %v %q, want %v e1", ev.Kind, ev.Item, want)
				}
			case <-ctx.Done():
				t.Fatalf("no %v event", want)
			}
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		ctx := ctx(t)
		if err := queues.New(a, "").Offer(ctx, []byte("x")); !errors.Is(err, op.ErrBadRequest) {
			t.Fatalf("empty name = %v", err)
		}
		if err := queues.New(a, "bad").Offer(ctx, nil); !errors.Is(err, op.ErrBadRequest) {
			t.Fatalf("nil item = %v", err)
		}
		if _, _, err := queues.New(a, "bad").Take(ctx, queues.WithVisibility(-time.Second)); !errors.Is(err, op.ErrBadRequest) {
			t.Fatalf("negative visibility = %v", err)
		}
		_, err := a.Invoke(ctx, &op.Request{Service: queues.ServiceName, Name: "bad", Key: "bad", Op: 199, Partition: -1})
		if !errors.Is(err, op.ErrUnknownOp) {
			t.Fatalf("unknown op = %v", err)
		}
	})
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not reached before the deadline")
		case <-time.After(5 * time.Millisecond):
		}
	}
}
