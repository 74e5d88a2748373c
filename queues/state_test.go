package queues

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

var t0 = time.Unix(1_800_000_000, 0)

// pair is an owner state and a backup state fed the same requests, as the
// member core does; every step checks that both end in the same state.
type pair struct {
	t       *testing.T
	owner   *state
	backup  *state
	now     time.Time
	seq     uint64
	effects []op.Effect
}

func newPair(t *testing.T, rules ...Rule) *pair {
	svc := Service{Rules: rules}
	if err := svc.Validate(); err != nil {
		t.Fatal(err)
	}
	return &pair{t: t, owner: svc.NewState(7).(*state), backup: svc.NewState(7).(*state), now: t0}
}

func (p *pair) req(code uint8, name string) *op.Request {
	p.seq++
	return &op.Request{Service: ServiceName, Name: name, Key: name, Op: code, Origin: 1, CallSeq: p.seq, Timeout: time.Minute}
}

// run applies req on the owner and, if it mutates, on the backup.
func (p *pair) run(req *op.Request) *op.Response {
	p.t.Helper()
	var x op.Exec
	x.Reset(p.now, 7, true, req)
	resp := p.owner.Execute(&x, req)
	p.effects = append([]op.Effect(nil), x.Effects()...)
	if (Service{}).Mutates(req.Op) {
		var y op.Exec
		y.Reset(p.now, 7, false, req)
		p.backup.Execute(&y, req)
		// Completions are replayed on backups too (the core records them
		// for retries): they must match the owner's.
		if got, want := completions(y.Effects()), completions(x.Effects()); got != want {
			p.t.Fatalf("backup completions %s, owner %s", got, want)
		}
		p.same()
	}
	return resp
}

func completions(es []op.Effect) string {
	s := ""
	for _, e := range es {
		if e.Kind == op.EffectComplete {
			s += fmt.Sprintf("[%d/%d %v %q %d]", e.Call.Origin, e.Call.Seq, e.Resp.Found, e.Resp.Value, e.Resp.Code)
		}
	}
	return s
}

func (p *pair) same() {
	p.t.Helper()
	a, _ := p.owner.Snapshot(p.now)
	b, _ := p.backup.Snapshot(p.now)
	if !bytes.Equal(a, b) {
		p.t.Fatalf("owner and backup diverged")
	}
}

func (p *pair) offer(name, item string) *op.Response {
	r := p.req(OpOffer, name)
	r.Value = []byte(item)
	return p.run(r)
}

func (p *pair) parked() bool {
	for _, e := range p.effects {
		if e.Kind == op.EffectPark {
			return true
		}
	}
	return false
}

func (p *pair) completed(call uint64) *op.Response {
	for _, e := range p.effects {
		if e.Kind == op.EffectComplete && e.Call.Seq == call {
			return e.Resp
		}
	}
	return nil
}

func TestOfferPollFIFO(t *testing.T) {
	p := newPair(t)
	for i := range 5 {
		if r := p.offer("q", fmt.Sprint(i)); r.Code != op.OK || !r.Found {
			t.Fatalf("offer %d: %+v", i, r)
		}
	}
	if r := p.run(p.req(OpPeek, "q")); string(r.Value) != "0" {
		t.Fatalf("peek = %q", r.Value)
	}
	if r := p.run(p.req(OpLen, "q")); r.Num != 5 {
		t.Fatalf("len = %d", r.Num)
	}
	for i := range 5 {
		r := p.run(p.req(OpPoll, "q"))
		if !r.Found || string(r.Value) != fmt.Sprint(i) {
			t.Fatalf("poll %d = %+v", i, r)
		}
	}
	if r := p.run(p.req(OpPoll, "q")); r.Found {
		t.Fatalf("poll on empty = %+v", r)
	}
	if len(p.owner.queues) != 0 || p.owner.Len() != 0 {
		t.Fatalf("empty queue kept: %d queues, len %d", len(p.owner.queues), p.owner.Len())
	}
}

