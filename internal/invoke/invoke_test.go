package invoke

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
)

// memTransport is an in-memory transport over real partition tables: the
// members' "owners" answer from a table the test sets (newer than the
// loop's until the loop refreshes), the way grid's slots judge a stamped
// request.
type memTransport struct {
	mu       sync.Mutex
	cur      *partition.Table // the loop's table
	changed  chan struct{}
	truth    *partition.Table // the cluster's table
	down     map[string]bool
	refresh  func(ctx context.Context, from partition.Member) error
	sent     atomic.Int64
	batches  atomic.Int64
	refreshs atomic.Int64
}

func (t *memTransport) Table() (*partition.Table, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur, t.changed
}

func (t *memTransport) Precheck(string, *partition.Table) *op.Response { return nil }
func (t *memTransport) Err() error                                     { return nil }

func (t *memTransport) Send(ctx context.Context, owner partition.Member, r op.Request) (*op.Response, error) {
	t.sent.Add(1)
	t.mu.Lock()
	truth, down := t.truth, t.down[owner.Name]
	t.mu.Unlock()
	if down {
		return nil, op.ErrUnavailable
	}
	if o, _ := truth.Owner(r.Partition); o.Name != owner.Name || r.TableVersion < truth.Version {
		return &op.Response{Code: op.CodeWrongOwner, TableVersion: truth.Version}, nil
	}
	return &op.Response{Found: true, Msg: owner.Name, Value: []byte(r.Key), TableVersion: truth.Version}, nil
}

func (t *memTransport) SendMany(ctx context.Context, owner partition.Member, rs []*op.Request) []op.Result {
	t.batches.Add(1)
	out := make([]op.Result, len(rs))
	for i, r := range rs {
		out[i].Resp, out[i].Err = t.Send(ctx, owner, *r)
	}
	return out
}

