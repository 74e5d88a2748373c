package maps_test

import (
	"context"
	"fmt"
	"time"

	"github.com/shoalgrid/shoal/maps"
)

// An entry listener: every change of the map, numbered per partition, with
// the values. EventLost would report events that could not be delivered
// (a failover, a slow listener): re-read what matters then.
func ExampleMap_Listen() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := startIdemMember(ctx) // a *grid.Member or a *client.Client
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	prices := maps.New(m, "prices")

	events := make(chan maps.Event, 16)
	stop, err := prices.Listen(ctx, func(ev maps.Event) { events <- ev }, maps.WithValues())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	_ = prices.Put(ctx, "apple", []byte("3"))
	_ = prices.Put(ctx, "apple", []byte("4"))
	_, _ = prices.Delete(ctx, "apple")
	for range 3 {
		ev := <-events
		if ev.Kind == maps.EventLost {
			fmt.Println("lost", ev.Missed, "events of partition", ev.Partition)
			continue
		}
		fmt.Println(ev.Kind, ev.Key, string(ev.Value))
	}
	// Output:
	// added apple 3
	// updated apple 4
	// removed apple 4
}

// Walking a map page by page: no request or response grows with the map.
func ExampleMap_Range() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := startIdemMember(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	stock := maps.New(m, "stock")
	_ = stock.PutAll(ctx, map[string][]byte{"a": []byte("1"), "b": []byte("2"), "c": []byte("3")})

	total := 0
	err = stock.Range(ctx, func(key string, value []byte) bool {
		total += int(value[0] - '0')
		return true
	}, maps.PageSize(2))
	fmt.Println(total, err)

	var iterErr error
	n := 0
	for range stock.All(ctx, &iterErr) {
		n++
	}
	fmt.Println(n, iterErr)
	// Output:
	// 6 <nil>
	// 3 <nil>
}
