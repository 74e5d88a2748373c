package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/queues"
	"github.com/shoalgrid/shoal/wire"
)

const queueHelp = `usage: gridctl queue SUBCOMMAND [flags] NAME ...

  offer NAME [ITEM]   append ITEM; without ITEM, one item per line of stdin
                      (sent in batches of up to 1000, each all or none)
  poll NAME           take one item, print it, acknowledge it; exit 1 when
                      none arrives within --wait
  drain NAME          take, print and acknowledge up to --max items, one per
                      line; stops when no item arrives within --wait
  len NAME            number of ready items (in-flight ones are not counted)
  bench [FLAGS]       load generator: --clients workers (default 50) offer
                      --value-size byte items (default 100) to --queues queues
                      (default 1) for --duration (default 5s), then take and
                      ack until they are empty; prints ops/s, p50 and p99 of
                      each phase (--json: one object per phase)

flags:
  --wait D   how long poll and drain wait for an item (default 0: not at all)
  --max N    drain at most N items (default 0: until the queue is empty)
  --json     len: {"ready","in_flight","waiting_takers","waiting_offers"};
             poll and drain: one {"item","delivery"} object per line

Items are printed only after they were taken and before they are
acknowledged: if gridctl dies in between, the item is delivered again
(at-least-once), never lost.

` + globalHelp

const idemHelp = `usage: gridctl idem claim [--ttl D] NAME ID

  Claim message ID in idempotency store NAME. Exit 0 when this call was
  first, 3 when ID was already claimed (a duplicate), 1 on any error (an
  error is never reported as a duplicate).

flags:
  --ttl D   how long the id is remembered (default 24h)

` + globalHelp

// exitDuplicate is idem claim's exit code for an id claimed before.
const exitDuplicate = 3

// errDuplicate makes run exit with exitDuplicate.
var errDuplicate = errors.New("duplicate")

// errEmpty reports that poll found no item in time.
type errEmpty struct {
	q    string
	wait time.Duration
}

func (e errEmpty) Error() string {
	return fmt.Sprintf("no item in queue %q within %v", e.q, e.wait)
}

// queueCmd implements "gridctl queue SUBCOMMAND ...".
func queueCmd(ctx context.Context, e env, g *globals, args []string) error {
	if len(args) > 0 && args[0] == "bench" {
		return queueBenchCmd(ctx, e, g, args[1:])
	}
	fs := newFlagSet("queue")
	wait := fs.Duration("wait", 0, "how long poll and drain wait for an item")
	maxItems := fs.Int("max", 0, "drain at most this many items (0: all)")
	pos, err := parseCommand(e, "queue", fs, g, args)
	if err != nil {
		return err
	}
	sub, pos, err := subcommand("queue", pos, []subSpec{
		{"offer", 1, 2, "NAME [ITEM]"},
		{"poll", 1, 1, "NAME"},
		{"drain", 1, 1, "NAME"},
		{"len", 1, 1, "NAME"},
	})
	if err != nil {
		return err
	}
	if *wait < 0 || *maxItems < 0 {
		return usagef("queue", "--wait and --max must not be negative")
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	q := queues.New(c, pos[0])
	opCtx := func(extra time.Duration) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, g.timeout+extra)
	}

	switch sub {
	case "offer":
		if len(pos) == 2 {
			octx, cancel := opCtx(0)
			defer cancel()
			return q.Offer(octx, []byte(pos[1]))
		}
		return offerLines(ctx, e.stdin, q, g.timeout)
	case "len":
		octx, cancel := opCtx(0)
		defer cancel()
		st, err := q.Stats(octx)
		if err != nil {
			return err
		}
		if g.json {
			return json.NewEncoder(e.stdout).Encode(map[string]int{"ready": st.Ready, "in_flight": st.InFlight,
				"waiting_takers": st.WaitingTakers, "waiting_offers": st.WaitingOffers})
		}
		_, err = fmt.Fprintln(e.stdout, st.Ready)
		return err
	}
	limit := *maxItems
	if sub == "poll" {
		limit = 1
	}
	w := bufio.NewWriter(e.stdout)
	got := 0
	for limit == 0 || got < limit {
		octx, cancel := opCtx(*wait)
		var d *queues.Delivery
		var ok bool
		if *wait > 0 {
			d, ok, err = q.TakeWait(octx, *wait)
		} else {
			d, ok, err = q.Take(octx)
		}
		if err == nil && ok {
			// Print before acknowledging: a crash in between redelivers.
			line := append(d.Item, '\n')
			if g.json {
				line, _ = json.Marshal(map[string]any{"item": string(d.Item), "delivery": d.Count})
				line = append(line, '\n')
			}
			if _, err = w.Write(line); err == nil {
				err = w.Flush()
			}
			if err == nil {
				_, err = d.Ack(octx)
			}
		}
		cancel()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		got++
	}
	if sub == "poll" && got == 0 {
		return errEmpty{q: pos[0], wait: *wait}
	}
	return w.Flush()
}

// offerLines offers one item per line of stdin, in batches.
func offerLines(ctx context.Context, stdin io.Reader, q *queues.Queue, timeout time.Duration) error {
	if stdin == nil {
		return errors.New("no ITEM given and there is no stdin")
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64*1024), wire.DefaultMaxValueSize)
	var batch [][]byte
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		octx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := q.OfferAll(octx, batch)
		batch, size = batch[:0], 0
		return err
	}
	for sc.Scan() {
		line := sc.Bytes()
		if size+len(line) > wire.DefaultMaxValueSize/2 || len(batch) == 1000 {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, append([]byte{}, line...))
		size += len(line) + 8
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read items from stdin: %w", err)
	}
	return flush()
}

// idemCmd implements "gridctl idem claim NAME ID".
func idemCmd(ctx context.Context, e env, g *globals, args []string) error {
	fs := newFlagSet("idem")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the id is remembered")
	pos, err := parseCommand(e, "idem", fs, g, args)
	if err != nil {
		return err
	}
	if len(pos) != 3 || pos[0] != "claim" {
		return usagef("idem", "usage: idem claim NAME ID")
	}
	if pos[1] == "" {
		return usagef("idem", "store name is empty")
	}
	if *ttl <= 0 {
		return usagef("idem", "--ttl must be positive")
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	octx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	first, err := maps.NewIdempotencyStore(c, pos[1], *ttl).Claim(octx, pos[2])
	if err != nil {
		return err
	}
	if g.json {
		if err := json.NewEncoder(e.stdout).Encode(map[string]bool{"first": first}); err != nil {
			return err
		}
	}
	if !first {
		return errDuplicate
	}
	return nil
}
