// Command lockholder is a helper of the process tests: it takes a lock,
// writes to a fenced resource with the lock's token, waits for a line on
// stdin (the test pauses it meanwhile with SIGSTOP), then writes again with
// the same token and tries to unlock, printing each outcome on stdout.
//
//	lockholder ADDRS LOCK RESOURCE_URL
package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/locks"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: lockholder ADDRS LOCK RESOURCE_URL")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3]); err != nil {
		fmt.Fprintln(os.Stderr, "lockholder:", err)
		os.Exit(1)
	}
}

func run(addrs, name, resource string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addrs: strings.Split(addrs, ",")})
	if err != nil {
		return err
	}
	defer c.Close()
	l := locks.New(c, name)
	tok, err := l.Lock(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("locked %d write %d\n", tok, write(ctx, resource, tok))
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	fmt.Printf("resumed write %d\n", write(ctx, resource, tok))
	err = l.Unlock(ctx)
	fmt.Printf("unlock %v\n", err)
	return nil
}

// write sends a fenced write and returns the HTTP status (0 on error).
func write(ctx context.Context, resource string, tok uint64) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("%s?token=%d", resource, tok), nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
