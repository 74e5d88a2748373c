package wire_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A member: a listener whose accept loop hands connections to Accept,
	// with a handler that upper-cases values.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	upper := wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
		c.Respond(id, &op.Response{Found: true, Value: bytes.ToUpper(req.Value)})
	})
	member := wire.Hello{Role: wire.RoleMember, Name: "member-1", Cluster: "dev", Partitions: 271}
	sameCluster := func(peer wire.Hello) error {
		if peer.Cluster != member.Cluster {
			return fmt.Errorf("cluster %q, want %q", peer.Cluster, member.Cluster)
		}
		return nil
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted []*wire.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return // listener closed
			}
			c, err := wire.Accept(nc, member, sameCluster, wire.Options{Handler: upper})
			if err != nil {
				continue // Accept closed nc
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		wg.Wait()
		for _, c := range accepted {
			c.Close()
		}
	}()

	// A client dials the member and makes one call.
	c, err := wire.Dial(ctx, nil, ln.Addr().String(),
		wire.Hello{Role: wire.RoleClient, Name: "client-1", Cluster: "dev"}, wire.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	resp, err := c.Call(ctx, &op.Request{Service: "map", Name: "greetings", Partition: 7, Key: "en", Value: []byte("hello")})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("connected to %s of cluster %s\n", c.Peer().Name, c.Peer().Cluster)
	fmt.Printf("found=%v value=%s err=%v\n", resp.Found, resp.Value, resp.Err())

	// Several calls in one frame (the member announced CapRequests): each
	// gets its own response, in order.
	resps, errs := c.CallMany(ctx, []*op.Request{
		{Service: "map", Name: "greetings", Partition: 7, Key: "fr", Value: []byte("bonjour")},
		{Service: "map", Name: "greetings", Partition: 9, Key: "de", Value: []byte("hallo")},
	})
	for i := range resps {
		fmt.Printf("value=%s err=%v\n", resps[i].Value, errs[i])
	}
	// Output:
	// connected to member-1 of cluster dev
	// found=true value=HELLO err=<nil>
	// value=BONJOUR err=<nil>
	// value=HALLO err=<nil>
}

// A handler that answers from the read loop queues its responses in the
// loop's batch: requests that arrived together are answered with one write.
func ExampleConn_Batch() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	echoKey := wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
		c.RespondBatch(c.Batch(), id, &op.Response{Found: true, Value: []byte(req.Key)})
	})
	accepted := make(chan *wire.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		c, err := wire.Accept(nc, wire.Hello{Role: wire.RoleMember, Name: "m1", Cluster: "dev"}, nil, wire.Options{Handler: echoKey})
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	defer ln.Close()

	c, err := wire.Dial(ctx, nil, ln.Addr().String(), wire.Hello{Role: wire.RoleClient, Name: "c1", Cluster: "dev"}, wire.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if server, ok := <-accepted; ok {
		defer server.Close()
	}

	// Many concurrent calls share the connection; their responses leave the
	// server in batches.
	var wg sync.WaitGroup
	answers := make([]string, 4)
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Call(ctx, &op.Request{Service: "s", Name: "n", Key: fmt.Sprintf("k%d", i)})
			if err != nil {
				answers[i] = err.Error()
				return
			}
			answers[i] = string(resp.Value)
		}()
	}
	wg.Wait()
	fmt.Println(answers)
	// Output: [k0 k1 k2 k3]
}
