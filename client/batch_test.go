package client_test

import (
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid/gridtest"
	shmaps "github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// plainInvoker hides InvokeMany: the map's batch calls then take the
// per-partition path (the behaviour before batches were grouped by owner).
type plainInvoker struct{ op.Invoker }

// quietClient dials a client that sends nothing by itself during a test
// (no table refresh, heartbeats a minute apart), so its frame count is
// the calls' own.
func quietClient(t *testing.T, cl *gridtest.Cluster) *client.Client {
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	c := dial(t, client.Config{Addrs: addrs, RefreshInterval: time.Hour, SessionTTL: 3 * time.Minute})
	client.WaitSynced(c)
	return c
}

func batchEntries(n int) map[string][]byte {
	es := make(map[string][]byte, n)
	for i := range n {
		es["k"+strconv.Itoa(i)] = []byte("v" + strconv.Itoa(i))
	}
	return es
}

// TestBatchOneRoundTripPerMember: GetAll, PutAll and DeleteAll of 1000
// keys send one frame per member (3), where the per-partition path sends
// one per partition holding keys (~260 of 271).
func TestBatchOneRoundTripPerMember(t *testing.T) {
	cl := gridtest.New(t, 3)
	c := quietClient(t, cl)
	ctx := ctxT(t, 60*time.Second)
	m := shmaps.New(c, "batch")
	es := batchEntries(1000)
	keys := make([]string, 0, len(es))
	for k := range es {
		keys = append(keys, k)
	}
	// frames counts the frames f sends. The cluster may publish a new
	// table version meanwhile (even without moving partitions): answers
	// then carry it and the client reads the table from each member that
	// sent one (one frame each) and may re-send a few requests; allow for
	// that only when the client's table did change.
	frames := func(f func()) uint64 {
		v0, before := c.Table().Version, client.FramesOut(c)
		f()
		n := client.FramesOut(c) - before
		if c.Table().Version != v0 && n > 3 && n <= 12 {
			t.Logf("table changed during the call (%d -> %d): %d frames", v0, c.Table().Version, n)
			return 3
		}
		return n
	}
	if n := frames(func() {
		if err := m.PutAll(ctx, es); err != nil {
			t.Fatal(err)
		}
	}); n != 3 {
		t.Errorf("PutAll of 1000 entries sent %d frames, want 3 (one per member)", n)
	}
	var got map[string][]byte
	if n := frames(func() {
		var err error
		if got, err = m.GetAll(ctx, append(keys, "absent")); err != nil {
			t.Fatal(err)
		}
	}); n != 3 {
		t.Errorf("GetAll of 1001 keys sent %d frames, want 3", n)
	}
	if !maps.EqualFunc(got, es, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Errorf("GetAll returned %d entries, want the %d put", len(got), len(es))
	}

	// The per-partition path: one request per partition holding keys.
	plain := shmaps.New(plainInvoker{c}, "batch")
	parts := map[int32]bool{}
	for _, k := range keys {
		parts[c.PartitionOf(k)] = true
	}
	v0, f0 := c.Table().Version, client.FramesOut(c)
	if got, err := plain.GetAll(ctx, keys); err != nil || len(got) != len(keys) {
		t.Fatalf("per-partition GetAll: %d entries, %v", len(got), err)
	}
	if n := client.FramesOut(c) - f0; n < uint64(len(parts)) || (n != uint64(len(parts)) && c.Table().Version == v0) {
		t.Errorf("per-partition GetAll sent %d frames, want %d (partitions)", n, len(parts))
	}

	var deleted int
	if n := frames(func() {
		var err error
		if deleted, err = m.DeleteAll(ctx, keys[:500]); err != nil {
			t.Fatal(err)
		}
	}); n != 3 {
		t.Errorf("DeleteAll sent %d frames, want 3", n)
	}
	if deleted != 500 {
		t.Errorf("DeleteAll removed %d, want 500", deleted)
	}
	if got, err := m.GetAll(ctx, keys); err != nil || len(got) != 500 {
		t.Errorf("after DeleteAll: %d entries, %v; want 500", len(got), err)
	}
}

// TestBatchStaleRouting: a client whose table is stale (a fourth member
// joined and took partitions over; the client does not refresh by itself)
// sends a batch by the old owners; the requests whose partitions moved are
// refused, re-grouped by the newer table and re-sent, and every result is
// right.
func TestBatchStaleRouting(t *testing.T) {
	cl := gridtest.New(t, 3)
	c := quietClient(t, cl)
	ctx := ctxT(t, 60*time.Second)
	client.IgnoreTableAnnouncements(c)
	m := shmaps.New(c, "stale")
	es := batchEntries(1000)
	keys := make([]string, 0, len(es))
	for k := range es {
		keys = append(keys, k)
	}
	if err := m.PutAll(ctx, es); err != nil {
		t.Fatal(err)
	}
	v0 := c.Table().Version
	cl.Add()
	cl.WaitStable()
	if c.Table().Version != v0 {
		t.Fatalf("the client refreshed its table by itself (%d -> %d): the test needs a stale one", v0, c.Table().Version)
	}
	got, err := m.GetAll(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(got, es, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Errorf("GetAll returned %d entries, want the %d put", len(got), len(es))
	}
	if c.Table().Version == v0 {
		t.Errorf("table still at version %d after answers from newer owners", v0)
	}
	// Writes by the stale table also land once on the right owners.
	v0 = c.Table().Version
	cl.Add()
	cl.WaitStable()
	es2 := batchEntries(1000)
	for k := range es2 {
		es2[k] = append(es2[k], '!')
	}
	if err := m.PutAll(ctx, es2); err != nil {
		t.Fatal(err)
	}
	mem := shmaps.New(cl.Live()[0], "stale")
	got, err = mem.GetAll(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(got, es2, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Errorf("after PutAll by a stale table: %d entries match of %d", countEqual(got, es2), len(es2))
	}
}

func countEqual(a, b map[string][]byte) int {
	n := 0
	for k, v := range a {
		if string(b[k]) == string(v) {
			n++
		}
	}
	return n
}