func TestPollWaitParksAndIsServedInOrder(t *testing.T) {
	p := newPair(t)
	w1 := p.req(OpPollWait, "q")
	p.run(w1)
	if !p.parked() {
		t.Fatal("poll on empty queue did not park")
	}
	w2 := p.req(OpTakeWait, "q")
	p.run(w2)
	if !p.parked() {
		t.Fatal("take on empty queue did not park")
	}
	// A retry of a parked call (after a failover) parks again, once.
	p.run(&op.Request{Service: ServiceName, Name: "q", Op: OpPollWait, Origin: 1, CallSeq: w1.CallSeq, Timeout: time.Minute})
	if !p.parked() || len(p.owner.queues["q"].takers) != 2 {
		t.Fatalf("retried waiter: parked %v, %d takers", p.parked(), len(p.owner.queues["q"].takers))
	}
	p.offer("q", "a")
	if r := p.completed(w1.CallSeq); r == nil || string(r.Value) != "a" {
		t.Fatalf("first waiter got %+v", r)
	}
	if p.completed(w2.CallSeq) != nil {
		t.Fatal("second waiter served with no item")
	}
	p.offer("q", "b")
	r := p.completed(w2.CallSeq)
	if r == nil || !r.Found {
		t.Fatalf("taker got %+v", r)
	}
	count, data, err := decodeDelivery(r.Value)
	if err != nil || count != 1 || string(data) != "b" || r.Num != 1 {
		t.Fatalf("delivery = %d %q %v id %d", count, data, err, r.Num)
	}
	// The delivery armed its visibility timer.
	var timer bool
	for _, e := range p.effects {
		timer = timer || (e.Kind == op.EffectTimer && e.Key == "1" && e.At.Equal(t0.Add(DefaultVisibility)))
	}
	if !timer {
		t.Fatalf("no visibility timer in %+v", p.effects)
	}
}

func TestCancelWaitRemovesWaiter(t *testing.T) {
	p := newPair(t)
	w := p.req(OpPollWait, "q")
	p.run(w)
	c := &op.Request{Service: ServiceName, Name: "q", Op: op.OpCancelWait, Origin: 1, CallSeq: w.CallSeq, Num: int64(op.CodeTimeout)}
	p.run(c)
	if _, ok := p.owner.queues["q"]; ok {
		t.Fatal("queue with a cancelled waiter kept")
	}
	p.offer("q", "x")
	if p.completed(w.CallSeq) != nil {
		t.Fatal("item handed to a cancelled waiter")
	}
	if r := p.run(p.req(OpLen, "q")); r.Num != 1 {
		t.Fatalf("item not queued: len %d", r.Num)
	}
}

func TestTakeAckNackVisibility(t *testing.T) {
	p := newPair(t, Rule{Pattern: "*", Visibility: time.Second})
	p.offer("q", "a")
	p.offer("q", "b")
	r := p.run(p.req(OpTake, "q"))
	id := r.Num
	if !r.Found || id != 1 {
		t.Fatalf("take = %+v", r)
	}
	if r := p.run(p.req(OpLen, "q")); r.Num != 1 || r.Value[0] != 1 || len(r.Value) != 3 {
		t.Fatalf("len = %d ready, %v", r.Num, r.Value)
	}
	// Nack puts it back at the head.
	n := p.req(OpNack, "q")
	n.Num = id
	if r := p.run(n); !r.Found {
		t.Fatal("nack of in-flight delivery not found")
	}
	r = p.run(p.req(OpTake, "q"))
	count, data, _ := decodeDelivery(r.Value)
	if string(data) != "a" || count != 2 {
		t.Fatalf("redelivery = %q count %d", data, count)
	}
	// The visibility timeout returns it: a timer fired early is ignored.
	fire := func() {
		tr := &op.Request{Service: ServiceName, Name: "q", Key: strconv.FormatInt(r.Num, 10), Op: op.OpTimer}
		p.run(tr)
	}
	p.now = p.now.Add(500 * time.Millisecond)
	fire()
	if len(p.owner.queues["q"].inflight) != 1 {
		t.Fatal("early timer requeued the delivery")
	}
	p.now = p.now.Add(600 * time.Millisecond)
	fire()
	if len(p.owner.queues["q"].inflight) != 0 {
		t.Fatal("visibility timeout did not requeue")
	}
	// Acking the timed-out delivery reports it is gone.
	a := p.req(OpAck, "q")
	a.Num = r.Num
	if r := p.run(a); r.Found {
		t.Fatal("ack of a timed-out delivery succeeded")
	}
	r = p.run(p.req(OpTake, "q"))
	count, data, _ = decodeDelivery(r.Value)
	if string(data) != "a" || count != 3 {
		t.Fatalf("after timeout = %q count %d", data, count)
	}
	a = p.req(OpAck, "q")
	a.Num = r.Num
	if r := p.run(a); !r.Found {
		t.Fatal("ack failed")
	}
	if r := p.run(p.req(OpPoll, "q")); string(r.Value) != "b" {
		t.Fatalf("poll = %q", r.Value)
	}
}

