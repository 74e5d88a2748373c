package locks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/varbin"
	"github.com/shoalgrid/shoal/op"
)

// harness drives one state through Execute with op.Exec values, as the
// member core would, and keeps the effects of the last call.
type harness struct {
	t     *testing.T
	s     *state
	now   time.Time
	owner bool
	seq   uint64
	x     op.Exec
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, s: newState(3), now: time.Unix(1_000_000, 0), owner: true}
}

// call describes one request.
type call struct {
	op      uint8
	name    string
	session uint64
	owner   string
	num     int64
	args    args
	timeout time.Duration
	seq     uint64 // 0: the next sequence number
}

func (h *harness) req(c call) *op.Request {
	if c.seq == 0 {
		h.seq++
		c.seq = h.seq
	}
	return &op.Request{Service: ServiceName, Op: c.op, Name: c.name, Key: c.name, Value: []byte(c.owner),
		Aux: encodeArgs(c.args), Num: c.num, Origin: c.session, CallSeq: c.seq, Timeout: c.timeout}
}

func (h *harness) exec(req *op.Request) (*op.Response, []op.Effect) {
	h.x.Reset(h.now, h.s.partition, h.owner, req)
	resp := h.s.Execute(&h.x, req)
	return resp, slices.Clone(h.x.Effects())
}

func (h *harness) do(c call) (*op.Response, []op.Effect) { return h.exec(h.req(c)) }

// ok runs c and fails the test on an error response.
func (h *harness) ok(c call) (*op.Response, []op.Effect) {
	h.t.Helper()
	resp, fx := h.do(c)
	if resp.Code != op.OK {
		h.t.Fatalf("%+v: %v", c, resp.Err())
	}
	return resp, fx
}

func (h *harness) lock(session uint64, owner, name string) int64 {
	h.t.Helper()
	resp, fx := h.ok(call{op: OpLock, name: name, session: session, owner: owner})
	if !resp.Found || resp.Num <= 0 || hasKind(fx, op.EffectPark) {
		h.t.Fatalf("lock %s by %d/%s: found %v token %d effects %v", name, session, owner, resp.Found, resp.Num, fx)
	}
	return resp.Num
}

// park sends a Lock that must wait and returns its call identity.
func (h *harness) park(session uint64, owner, name string) op.CallID {
	h.t.Helper()
	req := h.req(call{op: OpLock, name: name, session: session, owner: owner})
	resp, fx := h.exec(req)
	if resp.Code != op.OK || resp.Found || !hasKind(fx, op.EffectPark) {
		h.t.Fatalf("lock %s by %d/%s did not park: %+v %v", name, session, owner, resp, fx)
	}
	return req.Call()
}

func (h *harness) reserved(code uint8, name string, num int64, call op.CallID) (*op.Response, []op.Effect) {
	h.t.Helper()
	req := &op.Request{Service: ServiceName, Op: code, Name: name, Num: num, Origin: call.Origin, CallSeq: call.Seq}
	resp, fx := h.exec(req)
	if resp.Code != op.OK {
		h.t.Fatalf("reserved op %d: %v", code, resp.Err())
	}
	return resp, fx
}

