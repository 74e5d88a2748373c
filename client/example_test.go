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

// Send several requests at once: the ones owned by one member travel in
// one frame (maps' GetAll, PutAll and DeleteAll do this for you). Each
// request gets its own result, in order.
func ExampleClient_InvokeMany() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
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

	var reqs []*op.Request
	for _, k := range []string{"a", "b", "c"} {
		reqs = append(reqs, &op.Request{Service: maps.ServiceName, Name: "letters", Op: maps.OpPut, Partition: -1, Key: k, Value: []byte(k + k)})
	}
	reqs = append(reqs, &op.Request{Service: "no-such-service", Name: "x", Partition: -1, Key: "x"})
	for i, r := range c.InvokeMany(ctx, reqs) {
		fmt.Println(i, r.Err == nil)
	}
	got, err := maps.New(c, "letters").GetAll(ctx, []string{"a", "b", "c"})
	fmt.Println(string(got["a"]), string(got["b"]), string(got["c"]), err)
	// Output:
	// 0 true
	// 1 true
	// 2 true
	// 3 false
	// aa bb cc <nil>
}
