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
