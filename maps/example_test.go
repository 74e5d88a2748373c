package maps

import (
	"context"
	"fmt"
	"time"
)

func ExampleMap() {
	ctx := context.Background()
	// In a program, inv is a *grid.Member (embedded) or a *client.Client
	// (remote): the Map code is the same.
	inv := newLocalInvoker(7)
	sessions := New(inv, "sessions")

	_ = sessions.Put(ctx, "alice", []byte("token-1"), WithTTL(30*time.Minute))
	_ = sessions.Put(ctx, "bob", []byte("token-2"))

	v, found, _ := sessions.Get(ctx, "alice")
	fmt.Println(string(v), found)

	_, stored, _ := sessions.PutIfAbsent(ctx, "bob", []byte("token-3"))
	fmt.Println("stored:", stored)

	swapped, _ := sessions.CompareAndSwap(ctx, "bob", []byte("token-2"), []byte("token-4"))
	fmt.Println("swapped:", swapped)

	keys, _ := sessions.Keys(ctx)
	fmt.Println(keys)

	n, _ := sessions.Size(ctx)
	fmt.Println("size:", n)
	// Output:
	// token-1 true
	// stored: false
	// swapped: true
	// [alice bob]
	// size: 2
}

func ExampleTyped() {
	ctx := context.Background()
	type Point struct{ X, Y int }
	inv := newLocalInvoker(7)
	points := NewTyped[Point](inv, "points")

	_ = points.Put(ctx, "origin", Point{0, 0})
	_ = points.Put(ctx, "a", Point{3, 4})

	p, found, _ := points.Get(ctx, "a")
	fmt.Println(p, found)

	sum := 0
	_ = points.Range(ctx, func(key string, p Point) bool {
		sum += p.X + p.Y
		return true
	})
	fmt.Println("sum:", sum)
	// Output:
	// {3 4} true
	// sum: 7
}

func ExampleMap_PutAll() {
	ctx := context.Background()
	inv := newLocalInvoker(7)
	prices := New(inv, "prices")

	// One request per partition holding some of the keys, not one per key.
	_ = prices.PutAll(ctx, map[string][]byte{"apple": []byte("3"), "pear": []byte("4"), "plum": []byte("5")})

	got, _ := prices.GetAll(ctx, []string{"apple", "plum", "kiwi"})
	fmt.Println(len(got), string(got["apple"]), string(got["plum"]))

	n, _ := prices.DeleteAll(ctx, []string{"apple", "kiwi"})
	fmt.Println("deleted:", n)
	// Output:
	// 2 3 5
	// deleted: 1
}

func ExampleRule() {
	ctx := context.Background()
	// Every member gets the same rules (gridnode: the "maps:" list of its
	// config file). Here one partition holds the whole map.
	svc := Service{PartitionCount: 1, Rules: []Rule{
		{Pattern: "cache-*", MaxEntries: 3, Eviction: EvictLRU},
		{Pattern: "sessions", MaxIdle: 30 * time.Minute, DefaultTTL: 8 * time.Hour},
	}}
	inv := newLocalInvokerWith(svc, 1)
	cache := New(inv, "cache-pages")

	for _, k := range []string{"a", "b", "c"} {
		_ = cache.Put(ctx, k, []byte("page "+k))
	}
	_ = cache.Put(ctx, "a", []byte("page a, v2")) // a is now the most recent
	_ = cache.Put(ctx, "d", []byte("page d"))     // the map is full: b goes

	keys, _ := cache.Keys(ctx)
	fmt.Println(keys)
	// Output:
	// [a c d]
}
