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
	// Output:
	// connected to member-1 of cluster dev
	// found=true value=HELLO err=<nil>
}
