package grid_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

func dialClient(t *testing.T, addr string) *wire.Conn {
	t.Helper()
	c, err := wire.Dial(ctxT(t, 5*time.Second), nil, addr, wire.Hello{Role: wire.RoleClient, Name: "test-client", Cluster: "shoal"}, wire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A request without a table version is routed by the member that receives
// it, whoever owns the key.
func TestUnroutedRequestIsForwardedToOwner(t *testing.T) {
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 10*time.Second)
	m0 := c.Member(0)
	tbl := m0.Table()
	// Find a key that member 0 does not own.
	key := ""
	for i := 0; key == ""; i++ {
		k := "key-" + string(rune('a'+i%26)) + string(rune('a'+i/26%26))
		if o, _ := tbl.Owner(m0.PartitionOf(k)); o.Name != m0.Name() {
			key = k
		}
	}
	conn := dialClient(t, m0.Addr())
	resp, err := conn.Call(ctx, &op.Request{Service: maps.ServiceName, Name: "fw", Op: maps.OpPut, Partition: -1, Key: key, Value: []byte("v")})
	if err != nil || resp.Err() != nil {
		t.Fatalf("forwarded put: %v %v", err, resp.Err())
	}
	v, ok, err := maps.New(c.Member(1), "fw").Get(ctx, key)
	if err != nil || !ok || string(v) != "v" {
		t.Fatalf("get after forwarded put: %q %v %v", v, ok, err)
	}
}

// A routed request that reaches a member that is not the owner is refused
// with a retriable code and the member's table version, never applied.
func TestRoutedRequestToWrongMemberIsRefused(t *testing.T) {
	c := gridtest.New(t, 2)
	ctx := ctxT(t, 10*time.Second)
	m0 := c.Member(0)
	tbl := m0.Table()
	var p int32
	for p = range int32(tbl.Count) {
		if o, _ := tbl.Owner(p); o.Name != m0.Name() {
			break
		}
	}
	conn := dialClient(t, m0.Addr())
	resp, err := conn.Call(ctx, &op.Request{Service: maps.ServiceName, Name: "x", Op: maps.OpPut, Partition: p, Key: "k", TableVersion: tbl.Version})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(resp.Err(), op.ErrWrongOwner) || resp.TableVersion != tbl.Version {
		t.Fatalf("resp = %+v, want wrong owner at version %d", resp, tbl.Version)
	}
	resp, err = conn.Call(ctx, &op.Request{Service: maps.ServiceName, Name: "x", Op: maps.OpGet, Partition: p, Key: "k", TableVersion: tbl.Version + 100})
	if err != nil || !errors.Is(resp.Err(), op.ErrStaleTable) {
		t.Fatalf("future table version: %v %v, want ErrStaleTable", err, resp.Err())
	}
}

func TestBadRequestsGetClearErrors(t *testing.T) {
	c := gridtest.New(t, 1)
	ctx := ctxT(t, 10*time.Second)
	conn := dialClient(t, c.Member(0).Addr())
	cases := []struct {
		name string
		req  op.Request
		want error
	}{
		{"unknown service", op.Request{Service: "nope", Partition: -1, Key: "k"}, op.ErrUnknownService},
		{"unknown op", op.Request{Service: maps.ServiceName, Name: "m", Op: 200, Partition: -1, Key: "k"}, op.ErrUnknownOp},
		{"reserved op from a client", op.Request{Service: maps.ServiceName, Name: "m", Op: op.OpTimer, Partition: -1, Key: "k"}, op.ErrForbidden},
		{"partition out of range", op.Request{Service: maps.ServiceName, Name: "m", Op: maps.OpGet, Partition: 5000, Key: "k"}, op.ErrBadRequest},
		{"system op from a client", op.Request{Service: "_grid", Op: 2, Partition: -1}, op.ErrForbidden},
		{"table from a client is allowed", op.Request{Service: "_grid", Op: 1, Partition: -1}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := conn.Call(ctx, &tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Err(); !errors.Is(got, tc.want) || (tc.want == nil && got != nil) {
				t.Fatalf("err = %v, want %v", got, tc.want)
			}
		})
	}
}

// Garbage on the member's data port is refused; the member keeps serving.
func TestMalformedInputDoesNotHurtTheMember(t *testing.T) {
	c := gridtest.New(t, 1)
	addr := c.Member(0).Addr()
	inputs := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0, 0, 0, 0},
		binary.BigEndian.AppendUint32(nil, 1<<31),
		append(binary.BigEndian.AppendUint32(nil, 20), make([]byte, 20)...),
	}
	for _, in := range inputs {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write(in); err != nil {
			t.Fatal(err)
		}
		_ = nc.(*net.TCPConn).CloseWrite() // a truncated frame ends here
		// The member answers with a refusal or closes; either way the read
		// ends before the deadline.
		_, _ = io.ReadAll(nc)
		nc.Close()
	}
	// A well-formed frame with a garbage request body gets a BadRequest
	// response on an otherwise healthy connection.
	conn := dialClient(t, addr)
	ctx := ctxT(t, 5*time.Second)
	if err := maps.New(c.Member(0), "ok").Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("member unusable after garbage: %v", err)
	}
	if _, err := conn.Call(ctx, &op.Request{Service: maps.ServiceName, Name: "ok", Op: maps.OpGet, Partition: -1, Key: "k"}); err != nil {
		t.Fatal(err)
	}
}