func (t *memTransport) Refresh(ctx context.Context, from partition.Member, _ uint64) error {
	t.refreshs.Add(1)
	if t.refresh != nil {
		if err := t.refresh(ctx, from); err != nil {
			return err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur.Version < t.truth.Version {
		t.cur = t.truth
		close(t.changed)
		t.changed = make(chan struct{})
	}
	return nil
}

func tables(t *testing.T) (old, next *partition.Table) {
	t.Helper()
	ms := []partition.Member{{Name: "a", Addr: "a:1"}, {Name: "b", Addr: "b:1"}, {Name: "c", Addr: "c:1"}}
	var err error
	if old, err = partition.Assign(ms[:2], 271, 0, partition.PerMember); err != nil {
		t.Fatal(err)
	}
	old.Version = 1
	if next, err = partition.Assign(ms, 271, 0, partition.PerMember); err != nil {
		t.Fatal(err)
	}
	next.Version = 2
	return old, next
}

func newLoop(tr Transport) *Loop {
	var seq atomic.Uint64
	return &Loop{
		T:              tr,
		Check:          func(*op.Request) error { return nil },
		Partitions:     func() int { return 271 },
		Identity:       func() (uint64, uint64) { return 7, seq.Add(1) },
		Life:           context.Background(),
		RefreshTimeout: func() time.Duration { return 10 * time.Second },
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// N calls refused at once because the table changed cause one table
// refresh per member that refused them (singleflight), not N: the
// refreshes hold until every caller has joined one.
func TestRefreshShared(t *testing.T) {
	old, next := tables(t)
	tr := &memTransport{cur: old, truth: next, changed: make(chan struct{})}
	const n = 50
	var joined atomic.Int64
	all := make(chan struct{})
	l := newLoop(tr)
	l.testJoined = func() {
		if joined.Add(1) == n {
			close(all)
		}
	}
	tr.refresh = func(ctx context.Context, _ partition.Member) error {
		select {
		case <-all:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Keys whose partition moved to c: every first attempt is refused
	// by the member the old table names.
	var keys []string
	refusers := map[string]bool{}
	for i := 0; len(keys) < n; i++ {
		k := string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
		p := partition.ID(k, 271)
		if o, _ := next.Owner(p); o.Name == "c" {
			keys = append(keys, k)
			o, _ := old.Owner(p)
			refusers[o.Name] = true
		}
	}
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, k := range keys {
		wg.Go(func() {
			resp, err := l.Invoke(ctx, &op.Request{Service: "s", Key: k, Partition: -1}, false)
			if err == nil && resp.Msg != "c" {
				err = errors.New("answered by " + resp.Msg)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := tr.refreshs.Load(); got != int64(len(refusers)) {
		t.Errorf("%d refreshes for %d refused calls, want %d (one per refusing member)", got, n, len(refusers))
	}
}

// InvokeMany sends one batch per owner; the requests whose partitions
// moved are re-grouped by the refreshed table and re-sent, and every
// result is the new owner's.
func TestInvokeManyRegroups(t *testing.T) {
	old, next := tables(t)
	tr := &memTransport{cur: old, truth: next, changed: make(chan struct{})}
	l := newLoop(tr)
	var reqs []*op.Request
	for i := range 1000 {
		reqs = append(reqs, &op.Request{Service: "s", Key: "k" + string(rune(i)), Partition: -1})
	}
	res := l.InvokeMany(testCtx(t), reqs, false)
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("request %d: %v", i, r.Err)
		}
		o, _ := next.Owner(partition.ID(reqs[i].Key, 271))
		if r.Resp.Msg != o.Name || string(r.Resp.Value) != reqs[i].Key {
			t.Fatalf("request %d answered by %s, want %s", i, r.Resp.Msg, o.Name)
		}
	}
	// Round 1: a and b (old table); round 2: the moved ones, to c and
	// possibly a or b.
	if b := tr.batches.Load(); b < 3 || b > 5 {
		t.Errorf("%d batches, want 3..5 (2 by the old table, 1-3 by the new)", b)
	}
	if got := tr.refreshs.Load(); got < 1 || got > 2 {
		t.Errorf("%d refreshes, want 1 or 2 (one per member that answered stale)", got)
	}
	if reqs[0].Origin != 0 || reqs[0].Partition != -1 {
		t.Errorf("InvokeMany changed the caller's request: %+v", reqs[0])
	}
}

// An unreachable owner with no member answering a refresh fails the call
// at once, with the refresh's error.
func TestUnreachableFailsFast(t *testing.T) {
	old, _ := tables(t)
	tr := &memTransport{cur: old, truth: old, changed: make(chan struct{}), down: map[string]bool{"a": true, "b": true}}
	noMember := errors.New("no member reachable")
	tr.refresh = func(context.Context, partition.Member) error { return noMember }
	l := newLoop(tr)
	if _, err := l.Invoke(testCtx(t), &op.Request{Service: "s", Key: "k", Partition: -1}, false); !errors.Is(err, noMember) {
		t.Fatalf("err %v, want the refresh's", err)
	}
	res := l.InvokeMany(testCtx(t), []*op.Request{{Service: "s", Key: "x", Partition: -1}, {Service: "s", Key: "y", Partition: -1}}, false)
	for _, r := range res {
		if !errors.Is(r.Err, noMember) {
			t.Errorf("batch err %v, want the refresh's", r.Err)
		}
	}
}

// Prepare refuses reserved services and operations to callers outside the
// core, and gives identities.
func TestPrepare(t *testing.T) {
	old, _ := tables(t)
	l := newLoop(&memTransport{cur: old, truth: old, changed: make(chan struct{})})
	if _, err := l.Prepare(&op.Request{Service: "_grid"}, false); !errors.Is(err, op.ErrUnknownService) {
		t.Errorf("reserved service: %v", err)
	}
	if _, err := l.Prepare(&op.Request{Service: "s", Op: op.OpReservedMin}, false); !errors.Is(err, op.ErrUnknownOp) {
		t.Errorf("reserved op: %v", err)
	}
	if _, err := l.Prepare(&op.Request{Service: "s", Partition: 271}, false); !errors.Is(err, op.ErrBadRequest) {
		t.Errorf("partition out of range: %v", err)
	}
	r, err := l.Prepare(&op.Request{Service: "s", Key: "k", Partition: -1}, false)
	if err != nil || r.Origin != 7 || r.CallSeq == 0 || r.Partition != partition.ID("k", 271) {
		t.Errorf("prepared %+v, %v", r, err)
	}
	if r, _ := l.Prepare(&op.Request{Service: "_session", Op: op.OpReservedMin}, true); r.Origin != 0 {
		t.Errorf("internal call got identity %d", r.Origin)
	}
}
