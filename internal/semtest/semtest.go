// Package semtest is a small test-only structure that exercises the op.Exec
// seam end to end: a counting semaphore whose Acquire parks callers (FIFO)
// until permits are released, whose holds belong to the caller's session
// (released when the session ends), which emits an event on every release,
// and an alarm that fires through a replicated timer. Tests register
// Service{} through grid.Config.Services; it is not a product structure.
package semtest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// ServiceName is the service's name.
const ServiceName = "semtest"

// Operations.
const (
	// OpInit sets the permit count to Num if the semaphore is new.
	OpInit uint8 = iota + 1
	// OpAcquire takes Num permits (default 1), waiting in FIFO order.
	// Response.Num is a grant number (increasing per semaphore).
	OpAcquire
	// OpRelease gives back Num permits (default 1) held by the caller's
	// session. Fails with op.ErrNotLockOwner if it holds fewer.
	OpRelease
	// OpInfo returns the free permits (Num) and, in Value, a JSON Info.
	OpInfo
	// OpAlarm arms the alarm to fire Num milliseconds from now.
	OpAlarm
)

// Info describes a semaphore, for tests.
type Info struct {
	Free    int64            `json:"free"`
	Holders map[uint64]int64 `json:"holders"`
	Waiters int              `json:"waiters"`
	AlarmAt int64            `json:"alarm_at"`
	Fired   int              `json:"fired"`
	Grants  int64            `json:"grants"`
}

// Service is the semaphore service.
type Service struct{}

// Name implements op.Service.
func (Service) Name() string { return ServiceName }

// NewState implements op.Service.
func (Service) NewState(int32) op.State { return &State{sems: map[string]*sem{}} }

// Mutates implements op.Service.
func (Service) Mutates(o uint8) bool { return o != OpInfo }

type waiter struct {
	Call     op.CallID `json:"call"`
	N        int64     `json:"n"`
	Deadline int64     `json:"deadline"`
}

type sem struct {
	Permits int64            `json:"permits"`
	Holders map[uint64]int64 `json:"holders"`
	Waiters []waiter         `json:"waiters"`
	AlarmAt int64            `json:"alarm_at"`
	Fired   int              `json:"fired"`
	Grants  int64            `json:"grants"`
}

func (s *sem) free() int64 {
	f := s.Permits
	for _, n := range s.Holders {
		f -= n
	}
	return f
}

// State holds the semaphores of one partition.
type State struct {
	sems map[string]*sem
}

var (
	_ op.Executor        = (*State)(nil)
	_ op.SessionListener = (*State)(nil)
	_ op.OwnerHook       = (*State)(nil)
)

// ListensForSessions implements op.SessionListener.
func (*State) ListensForSessions() {}

// Apply implements op.State (the core calls Execute).
func (st *State) Apply(now time.Time, req *op.Request) *op.Response {
	var x op.Exec
	x.Reset(now, req.Partition, true, req)
	return st.Execute(&x, req)
}

func (st *State) get(name string) *sem {
	s := st.sems[name]
	if s == nil {
		s = &sem{Holders: map[uint64]int64{}}
		st.sems[name] = s
	}
	return s
}

// Execute implements op.Executor.
func (st *State) Execute(x *op.Exec, req *op.Request) *op.Response {
	switch req.Op {
	case OpInit:
		s := st.get(req.Name)
		if s.Permits == 0 {
			s.Permits = req.Num
		}
		return &op.Response{Num: s.Permits}
	case OpAcquire:
		s := st.get(req.Name)
		n := max(req.Num, 1)
		if i := slices.IndexFunc(s.Waiters, func(w waiter) bool { return w.Call == x.Caller }); i >= 0 {
			// The same call re-sent (after a failover or a reconnect):
			// it keeps its place.
			x.Park(time.Time{})
			return &op.Response{}
		}
		if len(s.Waiters) == 0 && s.free() >= n {
			s.Holders[x.Caller.Origin] += n
			s.Grants++
			return &op.Response{Found: true, Num: s.Grants}
		}
		if x.Caller.Origin == 0 {
			return &op.Response{Code: op.CodeBadRequest, Msg: "anonymous acquire"}
		}
		var dl int64
		if !x.Deadline.IsZero() {
			dl = x.Deadline.UnixNano()
		}
		s.Waiters = append(s.Waiters, waiter{Call: x.Caller, N: n, Deadline: dl})
		x.Park(time.Time{})
		return &op.Response{}
	case OpRelease:
		s := st.get(req.Name)
		n := max(req.Num, 1)
		if s.Holders[x.Caller.Origin] < n {
			return &op.Response{Code: op.CodeNotLockOwner, Msg: fmt.Sprintf("session %x holds %d permits of %s", x.Caller.Origin, s.Holders[x.Caller.Origin], req.Name)}
		}
		s.Holders[x.Caller.Origin] -= n
		if s.Holders[x.Caller.Origin] == 0 {
			delete(s.Holders, x.Caller.Origin)
		}
		st.grant(x, req.Name, s)
		x.Emit(req.Name, []byte(fmt.Sprintf("released %d", n)))
		return &op.Response{}
	case OpInfo:
		s := st.sems[req.Name]
		if s == nil {
			return &op.Response{}
		}
		b, _ := json.Marshal(Info{Free: s.free(), Holders: s.Holders, Waiters: len(s.Waiters), AlarmAt: s.AlarmAt, Fired: s.Fired, Grants: s.Grants})
		return &op.Response{Found: true, Num: s.free(), Value: b}
	case OpAlarm:
		s := st.get(req.Name)
		s.AlarmAt = x.Now.Add(time.Duration(req.Num) * time.Millisecond).UnixNano()
		x.Timer(req.Name, "alarm", time.Unix(0, s.AlarmAt))
		return &op.Response{}
	case op.OpTimer:
		s := st.sems[req.Name]
		if s == nil || s.AlarmAt == 0 || x.Now.UnixNano() < s.AlarmAt {
			return &op.Response{} // stale or early fire
		}
		s.AlarmAt = 0
		s.Fired++
		x.Emit(req.Name, []byte("alarm"))
		return &op.Response{}
	case op.OpCancelWait:
		s := st.sems[req.Name]
		if s == nil {
			return &op.Response{}
		}
		call := req.Call()
		s.Waiters = slices.DeleteFunc(s.Waiters, func(w waiter) bool { return w.Call == call })
		st.grant(x, req.Name, s) // a big waiter leaving may unblock smaller ones
		return &op.Response{}
	case op.OpSessionEnded:
		sess := uint64(req.Num)
		for name, s := range st.sems {
			delete(s.Holders, sess)
			s.Waiters = slices.DeleteFunc(s.Waiters, func(w waiter) bool { return w.Call.Origin == sess })
			st.grant(x, name, s)
		}
		return &op.Response{}
	}
	return &op.Response{Code: op.CodeUnknownOp, Msg: fmt.Sprintf("semtest op %d", req.Op)}
}