func (h *harness) status(name string) Status {
	h.t.Helper()
	resp, fx := h.ok(call{op: OpStatus, name: name})
	if len(fx) != 0 {
		h.t.Fatalf("status had effects %v", fx)
	}
	st, err := decodeStatus(resp.Value)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func hasKind(fx []op.Effect, k op.EffectKind) bool {
	return slices.ContainsFunc(fx, func(e op.Effect) bool { return e.Kind == k })
}

// completions returns the Complete effects as call → response.
func completions(fx []op.Effect) map[op.CallID]*op.Response {
	m := map[op.CallID]*op.Response{}
	for _, e := range fx {
		if e.Kind == op.EffectComplete {
			m[e.Call] = e.Resp
		}
	}
	return m
}

func completed(fx []op.Effect) []op.CallID {
	var ids []op.CallID
	for _, e := range fx {
		if e.Kind == op.EffectComplete {
			ids = append(ids, e.Call)
		}
	}
	return ids
}

func TestLockUnlock(t *testing.T) {
	h := newHarness(t)
	tok := h.lock(1, "a", "L")
	st := h.status("L")
	if !st.Held || st.Holder != (Holder{1, "a"}) || st.Token != uint64(tok) || st.Count != 1 || st.Mine {
		t.Fatalf("status %+v", st)
	}
	if h.s.Len() != 1 {
		t.Fatalf("len %d", h.s.Len())
	}
	resp, _ := h.ok(call{op: OpUnlock, name: "L", session: 1, owner: "a"})
	if !resp.Found || resp.Num != 0 {
		t.Fatalf("unlock %+v", resp)
	}
	if st := h.status("L"); st.Held || h.s.Len() != 0 {
		t.Fatalf("after unlock %+v len %d", st, h.s.Len())
	}
	if tok2 := h.lock(2, "b", "L"); tok2 <= tok {
		t.Fatalf("token %d after %d", tok2, tok)
	}
}

func TestStatusMine(t *testing.T) {
	h := newHarness(t)
	h.lock(1, "a", "L")
	resp, _ := h.ok(call{op: OpStatus, name: "L", session: 1, owner: "a"})
	st, _ := decodeStatus(resp.Value)
	if !st.Mine || !resp.Found {
		t.Fatalf("holder's status %+v", st)
	}
	resp, _ = h.ok(call{op: OpStatus, name: "L", session: 1, owner: "b"})
	if st, _ := decodeStatus(resp.Value); st.Mine {
		t.Fatal("another owner id of the same session sees Mine")
	}
}

func TestFIFOGrants(t *testing.T) {
	h := newHarness(t)
	last := h.lock(1, "a", "L")
	var calls []op.CallID
	for s := uint64(2); s <= 5; s++ {
		calls = append(calls, h.park(s, "w", "L"))
	}
	if st := h.status("L"); st.Waiters != 4 || len(st.Queue) != 4 || st.Queue[0] != (Holder{2, "w"}) || st.Queue[3] != (Holder{5, "w"}) {
		t.Fatalf("queue %+v", st)
	}
	holder := uint64(1)
	owner := "a"
	for i, c := range calls {
		h.now = h.now.Add(time.Millisecond)
		_, fx := h.ok(call{op: OpUnlock, name: "L", session: holder, owner: owner})
		got := completions(fx)
		if len(got) != 1 || got[c] == nil {
			t.Fatalf("unlock %d completed %v, want %v", i, completed(fx), c)
		}
		if r := got[c]; r.Code != op.OK || !r.Found || r.Num <= last {
			t.Fatalf("grant %d: %+v after token %d", i, r, last)
		}
		last = got[c].Num
		st := h.status("L")
		if st.Holder != (Holder{c.Origin, "w"}) || st.Token != uint64(last) || st.Waiters != len(calls)-i-1 {
			t.Fatalf("after grant %d: %+v", i, st)
		}
		holder, owner = c.Origin, "w"
	}
	h.ok(call{op: OpUnlock, name: "L", session: holder, owner: owner})
	if h.s.Len() != 0 {
		t.Fatalf("len %d after the last unlock", h.s.Len())
	}
}

func TestReentrancy(t *testing.T) {
	h := newHarness(t)
	tok := h.lock(1, "a", "L")
	if tok2 := h.lock(1, "a", "L"); tok2 != tok {
		t.Fatalf("re-entry token %d, want %d", tok2, tok)
	}
	resp, _ := h.ok(call{op: OpTryLock, name: "L", session: 1, owner: "a"})
	if !resp.Found || resp.Num != tok {
		t.Fatalf("try re-entry %+v", resp)
	}
	if st := h.status("L"); st.Count != 3 {
		t.Fatalf("count %d", st.Count)
	}
	// The same session with another owner id is another holder.
	resp, _ = h.ok(call{op: OpTryLock, name: "L", session: 1, owner: "b"})
	if resp.Found {
		t.Fatal("another owner id of the same session acquired a held lock")
	}
	for want := int64(2); want >= 1; want-- {
		resp, _ := h.ok(call{op: OpUnlock, name: "L", session: 1, owner: "a"})
		if resp.Num != want || !h.status("L").Held {
			t.Fatalf("unlock left %d holds, want %d", resp.Num, want)
		}
	}
	h.ok(call{op: OpUnlock, name: "L", session: 1, owner: "a"})
	if h.status("L").Held {
		t.Fatal("held after the last unlock")
	}
	if resp, _ := h.do(call{op: OpUnlock, name: "L", session: 1, owner: "a"}); !errors.Is(resp.Err(), op.ErrNotLockOwner) {
		t.Fatalf("extra unlock: %v", resp.Err())
	}
}

func TestReentrancyLimit(t *testing.T) {
	h := newHarness(t)
	one := args{limit: 1}
	h.ok(call{op: OpLock, name: "L", session: 1, owner: "a", args: one})
	before := encodeSnapshot(h.s)
	resp, fx := h.do(call{op: OpLock, name: "L", session: 1, owner: "a", args: one})
	if !errors.Is(resp.Err(), op.ErrBadRequest) || !strings.Contains(resp.Msg, "reentrancy limit 1") || len(fx) != 0 {
		t.Fatalf("non-reentrant re-lock: %v %v", resp.Err(), fx)
	}
	resp, _ = h.ok(call{op: OpTryLock, name: "L", session: 1, owner: "a", args: one})
	if resp.Found {
		t.Fatal("non-reentrant try re-lock acquired")
	}
	if !bytes.Equal(before, encodeSnapshot(h.s)) {
		t.Fatal("a refused re-entry changed the state")
	}
	two := args{limit: 2}
	h.ok(call{op: OpLock, name: "M", session: 1, owner: "a", args: two})
	h.ok(call{op: OpLock, name: "M", session: 1, owner: "a", args: two})
	if resp, _ := h.do(call{op: OpLock, name: "M", session: 1, owner: "a", args: two}); !errors.Is(resp.Err(), op.ErrBadRequest) {
		t.Fatalf("third hold with limit 2: %v", resp.Err())
	}
}

func TestWaitersOfTheHolderReenterOnGrant(t *testing.T) {
	h := newHarness(t)
	h.lock(1, "a", "L")
	c1 := h.park(2, "b", "L")
	c2 := h.park(3, "c", "L")
	c3 := h.park(2, "b", "L")
	_, fx := h.ok(call{op: OpUnlock, name: "L", session: 1, owner: "a"})
	got := completions(fx)
	if len(got) != 2 || got[c1] == nil || got[c3] == nil || got[c1].Num != got[c3].Num {
		t.Fatalf("completions %v", got)
	}
	if st := h.status("L"); st.Count != 2 || st.Waiters != 1 || st.Queue[0].Session != c2.Origin {
		t.Fatalf("status %+v", st)
	}
}

func TestTryLockNeverParks(t *testing.T) {
	h := newHarness(t)
	h.lock(1, "a", "L")
	resp, fx := h.ok(call{op: OpTryLock, name: "L", session: 2, owner: "b"})
	if resp.Found || resp.Num != 0 || len(fx) != 0 {
		t.Fatalf("try-lock of a held lock: %+v %v", resp, fx)
	}
	if h.status("L").Waiters != 0 {
		t.Fatal("try-lock queued")
	}
}

func TestTokensSurviveSnapshotRestore(t *testing.T) {
	h := newHarness(t)
	var last int64
	for i := range 5 {
		tok := h.lock(uint64(i+1), "a", fmt.Sprint("L", i%2))
		if tok <= last {
			t.Fatalf("token %d after %d", tok, last)
		}
		last = tok
		h.ok(call{op: OpUnlock, name: fmt.Sprint("L", i%2), session: uint64(i + 1), owner: "a"})
	}
	if h.s.Len() != 0 {
		t.Fatal("locks left")
	}
	snap, err := h.s.Snapshot(h.now)
	if err != nil {
		t.Fatal(err)
	}
	// A fresh state (another member) restored from the snapshot, at the
	// same time (so the clock floor does not help), continues the count.
	h2 := newHarness(t)
	if err := h2.s.Restore(h.now, snap); err != nil {
		t.Fatal(err)
	}
	h2.now = h.now
	if tok := h2.lock(9, "z", "L0"); tok <= last {
		t.Fatalf("token %d after restore, last %d", tok, last)
	}
}

func TestTokensAtLeastTheClock(t *testing.T) {
	h := newHarness(t)
	tok := h.lock(1, "a", "L")
	if tok != h.now.UnixMicro() {
		t.Fatalf("first token %d, want the clock %d", tok, h.now.UnixMicro())
	}
	// An empty state (every replica lost) at a later time still hands
	// out a greater token.
	h2 := newHarness(t)
	h2.now = h.now.Add(time.Millisecond)
	if tok2 := h2.lock(2, "b", "L"); tok2 <= tok {
		t.Fatalf("token %d after losing the state, was %d", tok2, tok)
	}
	// Several grants in one instant still increase.
	h.ok(call{op: OpUnlock, name: "L", session: 1, owner: "a"})
	if tok3 := h.lock(3, "c", "L"); tok3 != tok+1 {
		t.Fatalf("token %d in the same microsecond, want %d", tok3, tok+1)
	}
}

func TestSessionEnded(t *testing.T) {
	h := newHarness(t)
	tA := h.lock(1, "a", "A")
	tB := h.lock(1, "b", "B") // same session, other owner id
	h.lock(2, "x", "C")
	wA := h.park(2, "x", "A")
	wC := h.park(1, "a", "C") // a waiter of the ending session
	wC2 := h.park(3, "y", "C")
	h.now = h.now.Add(time.Second)
	resp, fx := h.reserved(op.OpSessionEnded, "", 1, op.CallID{})
	if resp.Num != 2 {
		t.Fatalf("released %d locks, want 2", resp.Num)
	}
	got := completions(fx)
	if r := got[wA]; r == nil || r.Code != op.OK || r.Num <= max(tA, tB) {
		t.Fatalf("waiter of A: %+v", r)
	}
	if r := got[wC]; r == nil || !errors.Is(r.Err(), op.ErrSessionExpired) {
		t.Fatalf("waiter of the ended session: %+v", r)
	}
	if got[wC2] != nil {
		t.Fatal("a waiter of a still held lock was completed")
	}
	if st := h.status("B"); st.Held {
		t.Fatalf("B still held: %+v", st)
	}
	if st := h.status("C"); st.Waiters != 1 || st.Queue[0].Session != 3 {
		t.Fatalf("C queue %+v", st)
	}
	if st := h.status("A"); st.Holder.Session != 2 {
		t.Fatalf("A holder %+v", st)
	}
	// The ended session's holder learns it on its next call.
	if resp, _ := h.do(call{op: OpUnlock, name: "A", session: 1, owner: "a"}); !errors.Is(resp.Err(), op.ErrNotLockOwner) {
		t.Fatalf("unlock by an ended session: %v", resp.Err())
	}
	// Ending an unknown session or session 0 changes nothing.
	before := encodeSnapshot(h.s)
	h.reserved(op.OpSessionEnded, "", 77, op.CallID{})
	h.reserved(op.OpSessionEnded, "", 0, op.CallID{})
	if !bytes.Equal(before, encodeSnapshot(h.s)) {
		t.Fatal("ending an unknown session changed the state")
	}
}

func TestLeaseExpiryByTimer(t *testing.T) {
	h := newHarness(t)
	start := h.now
	resp, fx := h.ok(call{op: OpLock, name: "L", session: 1, owner: "a", num: 100})
	tok := resp.Num
	if len(fx) == 0 || !slices.ContainsFunc(fx, func(e op.Effect) bool {
		return e.Kind == op.EffectTimer && e.Name == "L" && e.Key == leaseTimer && e.At.Equal(start.Add(100*time.Millisecond))
	}) {
		t.Fatalf("no lease timer: %v", fx)
	}
	if st := h.status("L"); !st.LeaseEnd.Equal(start.Add(100 * time.Millisecond)) {
		t.Fatalf("lease end %v", st.LeaseEnd)
	}
	w := h.park(2, "b", "L")
	// An early fire re-arms and changes nothing.
	h.now = start.Add(50 * time.Millisecond)
	resp, fx = h.reserved(op.OpTimer, "L", start.Add(100*time.Millisecond).UnixNano(), op.CallID{})
	if resp.Found || !hasKind(fx, op.EffectTimer) || hasKind(fx, op.EffectComplete) {
		t.Fatalf("early fire: %+v %v", resp, fx)
	}
	h.now = start.Add(100 * time.Millisecond)
	resp, fx = h.reserved(op.OpTimer, "L", start.Add(100*time.Millisecond).UnixNano(), op.CallID{})
	got := completions(fx)
	if !resp.Found || got[w] == nil || got[w].Num <= tok {
		t.Fatalf("expiry: %+v %v", resp, got)
	}
	// A stale fire (the new holder has no lease) changes nothing.
	before := encodeSnapshot(h.s)
	h.now = h.now.Add(time.Second)
	if resp, fx := h.reserved(op.OpTimer, "L", 0, op.CallID{}); resp.Found || len(fx) != 0 || !bytes.Equal(before, encodeSnapshot(h.s)) {
		t.Fatalf("stale fire: %+v %v", resp, fx)
	}
	// A timer for a lock that does not exist is ignored too.
	h.reserved(op.OpTimer, "nope", 0, op.CallID{})
	h.reserved(op.OpTimer, "", 0, op.CallID{})
	// The expired holder learns it on its next call.
	if resp, _ := h.do(call{op: OpUnlock, name: "L", session: 1, owner: "a"}); !errors.Is(resp.Err(), op.ErrNotLockOwner) {
		t.Fatalf("unlock after expiry: %v", resp.Err())
	}
}

func TestExpiredLeaseBeforeTheTimer(t *testing.T) {
	h := newHarness(t)
	tok := h.lock(1, "a", "L")
	h.ok(call{op: OpUnlock, name: "L", session: 1, owner: "a"})
	h.ok(call{op: OpLock, name: "L", session: 1, owner: "a", num: 10})
	h.now = h.now.Add(20 * time.Millisecond)
	if st := h.status("L"); !st.Held || !st.LeaseEnded {
		t.Fatalf("status of an expired, unreleased lease: %+v", st)
	}
	// The holder's unlock fails and changes nothing (the error is not
	// replicated, so it must not change anything).
	before := encodeSnapshot(h.s)
	if resp, fx := h.do(call{op: OpUnlock, name: "L", session: 1, owner: "a"}); !errors.Is(resp.Err(), op.ErrNotLockOwner) || len(fx) != 0 {
		t.Fatalf("unlock of an expired lease: %v %v", resp.Err(), fx)
	}
	if !bytes.Equal(before, encodeSnapshot(h.s)) {
		t.Fatal("failed unlock changed the state")
	}
	// Another holder gets the lock at once (the release is settled by
	// the lock call, which is replicated).
	tok2 := h.lock(2, "b", "L")
	if tok2 <= tok {
		t.Fatalf("token %d, was %d", tok2, tok)
	}
	// The old holder re-locking after its lease ended is a new
	// acquisition, not a re-entry.
	h.ok(call{op: OpUnlock, name: "L", session: 2, owner: "b"})
	h.ok(call{op: OpLock, name: "L", session: 1, owner: "a", num: 10})
	h.now = h.now.Add(20 * time.Millisecond)
	resp, _ := h.ok(call{op: OpLock, name: "L", session: 1, owner: "a"})
	if st := h.status("L"); resp.Num <= tok2 || st.Count != 1 || !st.LeaseEnd.IsZero() {
		t.Fatalf("re-lock after the lease: %+v %+v", resp, st)
	}
}

func TestReentryRestartsLease(t *testing.T) {
	h := newHarness(t)
	h.ok(call{op: OpLock, name: "L", session: 1, owner: "a", num: 100})
	h.now = h.now.Add(50 * time.Millisecond)
	_, fx := h.ok(call{op: OpLock, name: "L", session: 1, owner: "a", num: 100})
	if !hasKind(fx, op.EffectTimer) {
		t.Fatal("re-entry with a lease set no timer")
	}
	if st := h.status("L"); !st.LeaseEnd.Equal(h.now.Add(100 * time.Millisecond)) {
		t.Fatalf("lease end %v", st.LeaseEnd)
	}
}

func TestCancelWait(t *testing.T) {
	h := newHarness(t)
	h.lock(1, "a", "L")
	w1 := h.park(2, "b", "L")
	w2 := h.park(3, "c", "L")
	resp, fx := h.reserved(op.OpCancelWait, "L", int64(op.CodeTimeout), w1)
	if !resp.Found || len(fx) != 0 {
		t.Fatalf("cancel: %+v %v", resp, fx)
	}
	if st := h.status("L"); st.Waiters != 1 || st.Queue[0].Session != 3 {
		t.Fatalf("queue after cancel %+v", st)
	}
	_, fx = h.ok(call{op: OpUnlock, name: "L", session: 1, owner: "a"})
	if got := completed(fx); len(got) != 1 || got[0] != w2 {
		t.Fatalf("grant went to %v", got)
	}
	// Cancelling a granted call, or one on an unknown lock, does nothing.
	before := encodeSnapshot(h.s)
	if resp, _ := h.reserved(op.OpCancelWait, "L", int64(op.CodeCanceled), w2); resp.Found {
		t.Fatal("cancel of a granted call found it")
	}
	h.reserved(op.OpCancelWait, "nope", int64(op.CodeCanceled), w2)
	if !bytes.Equal(before, encodeSnapshot(h.s)) {
		t.Fatal("a moot cancel changed the state")
	}
}

func TestWaiterPastDeadlineIsSkipped(t *testing.T) {
	h := newHarness(t)
	h.lock(1, "a", "L")
	r1 := h.req(call{op: OpLock, name: "L", session: 2, owner: "b", timeout: time.Second})
	if _, fx := h.exec(r1); !hasKind(fx, op.EffectPark) {
		t.Fatal("not parked")
	}
	w2 := h.park(3, "c", "L")
	// The cancellation was lost (a failover): the grant skips the waiter.
	h.now = h.now.Add(2 * time.Second)
	_, fx := h.ok(call{op: OpUnlock, name: "L", session: 1, owner: "a"})
	got := completions(fx)
	if r := got[r1.Call()]; r == nil || !errors.Is(r.Err(), op.ErrTimeout) {
		t.Fatalf("expired waiter: %+v", r)
	}
	if r := got[w2]; r == nil || !r.Found {
		t.Fatalf("next waiter: %+v", r)
	}
}

func TestRetriedLockReparks(t *testing.T) {
	h := newHarness(t)
	h.lock(1, "a", "L")
	r := h.req(call{op: OpLock, name: "L", session: 2, owner: "b", timeout: time.Second})
	h.exec(r)
	h.park(3, "c", "L")
	// The same call again (after a failover), with a new deadline.
	h.now = h.now.Add(500 * time.Millisecond)
	r2 := *r
	r2.Timeout = 5 * time.Second
	resp, fx := h.exec(&r2)
	if resp.Code != op.OK || !hasKind(fx, op.EffectPark) {
		t.Fatalf("re-sent call: %+v %v", resp, fx)
	}
	st := h.status("L")
	if st.Waiters != 2 || st.Queue[0].Session != 2 {
		t.Fatalf("re-sent call changed the queue: %+v", st)
	}
	// Its new deadline counts: at +2s it is still served.
	h.now = h.now.Add(2 * time.Second)
	_, fx = h.ok(call{op: OpUnlock, name: "L", session: 1, owner: "a"})
	if got := completions(fx); got[r.Call()] == nil || !got[r.Call()].Found {
		t.Fatalf("grant: %v", got)
	}
	// After the grant, the same call again gets the same answer and no
	// second hold.
	tok := h.status("L").Token
	resp, fx = h.exec(&r2)
	if !resp.Found || uint64(resp.Num) != tok || len(fx) != 0 || h.status("L").Count != 1 {
		t.Fatalf("retry after grant: %+v %v", resp, fx)
	}
}

func TestUnlockErrors(t *testing.T) {
	h := newHarness(t)
	if resp, _ := h.do(call{op: OpUnlock, name: "L", session: 1, owner: "a"}); !errors.Is(resp.Err(), op.ErrNotLockOwner) {
		t.Fatalf("unlock of a free lock: %v", resp.Err())
	}
	tok := h.lock(1, "a", "L")
	for _, c := range []call{
		{op: OpUnlock, name: "L", session: 2, owner: "a"},
		{op: OpUnlock, name: "L", session: 1, owner: "b"},
		{op: OpUnlock, name: "L", session: 1, owner: "a", num: tok + 1},
	} {
		before := encodeSnapshot(h.s)
		resp, fx := h.do(c)
		if !errors.Is(resp.Err(), op.ErrNotLockOwner) || len(fx) != 0 || !bytes.Equal(before, encodeSnapshot(h.s)) {
			t.Fatalf("%+v: %v %v", c, resp.Err(), fx)
		}
	}
	h.ok(call{op: OpUnlock, name: "L", session: 1, owner: "a", num: tok})
}

func TestForceUnlock(t *testing.T) {
	h := newHarness(t)
	if resp, _ := h.ok(call{op: OpForceUnlock, name: "L"}); resp.Found {
		t.Fatal("force-unlock of a free lock found a holder")
	}
	tok := h.lock(1, "a", "L")
	h.lock(1, "a", "L")
	w := h.park(2, "b", "L")
	if resp, fx := h.ok(call{op: OpForceUnlock, name: "L", num: tok + 1}); resp.Found || resp.Num != tok || len(fx) != 0 {
		t.Fatalf("force-unlock with a wrong token: %+v %v", resp, fx)
	}
	resp, fx := h.ok(call{op: OpForceUnlock, name: "L", num: tok})
	got := completions(fx)
	if !resp.Found || resp.Num != tok || got[w] == nil || got[w].Num <= tok {
		t.Fatalf("force-unlock: %+v %v", resp, got)
	}
	if resp, _ := h.do(call{op: OpUnlock, name: "L", session: 1, owner: "a"}); !errors.Is(resp.Err(), op.ErrNotLockOwner) {
		t.Fatalf("unlock by the forced-out holder: %v", resp.Err())
	}
}

func TestAbandon(t *testing.T) {
	h := newHarness(t)
	h.lock(1, "a", "L")
	// A waiter that gave up leaves the queue.
	r := h.req(call{op: OpLock, name: "L", session: 2, owner: "b", args: args{attempt: 7}})
	h.exec(r)
	if resp, _ := h.ok(call{op: OpAbandon, name: "L", session: 2, owner: "b", args: args{attempt: 8}}); resp.Found {
		t.Fatal("abandon of another attempt found it")
	}
	resp, fx := h.ok(call{op: OpAbandon, name: "L", session: 2, owner: "b", args: args{attempt: 7}})
	if got := completions(fx); !resp.Found || got[r.Call()] == nil || !errors.Is(got[r.Call()].Err(), op.ErrCanceled) {
		t.Fatalf("abandon waiter: %+v %v", resp, got)
	}
	if h.status("L").Waiters != 0 {
		t.Fatal("abandoned waiter still queued")
	}
	// A grant whose caller gave up is undone.
	h.ok(call{op: OpUnlock, name: "L", session: 1, owner: "a"})
	h.ok(call{op: OpLock, name: "L", session: 2, owner: "b", args: args{attempt: 9}})
	w := h.park(3, "c", "L")
	resp, fx = h.ok(call{op: OpAbandon, name: "L", session: 2, owner: "b", args: args{attempt: 9}})
	if got := completions(fx); !resp.Found || got[w] == nil {
		t.Fatalf("abandon grant: %+v %v", resp, got)
	}
	// Twice is harmless.
	if resp, _ := h.ok(call{op: OpAbandon, name: "L", session: 2, owner: "b", args: args{attempt: 9}}); resp.Found {
		t.Fatal("second abandon found something")
	}
	// An abandoned re-entry releases one hold only.
	h.lock(3, "c", "L")
	h.ok(call{op: OpLock, name: "L", session: 3, owner: "c", args: args{attempt: 11}})
	h.ok(call{op: OpAbandon, name: "L", session: 3, owner: "c", args: args{attempt: 11}})
	if st := h.status("L"); !st.Held || st.Count != 2 {
		t.Fatalf("after abandoned re-entry: %+v", st)
	}
	// Attempt 0 means none.
	if resp, _ := h.ok(call{op: OpAbandon, name: "L", session: 3, owner: "c"}); resp.Found {
		t.Fatal("abandon without an attempt found something")
	}
}

func TestBecameOwnerRearmsLeaseTimers(t *testing.T) {
	h := newHarness(t)
	h.ok(call{op: OpLock, name: "b", session: 1, owner: "a", num: 2000})
	h.ok(call{op: OpLock, name: "a", session: 1, owner: "a", num: 1000})
	h.lock(1, "a", "c")
	snap, _ := h.s.Snapshot(h.now)
	s2 := newState(3)
	if err := s2.Restore(h.now, snap); err != nil {
		t.Fatal(err)
	}
	var x op.Exec
	x.Reset(h.now, 3, true, nil)
	s2.BecameOwner(&x)
	fx := x.Effects()
	if len(fx) != 2 || fx[0].Name != "a" || fx[1].Name != "b" || !fx[0].At.Equal(h.now.Add(time.Second)) || fx[1].Kind != op.EffectTimer {
		t.Fatalf("re-armed %v", fx)
	}
}

func TestBadRequests(t *testing.T) {
	h := newHarness(t)
	h.lock(1, "a", "L")
	before := encodeSnapshot(h.s)
	cases := []struct {
		c    call
		want error
		msg  string
	}{
		{call{op: OpLock, name: "", session: 1}, op.ErrBadRequest, "empty lock name"},
		{call{op: OpLock, name: "L", session: 2, num: -5}, op.ErrBadRequest, "negative lease"},
		{call{op: OpTryLock, name: "M", session: 2, num: -1}, op.ErrBadRequest, "negative lease"},
		{call{op: 99, name: "L", session: 1}, op.ErrUnknownOp, "unknown operation 99"},
		{call{op: 0, name: "L", session: 1}, op.ErrUnknownOp, "unknown operation 0"},
		{call{op: OpLock, name: "L", session: 0}, op.ErrBadRequest, "no session"},
		{call{op: OpUnlock, name: "L", session: 0}, op.ErrBadRequest, "no session"},
		{call{op: OpLock, name: "L", session: 1, owner: strings.Repeat("x", MaxOwnerLen+1)}, op.ErrBadRequest, "owner id"},
	}
	for _, tc := range cases {
		resp, fx := h.do(tc.c)
		if !errors.Is(resp.Err(), tc.want) || !strings.Contains(resp.Msg, tc.msg) || len(fx) != 0 {
			t.Errorf("%+v: %v (%q) %v", tc.c, resp.Err(), resp.Msg, fx)
		}
	}
	bad := h.req(call{op: OpLock, name: "L", session: 2})
	bad.Aux = []byte{0xff}
	if resp, _ := h.exec(bad); !errors.Is(resp.Err(), op.ErrBadRequest) {
		t.Errorf("bad args: %v", resp.Err())
	}
	if resp := h.s.Execute(&h.x, nil); !errors.Is(resp.Err(), op.ErrBadRequest) {
		t.Errorf("nil request: %v", resp.Err())
	}
	if !bytes.Equal(before, encodeSnapshot(h.s)) {
		t.Fatal("a bad request changed the state")
	}
}

func TestApplyWithoutSeam(t *testing.T) {
	s := newState(0)
	now := time.Unix(5, 0)
	r := s.Apply(now, &op.Request{Op: OpLock, Name: "L", Origin: 1, CallSeq: 1})
	if !r.Found || r.Num <= 0 {
		t.Fatalf("apply lock %+v", r)
	}
	r = s.Apply(now, &op.Request{Op: OpUnlock, Name: "L", Origin: 1, CallSeq: 2})
	if r.Code != op.OK || s.Len() != 0 {
		t.Fatalf("apply unlock %+v", r)
	}
}

func TestMutates(t *testing.T) {
	var svc Service
	if svc.Name() != ServiceName {
		t.Fatal(svc.Name())
	}
	for o := range 256 {
		want := o >= int(OpLock) && o < int(opEnd) && uint8(o) != OpStatus ||
			uint8(o) == op.OpCancelWait || uint8(o) == op.OpTimer || uint8(o) == op.OpSessionEnded
		if svc.Mutates(uint8(o)) != want {
			t.Errorf("Mutates(%d) = %v", o, !want)
		}
	}
	if opEnd > op.OpReservedMin {
		t.Fatal("operation codes reach the reserved range")
	}
}

// TestDeterminism replays one random sequence of requests on an owner and a
// backup: they must end with identical snapshots and record identical
// effects, every error response must leave the state unchanged (failed
// mutations are not replicated), and tokens handed out must increase.
func TestDeterminism(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			owner, backup := newHarness(t), newHarness(t)
			backup.owner = false
			names := []string{"a", "b", "c"}
			owners := []string{"x", "y"}
			var reqs []*op.Request
			var parked []op.CallID
			var lastTok int64
			for i := range 600 {
				owner.now = owner.now.Add(time.Duration(rng.IntN(40)) * time.Millisecond)
				backup.now = owner.now
				var req *op.Request
				switch k := rng.IntN(10); {
				case k < 7:
					c := call{op: uint8(1 + rng.IntN(int(opEnd)-1)), name: names[rng.IntN(3)], session: uint64(1 + rng.IntN(4)),
						owner: owners[rng.IntN(2)], args: args{limit: uint32(rng.IntN(3)), attempt: uint64(rng.IntN(4))}}
					if rng.IntN(3) == 0 {
						c.num = int64(rng.IntN(200)) - 10
					}
					if rng.IntN(2) == 0 {
						c.timeout = time.Duration(rng.IntN(500)) * time.Millisecond
					}
					if len(reqs) > 0 && rng.IntN(10) == 0 {
						// A retry of an earlier call.
						r := *reqs[rng.IntN(len(reqs))]
						req = &r
					} else {
						req = owner.req(c)
					}
				case k < 8 && len(parked) > 0:
					c := parked[rng.IntN(len(parked))]
					req = &op.Request{Op: op.OpCancelWait, Name: names[rng.IntN(3)], Origin: c.Origin, CallSeq: c.Seq, Num: int64(op.CodeTimeout)}
				case k < 9:
					req = &op.Request{Op: op.OpTimer, Name: names[rng.IntN(3)], Key: leaseTimer}
				default:
					req = &op.Request{Op: op.OpSessionEnded, Num: int64(1 + rng.IntN(5))}
				}
				reqs = append(reqs, req)
				before := encodeSnapshot(owner.s)
				r1, fx1 := owner.exec(req)
				r2, fx2 := backup.exec(req)
				if fmt.Sprint(*r1) != fmt.Sprint(*r2) || fxString(fx1) != fxString(fx2) {
					t.Fatalf("step %d %+v: owner %+v %v, backup %+v %v", i, req, r1, fx1, r2, fx2)
				}
				if r1.Code != op.OK && !bytes.Equal(before, encodeSnapshot(owner.s)) {
					t.Fatalf("step %d %+v: error %v changed the state", i, req, r1.Err())
				}
				if hasKind(fx1, op.EffectPark) {
					parked = append(parked, req.Call())
				}
				if r1.Code == op.OK && (req.Op == OpLock || req.Op == OpTryLock) && r1.Found && r1.Num > lastTok {
					lastTok = r1.Num
				}
				for _, e := range fx1 {
					if e.Kind == op.EffectComplete && e.Resp.Code == op.OK {
						lastTok = max(lastTok, e.Resp.Num)
					}
				}
				if owner.s.last < lastTok {
					t.Fatalf("step %d: counter %d below a handed-out token %d", i, owner.s.last, lastTok)
				}
				checkInvariants(t, owner.s)
			}
			s1, _ := owner.s.Snapshot(owner.now)
			s2, _ := backup.s.Snapshot(backup.now)
			if !bytes.Equal(s1, s2) {
				t.Fatal("owner and backup snapshots differ")
			}
			// A snapshot round-trips to the same bytes.
			r := newState(3)
			if err := r.Restore(owner.now, s1); err != nil {
				t.Fatal(err)
			}
			if s3, _ := r.Snapshot(owner.now); !bytes.Equal(s1, s3) {
				t.Fatal("restored snapshot differs")
			}
		})
	}
}

