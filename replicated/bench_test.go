package replicated_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/replicated"
)

// Figures in docs/benchmarks.md:
//
//	go test -run XXX -bench . -benchtime 2s ./replicated/

func benchCluster(b *testing.B, n int) *gridtest.Cluster {
	b.Helper()
	return gridtest.New(b, n, gridtest.WithServices(replicated.Service{}))
}

func benchClient(b *testing.B, cl *gridtest.Cluster) *client.Client {
	b.Helper()
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addrs: addrs})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func benchGet(b *testing.B, get func(ctx context.Context, key string) ([]byte, bool, error)) {
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, ok, err := get(ctx, fmt.Sprint("k", i%100)); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

func fill(b *testing.B, inv op.Invoker, cl *gridtest.Cluster) {
	ctx := context.Background()
	m := replicated.New(inv, "bench")
	for i := range 100 {
		if err := m.Put(ctx, fmt.Sprint("k", i), make([]byte, 100)); err != nil {
			b.Fatal(err)
		}
	}
	for _, mb := range cl.Live() {
		gridtest.Eventually(b, converge, func() (bool, string) {
			n, err := replicated.New(mb, "bench").Len(ctx)
			return err == nil && n == 100, "not filled"
		})
	}
}

// BenchmarkGetEmbedded: a member reads its own copy (no network).
func BenchmarkGetEmbedded(b *testing.B) {
	cl := benchCluster(b, 3)
	fill(b, cl.Member(0), cl)
	benchGet(b, replicated.New(cl.Member(1), "bench").Get)
}

// BenchmarkGetClient: a client reads through a member (one round trip).
func BenchmarkGetClient(b *testing.B) {
	cl := benchCluster(b, 3)
	c := benchClient(b, cl)
	fill(b, c, cl)
	benchGet(b, replicated.New(c, "bench").Get)
}

// BenchmarkGetNear: a client reads its near copy (from memory once read).
func BenchmarkGetNear(b *testing.B) {
	cl := benchCluster(b, 3)
	c := benchClient(b, cl)
	fill(b, c, cl)
	near, err := replicated.NewNear(context.Background(), c, c, "bench", replicated.NearOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer near.Close()
	benchGet(b, near.Get)
}

// BenchmarkPropagation: a put on one member until every member of a
// 3-member cluster answers it from its own copy (polled by local reads).
// Reports the p50 and p99 of that time.
func BenchmarkPropagation(b *testing.B) {
	cl := benchCluster(b, 3)
	ctx := context.Background()
	members := cl.Live()
	w := replicated.New(members[0], "prop")
	readers := []*replicated.Map{replicated.New(members[1], "prop"), replicated.New(members[2], "prop")}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		want := fmt.Sprint(i)
		start := time.Now()
		if err := w.Put(ctx, "k", []byte(want)); err != nil {
			b.Fatal(err)
		}
		for _, r := range readers {
			for {
				v, _, err := r.Get(ctx, "k")
				if err != nil {
					b.Fatal(err)
				}
				if string(v) == want {
					break
				}
				if time.Since(start) > 10*time.Second {
					b.Fatal("write not propagated in 10s")
				}
				runtime.Gosched()
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}