// grant wakes waiters in FIFO order while permits suffice.
func (st *State) grant(x *op.Exec, name string, s *sem) {
	for len(s.Waiters) > 0 && s.free() >= s.Waiters[0].N {
		w := s.Waiters[0]
		s.Waiters = s.Waiters[1:]
		s.Holders[w.Call.Origin] += w.N
		s.Grants++
		x.Complete(w.Call, &op.Response{Found: true, Num: s.Grants})
	}
}

// BecameOwner implements op.OwnerHook: it re-arms pending alarms.
func (st *State) BecameOwner(x *op.Exec) {
	for name, s := range st.sems {
		if s.AlarmAt != 0 {
			x.Timer(name, "alarm", time.Unix(0, s.AlarmAt))
		}
	}
}

// Snapshot implements op.State.
func (st *State) Snapshot(time.Time) ([]byte, error) { return json.Marshal(st.sems) }

// Restore implements op.State.
func (st *State) Restore(_ time.Time, b []byte) error {
	sems := map[string]*sem{}
	if err := json.Unmarshal(b, &sems); err != nil {
		return fmt.Errorf("%w: semtest snapshot: %v", op.ErrBadRequest, err)
	}
	for _, s := range sems {
		if s.Holders == nil {
			s.Holders = map[uint64]int64{}
		}
	}
	st.sems = sems
	return nil
}

// Len implements op.State.
func (st *State) Len() int { return len(st.sems) }

// Sem is a typed proxy over an op.Invoker (a member or a client).
type Sem struct {
	inv  op.Invoker
	name string
}

// New returns the semaphore name.
func New(inv op.Invoker, name string) *Sem { return &Sem{inv: inv, name: name} }

func (s *Sem) call(ctx context.Context, o uint8, num int64) (*op.Response, error) {
	return s.inv.Invoke(ctx, &op.Request{Service: ServiceName, Name: s.name, Op: o, Partition: s.inv.PartitionOf(s.name), Key: s.name, Num: num})
}

// Init sets the permit count if the semaphore is new.
func (s *Sem) Init(ctx context.Context, permits int64) error {
	_, err := s.call(ctx, OpInit, permits)
	return err
}

// Acquire takes n permits, waiting until ctx ends. It returns the grant
// number.
func (s *Sem) Acquire(ctx context.Context, n int64) (int64, error) {
	resp, err := s.call(ctx, OpAcquire, n)
	if err != nil {
		return 0, err
	}
	return resp.Num, nil
}

// Release gives back n permits held by this invoker's session.
func (s *Sem) Release(ctx context.Context, n int64) error {
	_, err := s.call(ctx, OpRelease, n)
	return err
}

// Alarm arms the alarm to fire after d.
func (s *Sem) Alarm(ctx context.Context, d time.Duration) error {
	_, err := s.call(ctx, OpAlarm, d.Milliseconds())
	return err
}

// Info reads the semaphore's state.
func (s *Sem) Info(ctx context.Context) (Info, error) {
	resp, err := s.call(ctx, OpInfo, 0)
	if err != nil {
		return Info{}, err
	}
	var in Info
	if resp.Found {
		if err := json.Unmarshal(resp.Value, &in); err != nil {
			return Info{}, err
		}
	}
	return in, nil
}
