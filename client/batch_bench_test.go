package client_test

// GetAll of 1000 keys through one client on a 3-member cluster (one
// synchronous backup), grouped by owner (InvokeMany: one frame per member)
// and per partition (the path without op.BatchInvoker: one request per
// partition holding keys, 32 at a time). Figures: time per GetAll and
// request frames per GetAll (round trips).
//
//	go test -run '^$' -bench 'ClientGetAll' -benchmem -benchtime=3s -count=1 ./client/

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

func BenchmarkClientGetAll(b *testing.B) {
	var cleanups []func()
	defer runBenchCleanups(&cleanups)
	tb := benchTB{b, &cleanups}
	cl := gridtest.New(tb, 3)
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := client.Dial(ctx, client.Config{Addrs: addrs, RefreshInterval: time.Hour})
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	keys := make([]string, 1000)
	es := make(map[string][]byte, len(keys))
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
		es[keys[i]] = benchValue()
	}
	if err := maps.New(c, benchMapName).PutAll(context.Background(), es); err != nil {
		b.Fatal(err)
	}
	for _, v := range []struct {
		name string
		inv  op.Invoker
	}{{"grouped", c}, {"per-partition", plainInvoker{c}}} {
		b.Run(v.name, func(b *testing.B) {
			mp := maps.New(v.inv, benchMapName)
			b.ReportAllocs()
			f0 := client.FramesOut(c)
			for b.Loop() {
				got, err := mp.GetAll(context.Background(), keys)
				if err != nil || len(got) != len(keys) {
					b.Fatalf("GetAll: %d entries, %v", len(got), err)
				}
			}
			b.ReportMetric(float64(client.FramesOut(c)-f0)/float64(b.N), "frames/op")
		})
	}
}
