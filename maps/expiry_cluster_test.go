package maps_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
)

// TestListenExpiryAcrossOwnerCrash: entries with a TTL are written to keys
// whose owner then crashes; the promoted backups hold the expired entries
// (a listened map's expiry is the owner's decision) and their owner timers
// remove them, so every key gets exactly one expired event, unless the
// listener was told that events of its partition were lost (EventLost),
// and none twice unless flagged Repeat. A write after the expiry ends each
// key's events.
func TestListenExpiryAcrossOwnerCrash(t *testing.T) {
	cl := gridtest.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m0 := cl.Member(0)
	victim := cl.Member(2).Name()
	table := m0.Table()
	var keys []string
	for i := 0; len(keys) < 30; i++ {
		k := fmt.Sprintf("key-%d", i)
		if owner, _ := table.Owner(m0.PartitionOf(k)); owner.Name == victim {
			keys = append(keys, k)
		}
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
	for name, m := range map[string]*maps.Map{"embedded": maps.New(m0, "fo-ttl"), "client": maps.New(c, "fo-ttl")} {
		r := &failoverRecorder{byKey: map[string][]maps.Event{}, lostIn: map[int32]int{}, changed: make(chan struct{}, 1)}
		stop, err := m.Listen(ctx, r.on, maps.WithValues())
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		recs[name] = r
	}
	m := maps.New(m0, "fo-ttl")
	for _, k := range keys {
		if err := m.Put(ctx, k, []byte("v"), maps.WithTTL(300*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	cl.Crash(2)
	cl.WaitStable()
	// Wait until every entry reads as absent (polling for expiry, not
	// synchronisation), then write the end marker.
	for _, k := range keys {
		for {
			_, ok, err := m.Get(ctx, k)
			if err == nil && !ok {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s still present: %v", k, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := m.Put(ctx, k, []byte("end")); err != nil {
			t.Fatal(err)
		}
	}
	for name, r := range recs {
		for {
			r.mu.Lock()
			missing := ""
			for _, k := range keys {
				evs := r.byKey[k]
				if len(evs) == 0 || string(evs[len(evs)-1].Value) != "end" {
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
	for name, r := range recs {
		r.mu.Lock()
		got, lost := 0, 0
		for _, k := range keys {
			expired := 0
			for _, ev := range r.byKey[k] {
				if ev.Kind == maps.EventExpired {
					expired++
					if expired > 1 && !ev.Repeat {
						t.Errorf("%s: %s expired twice without Repeat", name, k)
					}
				}
			}
			switch {
			case expired > 0:
				got++
			case r.lostIn[m0.PartitionOf(k)] == 0:
				t.Errorf("%s: no expired event for %s and no loss reported for its partition: %v", name, k, r.byKey[k])
			default:
				lost++
			}
		}
		t.Logf("%s: %d of %d keys gave their expired event, %d lost (reported), %d repeats", name, got, len(keys), lost, r.repeats)
		r.mu.Unlock()
	}
}
