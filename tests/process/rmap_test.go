//go:build process

package process_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/internal/proctest"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/replicated"
)

// copyOn reads member name's copy of replicated map m: the entries request
// is sent with a partition that member owns, and every member answers
// replicated-map calls from its own copy.
func copyOn(ctx context.Context, c *client.Client, name, m string) ([]byte, int, error) {
	t := c.Table()
	if t == nil {
		return nil, 0, fmt.Errorf("no table")
	}
	for p := range int32(t.Count) {
		if o, ok := t.Owner(p); ok && o.Name == name {
			resp, err := c.Invoke(ctx, &op.Request{Service: replicated.Name, Name: m, Op: replicated.OpEntries, Partition: p})
			if err != nil {
				return nil, 0, err
			}
			return resp.Value, int(resp.Num), nil
		}
	}
	return nil, 0, fmt.Errorf("%s owns no partition in table %d", name, t.Version)
}

// TestReplicatedMapKillNine: gridnode runs the replicated map service; a
// member killed with SIGKILL while writes continue comes back empty and
// gets the full state; every member ends with the same copy, holding
// every acknowledged write.
func TestReplicatedMapKillNine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	procs := startCluster(t, ctx, 3)
	c := dial(t, ctx, procs...)
	rm := replicated.New(c, "routes")
	put := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			octx, cancel := context.WithTimeout(ctx, opTimeout)
			err := rm.Put(octx, fmt.Sprint("r", i), []byte(fmt.Sprint("v", i)))
			cancel()
			if err != nil {
				t.Fatalf("put r%d: %v", i, err)
			}
		}
	}
	put(0, 100)
	if err := procs[2].Kill(); err != nil {
		t.Fatal(err)
	}
	put(100, 200) // acknowledged by a surviving member each
	if _, err := procs[2].Wait(ctx); err != nil {
		t.Fatal(err)
	}
	procs[2] = proctest.Restart(t, procs[2], procs[:1])
	if err := procs[2].WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	err := proctest.Poll(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		var first []byte
		for i, p := range procs {
			b, n, err := copyOn(ctx, c, p.Name, "routes")
			if err != nil {
				return err
			}
			if n != 200 {
				return fmt.Errorf("%s holds %d entries, want 200", p.Name, n)
			}
			if i == 0 {
				first = b
			} else if !bytes.Equal(b, first) {
				return fmt.Errorf("%s's copy differs from %s's", p.Name, procs[0].Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copies did not converge: %v", err)
	}
	v, ok, err := rm.Get(ctx, "r150")
	if err != nil || !ok || string(v) != "v150" {
		t.Fatalf("get r150 = %q %v %v", v, ok, err)
	}
}