func TestDeadLetter(t *testing.T) {
	p := newPair(t, Rule{Pattern: "q", MaxDeliveries: 2})
	p.offer("q", "poison")
	dlqWaiter := p.req(OpPollWait, "q"+DeadLetterSuffix)
	p.run(dlqWaiter)
	for i := range 2 {
		r := p.run(p.req(OpTake, "q"))
		if !r.Found {
			t.Fatalf("take %d: nothing", i)
		}
		n := p.req(OpNack, "q")
		n.Num = r.Num
		p.run(n)
	}
	if r := p.completed(dlqWaiter.CallSeq); r == nil || string(r.Value) != "poison" {
		t.Fatalf("dead-letter waiter got %+v", r)
	}
	if r := p.run(p.req(OpLen, "q")); r.Num != 0 {
		t.Fatalf("poison item still queued: %d", r.Num)
	}
}

func TestCapacityAndOfferWait(t *testing.T) {
	p := newPair(t, Rule{Pattern: "b*", Capacity: 2})
	p.offer("b", "1")
	p.offer("b", "2")
	r := p.offer("b", "3")
	if !errors.Is(r.Err(), op.ErrQueueFull) {
		t.Fatalf("offer past capacity = %v", r.Err())
	}
	ow := p.req(OpOfferWait, "b")
	ow.Value = []byte("3")
	p.run(ow)
	if !p.parked() {
		t.Fatal("offer-wait on a full queue did not park")
	}
	// Another plain offer must not jump the waiting one.
	if r := p.offer("b", "4"); !errors.Is(r.Err(), op.ErrQueueFull) {
		t.Fatalf("offer jumped a waiting offer: %v", r.Err())
	}
	p.run(p.req(OpPoll, "b"))
	if r := p.completed(ow.CallSeq); r == nil || !r.Found {
		t.Fatalf("waiting offer not admitted: %+v", r)
	}
	var got []string
	for {
		r := p.run(p.req(OpPoll, "b"))
		if !r.Found {
			break
		}
		got = append(got, string(r.Value))
	}
	if fmt.Sprint(got) != "[2 3]" {
		t.Fatalf("order = %v", got)
	}
	// In-flight items count against capacity too.
	p.offer("b", "x")
	p.offer("b", "y")
	p.run(p.req(OpTake, "b"))
	if r := p.offer("b", "z"); !errors.Is(r.Err(), op.ErrQueueFull) {
		t.Fatalf("in-flight item not counted: %v", r.Err())
	}
	// OfferAll is all or none.
	all := p.req(OpOfferAll, "c")
	all.Value = encodeItems([][]byte{[]byte("1"), []byte("2"), {}})
	if r := p.run(all); r.Num != 3 {
		t.Fatalf("offer all = %+v", r)
	}
	d := p.req(OpDrain, "c")
	d.Num = 10
	r = p.run(d)
	items, err := decodeItems(r.Value, MaxBatch)
	if err != nil || len(items) != 3 || string(items[1]) != "2" || len(items[2]) != 0 {
		t.Fatalf("drain = %q %v", items, err)
	}
}

func TestSessionEndedReturnsDeliveries(t *testing.T) {
	p := newPair(t)
	for _, s := range []string{"a", "b", "c"} {
		p.offer("q", s)
	}
	take := func(origin uint64) *op.Response {
		r := p.req(OpTake, "q")
		r.Origin = origin
		return p.run(r)
	}
	take(42) // a
	take(42) // b
	take(43) // c
	w := p.req(OpTakeWait, "q")
	w.Origin = 42
	p.run(w)
	other := p.req(OpTakeWait, "q")
	other.Origin = 44
	p.run(other)
	p.run(&op.Request{Service: ServiceName, Op: op.OpSessionEnded, Num: 42})
	// The dead session's waiter is answered with ErrSessionExpired; its
	// deliveries a and b return to the head in order, and the live waiter
	// gets a.
	if r := p.completed(w.CallSeq); r == nil || !errors.Is(r.Err(), op.ErrSessionExpired) {
		t.Fatalf("dead waiter = %+v", r)
	}
	r := p.completed(other.CallSeq)
	if r == nil {
		t.Fatal("live waiter not served")
	}
	if _, data, _ := decodeDelivery(r.Value); string(data) != "a" {
		t.Fatalf("live waiter got %q", data)
	}
	if r := p.run(p.req(OpPoll, "q")); string(r.Value) != "b" {
		t.Fatalf("head after session end = %q", r.Value)
	}
	if n := len(p.owner.queues["q"].inflight); n != 2 {
		t.Fatalf("in flight = %d, want c and a", n)
	}
}

