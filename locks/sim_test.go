package locks

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// simCore is an in-process stand-in for the member core's side of the Exec
// seam, for testing the proxies before (and besides) the real runtime: it
// serialises calls per core, carries out Park and Complete (a parked call
// waits on a channel), fires Timer effects with real timers as OpTimer
// mutations, turns a caller giving up into OpCancelWait, ends sessions with
// OpSessionEnded, and simulates a failover (the states move through
// Snapshot/Restore to a "new owner", BecameOwner re-arms timers, parked
// calls are answered with a retriable error and re-sent by the invoker
// with the same identity). It is a harness, not a mock: the states are the
// real ones.
type simCore struct {
	mu     sync.Mutex
	states []*state
	x      op.Exec
	parked map[op.CallID]chan *op.Response
	timers map[string]*time.Timer // by partition/name/key
	ended  map[uint64]bool
	closed bool
	// loseAnswers drops the answers of completed parked calls (as if the
	// connection lost them), to test Abandon.
	loseAnswers bool
	events      []event
}

func newSimCore(partitions int) *simCore {
	c := &simCore{parked: map[op.CallID]chan *op.Response{}, timers: map[string]*time.Timer{}, ended: map[uint64]bool{}}
	for p := range partitions {
		c.states = append(c.states, newState(int32(p)))
	}
	return c
}

// close stops the timers; later calls fail with op.ErrClosed.
func (c *simCore) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for k, t := range c.timers {
		t.Stop()
		delete(c.timers, k)
	}
}

// apply runs req on its partition and carries out the effects; it returns
// the channel a parked call waits on (nil when answered at once).
func (c *simCore) apply(req *op.Request) (*op.Response, chan *op.Response) {
	now := time.Now()
	x := &c.x
	x.Reset(now, req.Partition, true, req)
	resp := c.states[req.Partition].Execute(x, req)
	var ch chan *op.Response
	for _, e := range x.Effects() {
		switch e.Kind {
		case op.EffectPark:
			ch = make(chan *op.Response, 1)
			c.parked[e.Call] = ch
		case op.EffectComplete:
			if w, ok := c.parked[e.Call]; ok {
				delete(c.parked, e.Call)
				if !c.loseAnswers {
					w <- e.Resp
				}
			}
		case op.EffectTimer:
			c.setTimer(req.Partition, e.Name, e.Key, e.At, now)
		case op.EffectEmit:
			if ev, err := decodeEvent(e.Payload); err == nil {
				c.events = append(c.events, ev)
			}
		}
	}
	out := *resp
	out.Value = bytes.Clone(resp.Value)
	return &out, ch
}

func (c *simCore) setTimer(p int32, name, key string, at, now time.Time) {
	k := fmt.Sprintf("%d/%s/%s", p, name, key)
	if t := c.timers[k]; t != nil {
		t.Stop()
	}
	c.timers[k] = time.AfterFunc(at.Sub(now), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed {
			return
		}
		delete(c.timers, k)
		c.apply(&op.Request{Service: ServiceName, Op: op.OpTimer, Partition: p, Name: name, Key: key, Num: at.UnixNano()})
	})
}

// endSession ends session on every partition, as the runtime does when its
// heartbeats stop.
func (c *simCore) endSession(session uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended[session] = true
	for p := range c.states {
		c.apply(&op.Request{Service: ServiceName, Op: op.OpSessionEnded, Partition: int32(p), Num: int64(session)})
	}
}

// failover moves every partition to a "new owner": states travel through
// Snapshot/Restore, the old timers stop and BecameOwner re-arms them, and
// parked calls are answered with a retriable error.
func (c *simCore) failover() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for k, t := range c.timers {
		t.Stop()
		delete(c.timers, k)
	}
	for p, st := range c.states {
		snap, err := st.Snapshot(now)
		if err != nil {
			return err
		}
		fresh := newState(int32(p))
		if err := fresh.Restore(now, snap); err != nil {
			return err
		}
		c.states[p] = fresh
		c.x.Reset(now, int32(p), true, nil)
		fresh.BecameOwner(&c.x)
		for _, e := range c.x.Effects() {
			if e.Kind == op.EffectTimer {
				c.setTimer(int32(p), e.Name, e.Key, e.At, now)
			}
		}
	}
	for call, ch := range c.parked {
		delete(c.parked, call)
		ch <- &op.Response{Code: op.CodeWrongOwner, Msg: "sim: failover"}
	}
	return nil
}

func (c *simCore) parkedCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.parked)
}

// simInvoker is one session (one process) on a simCore.
type simInvoker struct {
	c      *simCore
	origin uint64
	seq    atomic.Uint64
}

var _ op.Invoker = (*simInvoker)(nil)

func (c *simCore) invoker(session uint64) *simInvoker { return &simInvoker{c: c, origin: session} }

func (s *simInvoker) PartitionOf(key string) int32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int32(h.Sum32() % uint32(len(s.c.states)))
}

func (s *simInvoker) Invoke(ctx context.Context, req *op.Request) (*op.Response, error) {
	if err := op.FromContext(ctx); err != nil {
		return nil, err
	}
	r := *req
	if r.Partition < 0 {
		r.Partition = s.PartitionOf(r.Key)
	}
	if r.Origin == 0 {
		r.Origin, r.CallSeq = s.origin, s.seq.Add(1)
	}
	r.Value, r.Aux = bytes.Clone(r.Value), bytes.Clone(r.Aux)
	var backoff op.Backoff
	for {
		resp, err := s.attempt(ctx, &r)
		if err != nil {
			return nil, err
		}
		if !resp.Code.Retriable() {
			return resp, resp.Err()
		}
		if err := backoff.Wait(ctx, nil); err != nil {
			return nil, err
		}
	}
}

func (s *simInvoker) attempt(ctx context.Context, r *op.Request) (*op.Response, error) {
	c := s.c
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, op.ErrClosed
	}
	if c.ended[r.Origin] {
		c.mu.Unlock()
		return nil, op.Errorf(op.CodeSessionExpired, "sim: session %d ended", r.Origin)
	}
	r.Timeout = op.Remaining(ctx, time.Now())
	resp, ch := c.apply(r)
	c.mu.Unlock()
	if ch == nil {
		return resp, nil
	}
	select {
	case resp := <-ch:
		return resp, nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	if _, ok := c.parked[r.Call()]; ok {
		code := op.CodeCanceled
		if ctx.Err() == context.DeadlineExceeded {
			code = op.CodeTimeout
		}
		c.apply(&op.Request{Service: ServiceName, Op: op.OpCancelWait, Partition: r.Partition, Name: r.Name, Origin: r.Origin, CallSeq: r.CallSeq, Num: int64(code)})
		delete(c.parked, r.Call())
	}
	c.mu.Unlock()
	return nil, op.FromContext(ctx)
}

func (s *simInvoker) InvokeAll(ctx context.Context, req *op.Request) ([]*op.Response, error) {
	out := make([]*op.Response, len(s.c.states))
	for p := range out {
		r := *req
		r.Partition = int32(p)
		resp, err := s.Invoke(ctx, &r)
		if err != nil {
			return nil, err
		}
		out[p] = resp
	}
	return out, nil
}
