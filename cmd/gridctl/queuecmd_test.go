package main

import (
	"strings"
	"testing"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/queues"
)

// TestQueueAndIdemCommands runs the queue and idem commands against a real
// in-process cluster with the services gridnode registers.
func TestQueueAndIdemCommands(t *testing.T) {
	cl := gridtest.New(t, 3, gridtest.WithConfig(func(c *grid.Config) {
		c.Services = append(c.Services, maps.IdemService{}, queues.Service{})
	}))
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	addr := "--addr=" + strings.Join(addrs, ",")

	gridctl(t, nil, "queue", "offer", "jobs", "first", addr).expect(t, 0)
	gridctl(t, strings.NewReader("a\nb\n\nc\n"), "queue", "offer", "jobs", addr).expect(t, 0)
	if r := gridctl(t, nil, "queue", "len", "jobs", addr).expect(t, 0); r.stdout != "5\n" {
		t.Fatalf("len = %q", r.stdout)
	}
	if r := gridctl(t, nil, "queue", "poll", "jobs", addr).expect(t, 0); r.stdout != "first\n" {
		t.Fatalf("poll = %q", r.stdout)
	}
	if r := gridctl(t, nil, "queue", "drain", "jobs", "--max", "2", addr).expect(t, 0); r.stdout != "a\nb\n" {
		t.Fatalf("drain --max 2 = %q", r.stdout)
	}
	if r := gridctl(t, nil, "queue", "drain", "jobs", addr).expect(t, 0); r.stdout != "\nc\n" {
		t.Fatalf("drain = %q", r.stdout)
	}
	r := gridctl(t, nil, "queue", "poll", "jobs", "--wait", "100ms", addr).expect(t, 1)
	if !strings.Contains(r.stderr, "no item") {
		t.Fatalf("empty poll stderr = %q", r.stderr)
	}
	if r := gridctl(t, nil, "queue", "len", "jobs", addr).expect(t, 0); r.stdout != "0\n" {
		t.Fatalf("len after drain = %q", r.stdout)
	}
	gridctl(t, nil, "queue", "offer", "jobs", "j", addr).expect(t, 0)
	if r := gridctl(t, nil, "queue", "len", "jobs", "--json", addr).expect(t, 0); r.stdout != `{"in_flight":0,"ready":1,"waiting_offers":0,"waiting_takers":0}`+"\n" {
		t.Fatalf("len --json = %q", r.stdout)
	}
	if r := gridctl(t, nil, "queue", "poll", "jobs", "--json", addr).expect(t, 0); r.stdout != `{"delivery":1,"item":"j"}`+"\n" {
		t.Fatalf("poll --json = %q", r.stdout)
	}
	if r := gridctl(t, nil, "idem", "claim", "in", "m-9", "--json", addr).expect(t, 0); r.stdout != `{"first":true}`+"\n" {
		t.Fatalf("idem --json = %q", r.stdout)
	}
	gridctl(t, nil, "queue", "poll", addr).expect(t, 2)
	gridctl(t, nil, "queue", "frob", "jobs", addr).expect(t, 2)

	gridctl(t, nil, "idem", "claim", "in", "m-1", addr).expect(t, 0)
	gridctl(t, nil, "idem", "claim", "in", "m-1", addr).expect(t, 3)
	gridctl(t, nil, "idem", "claim", "in", "m-2", "--ttl", "1h", addr).expect(t, 0)
	gridctl(t, nil, "idem", "claim", "in", addr).expect(t, 2)
	// An error is never reported as a duplicate.
	gridctl(t, nil, "idem", "claim", "in", "m-3", "--addr=127.0.0.1:1", "--timeout=300ms").expect(t, 1)
}

func TestQueueBench(t *testing.T) {
	cl := gridtest.New(t, 3, gridtest.WithConfig(func(c *grid.Config) {
		c.Services = append(c.Services, queues.Service{})
	}))
	r := gridctl(t, nil, "queue", "bench", "--clients", "4", "--queues", "2", "--duration", "300ms", "--json", "--addr="+cl.Member(0).Addr()).expect(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"phase":"offer"`) || !strings.Contains(lines[1], `"phase":"take+ack"`) {
		t.Fatalf("bench output = %q", r.stdout)
	}
	// Every offered item was taken: the queues are empty.
	for _, q := range []string{"bench-q-0", "bench-q-1"} {
		if r := gridctl(t, nil, "queue", "len", q, "--addr="+cl.Member(0).Addr()).expect(t, 0); r.stdout != "0\n" {
			t.Fatalf("%s len = %q", q, r.stdout)
		}
	}
}
