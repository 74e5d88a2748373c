package wire_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// TestDialHTTPServer dials a server that answers the hello in HTTP (as
// gridnode's --http port does when the hello holds a newline): the error
// says it is not a Shoal data port, at once, instead of reading "HTTP" as
// the length of a 1.2 GB frame.
func TestDialHTTPServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n400 Bad Request")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = wire.Dial(ctx, nil, ln.Addr().String(), wire.Hello{Role: wire.RoleClient, Name: "t", Cluster: "shoal"}, wire.Options{})
	if err == nil || !errors.Is(err, op.ErrBadRequest) || !strings.Contains(err.Error(), "not a Shoal data port") || strings.Contains(err.Error(), "too large") {
		t.Fatalf("Dial = %v, want a bad request naming the HTTP answer", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
	ln.Close()
	<-served
}
