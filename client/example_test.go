package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// Connect to a cluster and use a typed map: the same proxy as in an
// embedded member, over the network.
func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A one-member cluster to talk to (usually: gridnode processes).
	m, err := grid.Start(ctx, grid.Config{BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0", Services: []op.Service{maps.Service{}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	c, err := client.Dial(ctx, client.Config{Addrs: []string{m.Addr()}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	type user struct{ Name string }
	users := maps.NewTyped[user](c, "users")
	if err := users.Put(ctx, "u1", user{Name: "Ann"}); err != nil {
		fmt.Println(err)
		return
	}
	u, found, err := users.Get(ctx, "u1")
	fmt.Println(u.Name, found, err)
	// Output: Ann true <nil>
}