// fxString prints effects with their responses (not response pointers).
func fxString(fx []op.Effect) string {
	var b strings.Builder
	for _, e := range fx {
		fmt.Fprintf(&b, "%d %v %s %s %d %x", e.Kind, e.Call, e.Name, e.Key, e.At.UnixNano(), e.Payload)
		if e.Resp != nil {
			fmt.Fprintf(&b, " %v", *e.Resp)
		}
		b.WriteByte(';')
	}
	return b.String()
}

func checkInvariants(t *testing.T, s *state) {
	t.Helper()
	for name, l := range s.locks {
		if !l.held {
			t.Fatalf("lock %q stored but not held (%d waiters)", name, len(l.waiters))
		}
		if l.h.count == 0 || l.h.token <= 0 || l.h.token > s.last {
			t.Fatalf("lock %q holder %+v, counter %d", name, l.h, s.last)
		}
		seen := map[op.CallID]bool{}
		for _, w := range l.waiters {
			if seen[w.call] {
				t.Fatalf("lock %q: call %v queued twice", name, w.call)
			}
			seen[w.call] = true
		}
	}
}

func TestRestoreRejectsCorruptSnapshots(t *testing.T) {
	h := newHarness(t)
	h.lock(1, "a", "L")
	h.park(2, "b", "L")
	good := encodeSnapshot(h.s)
	s := newState(0)
	s.Restore(h.now, good) //nolint:errcheck // checked below by comparison
	if !bytes.Equal(encodeSnapshot(s), good) {
		t.Fatal("round trip")
	}
	for i := range len(good) {
		if err := newState(0).Restore(h.now, good[:i]); err == nil {
			t.Fatalf("truncated snapshot of %d bytes accepted", i)
		}
	}
	if err := s.Restore(h.now, append(slices.Clone(good), 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	if !bytes.Equal(encodeSnapshot(s), good) {
		t.Fatal("a failed restore changed the state")
	}
	// A lock stored twice, and a free lock, are refused.
	b := binary.AppendVarint([]byte{snapshotVersion}, 10)
	b = binary.AppendUvarint(b, 1)
	b = varbin.AppendString(b, "x")
	b = varbin.AppendBool(b, false)
	b = binary.AppendUvarint(b, 0)
	if err := newState(0).Restore(h.now, b); err == nil {
		t.Fatal("free stored lock accepted")
	}
}

// FuzzStateMachine interprets the input as a sequence of requests (every
// operation, reserved ones included, on three locks, four sessions and
// two owner ids, with moving time) replayed on an owner and a backup: the
// two must agree on every response and effect, errors must not change the
// state, the invariants must hold after every step, and the final
// snapshot must round-trip.
func FuzzStateMachine(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{1, 0, 0, 0, 1, 0, 1, 0, 3, 0, 0, 0, 9, 5, 0, 0, 1, 0, 2, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		owner, backup := newHarness(t), newHarness(t)
		backup.owner = false
		names := []string{"a", "b", "c"}
		owners := []string{"x", "y"}
		var calls []op.CallID
		for i := 0; i+3 < len(data) && i < 4*300; i += 4 {
			b0, b1, b2, b3 := data[i], data[i+1], data[i+2], data[i+3]
			owner.now = owner.now.Add(time.Duration(b3%64) * time.Millisecond)
			backup.now = owner.now
			name := names[int(b1)%3]
			var req *op.Request
			switch k := b0 % 10; {
			case k < 6:
				c := call{op: uint8(1 + int(b0/10)%int(opEnd-1)), name: name, session: uint64(1 + b1/3%4), owner: owners[b2%2],
					args: args{limit: uint32(b2 / 2 % 3), attempt: uint64(b2 / 6 % 4)}}
				if b2&0x80 != 0 {
					c.num = int64(b3 % 100)
				}
				if b2&0x40 != 0 {
					c.timeout = time.Duration(b3) * time.Millisecond
				}
				req = owner.req(c)
			case k == 6 && len(calls) > 0:
				r := calls[int(b2)%len(calls)]
				req = &op.Request{Op: op.OpCancelWait, Name: name, Origin: r.Origin, CallSeq: r.Seq, Num: int64(op.CodeCanceled)}
			case k == 7:
				req = &op.Request{Op: op.OpTimer, Name: name, Key: leaseTimer}
			case k == 8:
				req = &op.Request{Op: op.OpSessionEnded, Num: int64(1 + b2%5)}
			default:
				// A re-sent earlier call.
				if len(calls) == 0 {
					continue
				}
				r := calls[int(b2)%len(calls)]
				req = owner.req(call{op: OpLock, name: name, session: r.Origin, owner: owners[b1%2], seq: r.Seq})
			}
			before := encodeSnapshot(owner.s)
			r1, fx1 := owner.exec(req)
			r2, fx2 := backup.exec(req)
			if fmt.Sprint(*r1) != fmt.Sprint(*r2) || fxString(fx1) != fxString(fx2) {
				t.Fatalf("step %d %+v: owner %+v, backup %+v", i/4, req, r1, r2)
			}
			if r1.Code != op.OK && (len(fx1) != 0 || !bytes.Equal(before, encodeSnapshot(owner.s))) {
				t.Fatalf("step %d %+v: error %v changed the state or had effects", i/4, req, r1.Err())
			}
			if hasKind(fx1, op.EffectPark) {
				calls = append(calls, req.Call())
			}
			checkInvariants(t, owner.s)
		}
		snap := encodeSnapshot(owner.s)
		if !bytes.Equal(snap, encodeSnapshot(backup.s)) {
			t.Fatal("owner and backup differ")
		}
		r := newState(0)
		if err := r.Restore(owner.now, snap); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(encodeSnapshot(r), snap) {
			t.Fatal("snapshot does not round-trip")
		}
	})
}
