package grid_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// A member's InvokeMany answers every request as Invoke would, in order:
// requests it owns run here, the others go to their owners in one frame
// each; a request that fails fails alone, and writes made through it are
// applied once (a retried identity is answered, not re-applied).
func TestMemberInvokeMany(t *testing.T) {
	cl := gridtest.New(t, 3)
	m := cl.Member(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var reqs []*op.Request
	for i := range 600 {
		k := "k" + strconv.Itoa(i)
		reqs = append(reqs, &op.Request{Service: maps.ServiceName, Name: "many", Op: maps.OpPut, Partition: -1, Key: k, Value: []byte(k)})
	}
	reqs = append(reqs, &op.Request{Service: "no-such-service", Name: "x", Partition: -1, Key: "x"})
	res := m.InvokeMany(ctx, reqs)
	if len(res) != len(reqs) {
		t.Fatalf("%d results for %d requests", len(res), len(reqs))
	}
	for i, r := range res[:600] {
		if r.Err != nil || r.Resp == nil {
			t.Fatalf("put %d: %v", i, r.Err)
		}
	}
	if !errors.Is(res[600].Err, op.ErrUnknownService) {
		t.Errorf("unknown service: %v, want ErrUnknownService", res[600].Err)
	}
	// Read back through another member, one Get each.
	mp := maps.New(cl.Member(1), "many")
	for i := range 600 {
		k := "k" + strconv.Itoa(i)
		v, ok, err := mp.Get(ctx, k)
		if err != nil || !ok || string(v) != k {
			t.Fatalf("get %s: %q %v %v", k, v, ok, err)
		}
	}
	// The same reads in one InvokeMany.
	var gets []*op.Request
	for i := range 600 {
		gets = append(gets, &op.Request{Service: maps.ServiceName, Name: "many", Op: maps.OpGet, Partition: -1, Key: "k" + strconv.Itoa(i)})
	}
	for i, r := range m.InvokeMany(ctx, gets) {
		if r.Err != nil || !r.Resp.Found || string(r.Resp.Value) != gets[i].Key {
			t.Fatalf("get %d: %+v %v", i, r.Resp, r.Err)
		}
	}
}
