package grid_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// Embed a member in a Go program and use a distributed map through it.
func ExampleStart() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := grid.Start(ctx, grid.Config{
		Name:     "n1",
		BindAddr: "127.0.0.1:0", // gossip; 0 picks a free port
		DataAddr: "127.0.0.1:0", // clients and members
		Services: []op.Service{maps.Service{}},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Shutdown(context.Background())
	if err := m.WaitReady(ctx); err != nil {
		fmt.Println(err)
		return
	}

	users := maps.New(m, "users")
	if err := users.Put(ctx, "alice", []byte(`{"age":30}`), maps.WithTTL(time.Hour)); err != nil {
		fmt.Println(err)
		return
	}
	v, found, err := users.Get(ctx, "alice")
	fmt.Println(string(v), found, err)
	// Output: {"age":30} true <nil>
}

// Members of the same cluster find each other through a seed.
func ExampleConfig_join() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	first, err := grid.Start(ctx, grid.Config{Name: "a", BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0", Gossip: grid.FastGossip(), Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer first.Close()
	second, err := grid.Start(ctx, grid.Config{Name: "b", BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0", Gossip: grid.FastGossip(), Logger: quiet,
		Join: []string{first.GossipAddr()}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer second.Close()
	for len(second.Members()) < 2 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond) // polling for the example's sake
	}
	for _, mi := range second.Members() {
		fmt.Println(mi.Name)
	}
	// Output:
	// a
	// b
}

// An operator removes a member that crashed for good from the cluster's
// expected size; a live member (here the member itself) is refused.
func ExampleMember_RemoveMember() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := grid.Start(ctx, grid.Config{
		Name: "n1", BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Shutdown(context.Background())
	if err := m.WaitReady(ctx); err != nil {
		fmt.Println(err)
		return
	}
	_, err = m.RemoveMember(ctx, "n1", false)
	fmt.Println(errors.Is(err, op.ErrBadRequest))
	// Output: true
}