func TestBecameOwnerRearmsTimers(t *testing.T) {
	p := newPair(t)
	p.offer("q", "a")
	p.offer("z", "b")
	p.run(p.req(OpTake, "q"))
	p.run(p.req(OpTake, "z"))
	// The backup is promoted: it re-arms both visibility timers.
	var x op.Exec
	x.Reset(p.now, 7, true, nil)
	p.backup.BecameOwner(&x)
	n := 0
	for _, e := range x.Effects() {
		if e.Kind == op.EffectTimer {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("re-armed %d timers, want 2", n)
	}
}

func TestBadInput(t *testing.T) {
	p := newPair(t)
	for _, c := range []struct {
		req  *op.Request
		want error
	}{
		{&op.Request{Service: ServiceName, Name: "q", Op: 200}, op.ErrUnknownOp},
		{&op.Request{Service: ServiceName, Name: "q", Op: 0}, op.ErrUnknownOp},
		{&op.Request{Service: ServiceName, Name: "", Op: OpOffer}, op.ErrBadRequest},
		{&op.Request{Service: ServiceName, Name: "q", Op: OpTake, Num: -1}, op.ErrBadRequest},
		{&op.Request{Service: ServiceName, Name: "q", Op: OpDrain, Num: -1}, op.ErrBadRequest},
		{&op.Request{Service: ServiceName, Name: "q", Op: OpOfferAll, Value: []byte{0xff}}, op.ErrBadRequest},
	} {
		if r := p.run(c.req); !errors.Is(r.Err(), c.want) {
			t.Errorf("op %d: %v, want %v", c.req.Op, r.Err(), c.want)
		}
	}
	if err := (Service{Rules: []Rule{{Pattern: "[", Capacity: 1}}}).Validate(); err == nil {
		t.Error("bad pattern accepted")
	}
	if err := (Service{Rules: []Rule{{Pattern: "*", Capacity: -1}}}).Validate(); err == nil {
		t.Error("negative capacity accepted")
	}
	// An anonymous caller (no identity) cannot be parked.
	r := p.run(&op.Request{Service: ServiceName, Name: "q", Op: OpPollWait})
	if p.parked() || r.Found {
		t.Fatal("anonymous call parked")
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	p := newPair(t, Rule{Pattern: "*", Capacity: 10})
	p.offer("q", "a")
	p.offer("q", "")
	p.offer("r", "c")
	p.run(p.req(OpTake, "r"))
	p.run(p.req(OpPollWait, "w"))
	snap, err := p.owner.Snapshot(p.now)
	if err != nil {
		t.Fatal(err)
	}
	s2 := Service{Rules: p.owner.rules}.NewState(7).(*state)
	if err := s2.Restore(p.now, snap); err != nil {
		t.Fatal(err)
	}
	snap2, _ := s2.Snapshot(p.now)
	if !bytes.Equal(snap, snap2) || s2.Len() != p.owner.Len() {
		t.Fatalf("round trip differs (len %d vs %d)", s2.Len(), p.owner.Len())
	}
	// Delivery ids keep growing after a restore.
	p.owner = s2
	p.offer("r", "d")
	if r := p.run(p.req(OpTake, "r")); r.Num != 2 {
		t.Fatalf("delivery id after restore = %d", r.Num)
	}
	for _, bad := range [][]byte{nil, {9}, {1, 0xff, 0xff, 0xff, 0xff, 0x0f}, append(snap[:len(snap):len(snap)], 0)} {
		if err := s2.Restore(p.now, bad); !errors.Is(err, op.ErrBadRequest) {
			t.Errorf("restore %x: %v", bad, err)
		}
	}
}

func FuzzRestore(f *testing.F) {
	p := newPair(&testing.T{})
	p.offer("q", "a")
	p.run(p.req(OpTake, "q"))
	p.run(p.req(OpPollWait, "w"))
	snap, _ := p.owner.Snapshot(p.now)
	f.Add(snap)
	f.Add(encodeItems([][]byte{[]byte("x")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := Service{}.NewState(0).(*state)
		if err := s.Restore(t0, b); err != nil {
			return
		}
		again, err := s.Snapshot(t0)
		if err != nil {
			t.Fatal(err)
		}
		s2 := Service{}.NewState(0).(*state)
		if err := s2.Restore(t0, again); err != nil {
			t.Fatalf("re-restore: %v", err)
		}
		_, _ = decodeItems(b, MaxBatch)
		_, _, _ = decodeDelivery(b)
	})
}

func TestWaitIsDecidedByTheOwner(t *testing.T) {
	p := newPair(t)
	w := p.req(OpPollWait, "q")
	w.Aux = binary.AppendUvarint(nil, 100)
	p.run(w)
	var at time.Time
	for _, e := range p.effects {
		if e.Kind == op.EffectPark {
			at = e.At
		}
	}
	if !at.Equal(t0.Add(100 * time.Millisecond)) {
		t.Fatalf("parked until %v, want now+100ms", at)
	}
	bad := p.req(OpTakeWait, "q")
	bad.Aux = []byte{0xff}
	if r := p.run(bad); !errors.Is(r.Err(), op.ErrBadRequest) {
		t.Fatalf("bad wait = %v", r.Err())
	}
}
