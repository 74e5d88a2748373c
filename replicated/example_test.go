package replicated_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/replicated"
)

// An embedded member registers the service in its Config.Services (as
// gridnode does); then every member holds every replicated map.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := grid.Start(ctx, grid.Config{
		BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
		Services: []op.Service{replicated.Service{}},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	routes := replicated.New(m, "routes")
	events := make(chan replicated.Event, 8)
	stop, _ := routes.Watch(ctx, m, func(ev replicated.Event) { events <- ev })
	defer stop()

	_ = routes.Put(ctx, "orders", []byte("http://orders:8080"))
	v, ok, _ := routes.Get(ctx, "orders") // answered from this member's copy
	fmt.Println(string(v), ok)
	ev := <-events
	fmt.Println(ev.Type, ev.Key, string(ev.Value))

	_, _ = routes.Delete(ctx, "orders")
	ev = <-events
	fmt.Println(ev.Type, ev.Key)
	n, _ := routes.Len(ctx)
	fmt.Println("entries:", n)
	// Output:
	// http://orders:8080 true
	// added orders http://orders:8080
	// removed orders
	// entries: 0
}
