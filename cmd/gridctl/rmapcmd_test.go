package main

import (
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/replicated"
)

// TestRmapCommands runs the rmap commands against a real in-process
// cluster running the replicated map service, as gridnode does.
func TestRmapCommands(t *testing.T) {
	cl := gridtest.New(t, 2, gridtest.WithConfig(func(c *grid.Config) {
		c.Services = append(c.Services, replicated.Service{})
	}))
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	addr := "--addr=" + strings.Join(addrs, ",")

	gridctl(t, nil, "rmap", "put", "conf", "b", "2", addr).expect(t, 0)
	gridctl(t, strings.NewReader("one"), "rmap", "put", "conf", "a", "-", addr).expect(t, 0)
	if r := gridctl(t, nil, "rmap", "get", "conf", "a", addr).expect(t, 0); r.stdout != "one" {
		t.Fatalf("get = %q", r.stdout)
	}
	if r := gridctl(t, nil, "rmap", "get", "conf", "nope", addr).expect(t, 1); !strings.Contains(r.stderr, "not found") {
		t.Fatalf("get absent: %q", r.stderr)
	}
	// The member list reaches may not be the one that took a write yet:
	// poll until the write arrived there.
	gridtest.Eventually(t, 30*time.Second, func() (bool, string) {
		r := gridctl(t, nil, "rmap", "list", "conf", addr)
		return r.code == 0 && r.stdout == "a=one\nb=2\n", "list: " + r.stdout
	})
	for _, m := range cl.Live() {
		gridtest.Eventually(t, 30*time.Second, func() (bool, string) {
			n, err := replicated.New(m, "conf").Len(t.Context())
			return err == nil && n == 2, m.Name() + " does not hold both entries"
		})
	}
	if r := gridctl(t, nil, "rmap", "len", "conf", addr).expect(t, 0); r.stdout != "2\n" {
		t.Fatalf("len = %q", r.stdout)
	}
	if r := gridctl(t, nil, "rmap", "get", "conf", "b", "--json", addr).expect(t, 0); !strings.Contains(r.stdout, `"found":true`) || !strings.Contains(r.stdout, `"value":"2"`) {
		t.Fatalf("get --json = %q", r.stdout)
	}
	if r := gridctl(t, nil, "rmap", "list", "conf", "--json", addr).expect(t, 0); !strings.HasPrefix(r.stdout, `[{"key":"a","value":"one"`) {
		t.Fatalf("list --json = %q", r.stdout)
	}
	gridctl(t, nil, "rmap", "delete", "conf", "a", addr).expect(t, 0)
	gridctl(t, nil, "rmap", "get", "conf", "a", addr).expect(t, 1)
	gridctl(t, nil, "rmap", "delete", "conf", "a", addr).expect(t, 1)
	gridctl(t, nil, "rmap", "get", "conf", addr).expect(t, 2)
	gridctl(t, nil, "rmap", "frob", "conf", addr).expect(t, 2)
	gridctl(t, nil, "rmap", addr).expect(t, 2)
}
