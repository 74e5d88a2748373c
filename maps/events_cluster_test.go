package maps_test

// Entry listeners on a real in-process cluster across an owner's crash:
// what a listener may miss, and that it always notices.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
)

// failoverRecorder keeps one listener's events per key and the partitions
// it was told lost events.
type failoverRecorder struct {
	mu      sync.Mutex
	byKey   map[string][]maps.Event
	lostIn  map[int32]int
	repeats int
	changed chan struct{}
}

func (r *failoverRecorder) on(ev maps.Event) {
	r.mu.Lock()
	if ev.Kind == maps.EventLost {
		r.lostIn[ev.Partition]++
	} else {
		if ev.Repeat {
			r.repeats++
		}
		r.byKey[ev.Key] = append(r.byKey[ev.Key], ev)
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// TestListenAcrossOwnerCrash: writers change keys while the owner of most
// of them crashes. Afterwards every listener (embedded on a survivor and
// through a client) has, for every key, its events in write order, each
// acknowledged write's event unless the listener was told that events of
// the key's partition were lost (EventLost), and no event twice unless it
// is flagged Repeat.
func TestListenAcrossOwnerCrash(t *testing.T) {
	cl := gridtest.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m0 := cl.Member(0)
	victim := cl.Member(2).Name()
	table := m0.Table()
	var keys []string
	onVictim := 0
	for i := 0; len(keys) < 40; i++ {
		k := fmt.Sprintf("key-%d", i)
		owner, _ := table.Owner(m0.PartitionOf(k))
		switch {
		case owner.Name == victim && onVictim < 30:
			onVictim++
		case owner.Name != victim && len(keys)-onVictim < 10:
		default:
			continue
		}
		keys = append(keys, k)
	}
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	c, err := client.Dial(ctx, client.Config{Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	recs := map[string]*failoverRecorder{}
	for name, m := range map[string]*maps.Map{"embedded": maps.New(m0, "fo"), "client": maps.New(c, "fo")} {
		r := &failoverRecorder{byKey: map[string][]maps.Event{}, lostIn: map[int32]int{}, changed: make(chan struct{}, 1)}
		stop, err := m.Listen(ctx, r.on, maps.WithValues())
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		recs[name] = r
	}

	// Writers own disjoint keys and write rounds "key:round"; acked
	// records the writes that were acknowledged.
	const writers, rounds, crashAfter = 4, 8, 2
	var (
		mu      sync.Mutex
		acked   = map[string]bool{}
		wg      sync.WaitGroup
		barrier sync.WaitGroup
	)
	crashed := make(chan struct{})
	barrier.Add(writers)
	m := maps.New(m0, "fo")
	for w := range writers {
		wg.Go(func() {
			for r := range rounds {
				if r == crashAfter {
					barrier.Done()
					if w%2 == 0 {
						<-crashed // half the writers resume only after the crash
					}
				}
				for i := w; i < len(keys); i += writers {
					v := fmt.Sprintf("%s:%d", keys[i], r)
					wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
					err := m.Put(wctx, keys[i], []byte(v))
					wcancel()
					if err == nil {
						mu.Lock()
						acked[v] = true
						mu.Unlock()
					}
				}
			}
		})
	}
	barrier.Wait()
	cl.Crash(2)
	close(crashed)
	wg.Wait()
	cl.WaitStable()
	// The last write of every key, on the healed cluster, is the marker
	// each listener waits for.
	for _, k := range keys {
		if err := m.Put(ctx, k, []byte(k+":end")); err != nil {
			t.Fatal(err)
		}
	}
	for name, r := range recs {
		for {
			r.mu.Lock()
			missing := ""
			for _, k := range keys {
				evs := r.byKey[k]
				if len(evs) == 0 || string(evs[len(evs)-1].Value) != k+":end" {
					missing = k
					break
				}
			}
			r.mu.Unlock()
			if missing == "" {
				break
			}
			select {
			case <-r.changed:
			case <-ctx.Done():
				t.Fatalf("%s: no end marker for %s", name, missing)
			}
		}
	}

	mu.Lock()
	defer mu.Unlock()
	nacked := len(acked)
	for name, r := range recs {
		r.mu.Lock()
		lostEvents, noticed := 0, 0
		for _, k := range keys {
			p := m0.PartitionOf(k)
			seen := map[string]bool{}
			last := -1
			for _, ev := range r.byKey[k] {
				v := string(ev.Value)
				round := rounds
				if !strings.HasSuffix(v, ":end") {
					if _, err := fmt.Sscanf(strings.TrimPrefix(v, k+":"), "%d", &round); err != nil {
						t.Fatalf("%s: event value %q for %s", name, v, k)
					}
				}
				if seen[v] && !ev.Repeat {
					t.Errorf("%s: %s delivered twice without Repeat", name, v)
				}
				if round < last && !ev.Repeat {
					t.Errorf("%s: %s out of order (after round %d) without Repeat", name, v, last)
				}
				seen[v] = true
				last = max(last, round)
			}
			for r := range rounds {
				v := fmt.Sprintf("%s:%d", k, r)
				if !acked[v] || seen[v] {
					continue
				}
				lostEvents++
				if recs[name].lostIn[p] == 0 {
					t.Errorf("%s: the event of acknowledged %s is missing and no loss was reported for partition %d", name, v, p)
				} else {
					noticed++
				}
			}
		}
		t.Logf("%s: %d acknowledged writes, %d events missing (all noticed: %d), %d partitions reported losses, %d repeats",
			name, nacked, lostEvents, noticed, len(r.lostIn), r.repeats)
		r.mu.Unlock()
	}
}
