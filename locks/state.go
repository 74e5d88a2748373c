package locks

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// ServiceName is the op.Request.Service value the lock service answers.
const ServiceName = "lock"

// Operation codes of the lock service (op.Request.Op). They are part of the
// wire protocol: never renumber. Every operation reads Request.Name (the
// lock name, which must not be empty); proxies also put the name in Key so
// the request routes to the partition the name hashes to.
//
// The holder of a lock is the caller's session (Request.Origin, one per
// client process or member) together with a caller-chosen owner id
// (Request.Value, at most MaxOwnerLen bytes). Lock, TryLock, Unlock and
// Abandon refuse an anonymous caller (Origin 0) with op.ErrBadRequest.
//
// Aux carries optional arguments (see encodeArgs): the reentrancy limit
// (0: unlimited) and an attempt id that names one acquisition for Abandon.
// Request fields not listed are ignored. Response.Value never aliases the
// state.
const (
	// OpLock acquires the lock for the holder, waiting in FIFO order while
	// another holder has it (the call parks until granted, its deadline
	// passes or its caller gives up). Num: lease in milliseconds (0: none;
	// negative fails with op.ErrBadRequest). A holder that already holds
	// the lock re-enters it at once (same token, hold count + 1) unless
	// that would exceed its reentrancy limit (op.ErrBadRequest).
	// Found: true; Num: the fencing token.
	OpLock uint8 = iota + 1
	// OpTryLock is OpLock that never waits. Found: acquired; Num: the
	// fencing token when acquired, else 0.
	OpTryLock
	// OpUnlock releases one hold of the caller's holder; the last one frees
	// the lock and grants it to the first waiter. Num: the expected token
	// (0: any). A caller that is not the holder (or whose lease expired)
	// gets op.ErrNotLockOwner. Found: true; Num: the holds left.
	OpUnlock
	// OpStatus reads the lock without changing it. Found: held; Num: the
	// holder's token; Value: the Status encoding (see encodeStatus), whose
	// Mine flag says whether the caller's session and owner id (Value) hold
	// it.
	OpStatus
	// OpForceUnlock frees the lock whoever holds it (for operators) and
	// grants it to the first waiter. Num: the expected token (0: any).
	// Found: a hold was released; Num: the released token.
	OpForceUnlock
	// OpAbandon undoes one acquisition whose caller gave up (its context
	// ended, so it may never have seen the answer): if the attempt id in
	// Aux is still waiting it leaves the queue; if it is the holder's
	// latest acquisition, one hold is released. Anything else is left
	// alone. Found: something was undone.
	OpAbandon
	// OpMerge carries a partition snapshot (Value) taken on the losing
	// side of a healed network split into this partition (op.Merger; Num:
	// op.MergeRevoke): the token counter is raised to at least the
	// snapshot's, so every token granted from now on is above every token
	// the losing side issued, and the grants made there are revoked (not
	// carried over; their holders' next Unlock fails with
	// op.ErrNotLockOwner and their tokens are fenced off by any later
	// holder's). Name may be empty (the counter only). Num: 1 if the
	// snapshot held lock Name (a revoked grant), else 0.
	OpMerge

	opEnd
)

// MaxOwnerLen bounds the owner id (Request.Value) of a holder, in bytes.
const MaxOwnerLen = 256

// maxHolds caps the hold count of a reentrant holder (the "unlimited"
// reentrancy limit).
const maxHolds = math.MaxInt32

// leaseTimer is the Key of the lease timers the state sets (Name is the
// lock's name).
const leaseTimer = "lease"

// Service is the lock service: it creates the per-partition state machines
// the member core hosts. Register it with the member under ServiceName.
type Service struct{}

var (
	_ op.Service         = Service{}
	_ op.State           = (*state)(nil)
	_ op.Executor        = (*state)(nil)
	_ op.SessionListener = (*state)(nil)
	_ op.OwnerHook       = (*state)(nil)
)

// Name returns ServiceName.
func (Service) Name() string { return ServiceName }

// AdminOp reports whether an operation needs the admin role on clusters
// that check client tokens (grid.AdminOps): ForceUnlock does.
func (Service) AdminOp(o uint8) bool { return o == OpForceUnlock }

// Mutates reports whether a lock operation may change state: every one but
// OpStatus, including the member core's reserved operations.
func (Service) Mutates(o uint8) bool {
	switch o {
	case OpLock, OpTryLock, OpUnlock, OpForceUnlock, OpAbandon, OpMerge,
		op.OpCancelWait, op.OpTimer, op.OpSessionEnded:
		return true
	}
	return false
}

// NewState returns the empty lock state of one partition. It implements
// op.Executor, op.SessionListener and op.OwnerHook besides op.State.
func (Service) NewState(partition int32) op.State { return newState(partition) }

// state holds every lock whose name hashes to one partition. It is not safe
// for concurrent use: the member core serialises calls (op.State contract).
//
// Invariant: a lock that is not held has no waiters, and a lock that is
// neither held nor waited for is not stored (the token counter lives in the
// state, so forgetting a lock forgets nothing that matters).
type state struct {
	partition int32
	// last is the highest fencing token handed out in this partition.
	last  int64
	locks map[string]*lock
}

type lock struct {
	name    string
	held    bool
	h       holder
	waiters []waiter
}

// holder is the current holder of a lock.
type holder struct {
	session uint64
	owner   string
	token   int64
	count   uint32
	// lease is when the lease ends, in Unix nanoseconds (0: no lease).
	lease int64
	// call is the invocation that was granted the lock, so a retry of it
	// that reaches the state again is answered instead of re-entering.
	call op.CallID
	// attempt names the latest acquisition (grant or re-entry), for
	// OpAbandon; 0 when unknown or already abandoned.
	attempt uint64
}

// waiter is a parked OpLock.
type waiter struct {
	call    op.CallID // call.Origin is the waiter's session
	owner   string
	leaseMS int64
	limit   uint32
	attempt uint64
	// deadline is when its caller stops waiting, in Unix nanoseconds (0:
	// never); a waiter past it is skipped when the lock is granted.
	deadline int64
}

func newState(partition int32) *state {
	return &state{partition: partition, locks: make(map[string]*lock)}
}

// ListensForSessions marks the state as an op.SessionListener.
func (*state) ListensForSessions() {}

func fail(c op.Code, format string, args ...any) *op.Response {
	return &op.Response{Code: c, Msg: fmt.Sprintf(format, args...)}
}

// Apply executes req at time now as the owner, dropping any effect. The
// member core calls Execute; Apply serves callers without the seam.
func (s *state) Apply(now time.Time, req *op.Request) *op.Response {
	var x op.Exec
	x.Reset(now, s.partition, true, req)
	return s.Execute(&x, req)
}

// Execute runs one operation. It never panics and never blocks: a lock that
// must wait joins the waiter queue and parks the call with x.Park; grants,
// lease timers and events are recorded on x. A response with an error code
// never comes with a state change, so it does not matter whether the core
// replicates failed mutations.
func (s *state) Execute(x *op.Exec, req *op.Request) *op.Response {
	if req == nil {
		return fail(op.CodeBadRequest, "locks: nil request")
	}
	now := x.Now.UnixNano()
	switch req.Op {
	case op.OpTimer:
		return s.timer(x, req.Name, now)
	case op.OpCancelWait:
		return s.cancelWait(req.Name, req.Call())
	case op.OpSessionEnded:
		return s.sessionEnded(x, uint64(req.Num), now)
	case OpMerge:
		return s.merge(req)
	}
	if req.Op == 0 || req.Op >= opEnd {
		return fail(op.CodeUnknownOp, "locks: unknown operation %d", req.Op)
	}
	if req.Name == "" {
		return fail(op.CodeBadRequest, "locks: empty lock name")
	}
	if len(req.Value) > MaxOwnerLen {
		return fail(op.CodeBadRequest, "locks: lock %q: owner id of %d bytes (limit %d)", req.Name, len(req.Value), MaxOwnerLen)
	}
	a, err := decodeArgs(req.Aux)
	if err != nil {
		return fail(op.CodeBadRequest, "locks: lock %q: %v", req.Name, err)
	}
	switch req.Op {
	case OpStatus:
		return s.status(req, now)
	case OpForceUnlock:
		return s.forceUnlock(x, req.Name, req.Num, now)
	}
	if req.Origin == 0 {
		return fail(op.CodeBadRequest, "locks: lock %q: the caller has no session (Origin 0)", req.Name)
	}
	switch req.Op {
	case OpUnlock:
		return s.unlock(x, req, now)
	case OpAbandon:
		return s.abandon(x, req, a, now)
	}
	if req.Num < 0 {
		return fail(op.CodeBadRequest, "locks: lock %q: negative lease %dms", req.Name, req.Num)
	}
	return s.lock(x, req, a, now)
}

// expired reports whether l's holder's lease has ended by now.
func (l *lock) expired(now int64) bool {
	return l.held && l.h.lease != 0 && l.h.lease <= now
}

func (l *lock) holds(session uint64, owner string) bool {
	return l.held && l.h.session == session && l.h.owner == owner
}

func (l *lock) waiting(call op.CallID) int {
	for i := range l.waiters {
		if l.waiters[i].call == call {
			return i
		}
	}
	return -1
}

// leaseEnd converts a lease in milliseconds into an absolute end (0: none),
// saturating instead of overflowing.
func leaseEnd(now, ms int64) int64 {
	if ms <= 0 {
		return 0
	}
	if ms > math.MaxInt64/int64(time.Millisecond) {
		return math.MaxInt64
	}
	d := ms * int64(time.Millisecond)
	if now > 0 && d > math.MaxInt64-now {
		return math.MaxInt64
	}
	return now + d
}

func limitOf(limit uint32) uint32 {
	if limit == 0 || limit > maxHolds {
		return maxHolds
	}
	return limit
}

// nextToken hands out the next fencing token of the partition: greater than
// every token before it and at least the owner's clock in microseconds, so
// tokens keep increasing even if every replica of the partition is lost
// and the counter starts again (as long as the owners' clocks do not step
// back by more than the time between the two acquisitions).
func (s *state) nextToken(now int64) int64 {
	t := s.last + 1
	if us := now / int64(time.Microsecond); us > t {
		t = us
	}
	if t <= 0 {
		t = 1
	}
	s.last = t
	return t
}

func (s *state) lock(x *op.Exec, req *op.Request, a args, now int64) *op.Response {
	name, owner := req.Name, string(req.Value)
	call := req.Call()
	l := s.locks[name]
	if l != nil && l.holds(call.Origin, owner) && !l.expired(now) {
		if l.h.call == call {
			// A retry of the call that was granted: same answer.
			return &op.Response{Found: true, Num: l.h.token}
		}
		if l.h.count >= limitOf(a.limit) {
			if req.Op == OpTryLock {
				return &op.Response{}
			}
			return fail(op.CodeBadRequest, "locks: lock %q: reentrancy limit %d reached", name, limitOf(a.limit))
		}
		// Re-entry. Nothing above changed the state; everything below
		// answers OK.
		l.h.count++
		l.h.attempt = a.attempt
		if end := leaseEnd(now, req.Num); end != 0 {
			l.h.lease = end
			x.Timer(name, leaseTimer, time.Unix(0, end))
		}
		return &op.Response{Found: true, Num: l.h.token}
	}
	// From here on every path answers OK, so settling an expired lease
	// is a replicated change.
	if l != nil && l.expired(now) {
		s.release(x, l, now, eventExpired)
		l = s.locks[name]
	}
	if l == nil || !l.held {
		l = s.get(name)
		w := waiter{call: call, owner: owner, leaseMS: req.Num, limit: a.limit, attempt: a.attempt}
		return &op.Response{Found: true, Num: s.grant(x, l, w, now)}
	}
	if l.holds(call.Origin, owner) && l.h.count < limitOf(a.limit) {
		// Settling the expired lease granted the lock to a waiter of this
		// same holder: this call re-enters.
		l.h.count++
		l.h.attempt = a.attempt
		return &op.Response{Found: true, Num: l.h.token}
	}
	if req.Op == OpTryLock {
		return &op.Response{}
	}
	var deadline int64
	if !x.Deadline.IsZero() {
		deadline = x.Deadline.UnixNano()
	}
	if i := l.waiting(call); i >= 0 {
		// The caller re-sent a parked call (after a failover or a lost
		// connection): it keeps its place and gets its new deadline.
		l.waiters[i].deadline = deadline
	} else {
		l.waiters = append(l.waiters, waiter{call: call, owner: owner, leaseMS: req.Num, limit: a.limit, attempt: a.attempt, deadline: deadline})
	}
	x.Park(time.Time{})
	return &op.Response{}
}

func (s *state) get(name string) *lock {
	l := s.locks[name]
	if l == nil {
		l = &lock{name: name}
		s.locks[name] = l
	}
	return l
}

// grant gives the free lock l to w and returns the token. The caller
// completes w's call if it is parked.
func (s *state) grant(x *op.Exec, l *lock, w waiter, now int64) int64 {
	l.held = true
	l.h = holder{
		session: w.call.Origin,
		owner:   w.owner,
		token:   s.nextToken(now),
		count:   1,
		lease:   leaseEnd(now, w.leaseMS),
		call:    w.call,
		attempt: w.attempt,
	}
	if l.h.lease != 0 {
		x.Timer(l.name, leaseTimer, time.Unix(0, l.h.lease))
	}
	x.Emit(l.name, encodeEvent(event{kind: eventAcquired, session: l.h.session, owner: l.h.owner, token: l.h.token}))
	return l.h.token
}

// release frees l (whatever its hold count) and hands it to the next live
// waiter; a lock left free and unwaited is forgotten.
func (s *state) release(x *op.Exec, l *lock, now int64, why eventKind) {
	x.Emit(l.name, encodeEvent(event{kind: why, session: l.h.session, owner: l.h.owner, token: l.h.token}))
	l.held, l.h = false, holder{}
	s.wake(x, l, now)
}

// wake grants the free lock l to the first waiter whose caller still waits,
// then lets later waiters of the same holder re-enter, in queue order.
// Waiters past their deadline are answered with op.ErrTimeout (the core
// normally cancels them first; this covers a cancellation lost in a
// failover).
func (s *state) wake(x *op.Exec, l *lock, now int64) {
	for !l.held && len(l.waiters) > 0 {
		w := l.waiters[0]
		l.waiters[0] = waiter{}
		l.waiters = l.waiters[1:]
		if w.deadline != 0 && w.deadline <= now {
			x.Complete(w.call, &op.Response{Code: op.CodeTimeout, Msg: fmt.Sprintf("locks: lock %q: wait ended", l.name)})
			continue
		}
		tok := s.grant(x, l, w, now)
		x.Complete(w.call, &op.Response{Found: true, Num: tok})
	}
	if l.held {
		kept := l.waiters[:0]
		for _, w := range l.waiters {
			if l.holds(w.call.Origin, w.owner) && l.h.count < limitOf(w.limit) && (w.deadline == 0 || w.deadline > now) {
				l.h.count++
				l.h.attempt = w.attempt
				x.Complete(w.call, &op.Response{Found: true, Num: l.h.token})
				continue
			}
			kept = append(kept, w)
		}
		clear(l.waiters[len(kept):])
		l.waiters = kept
	}
	if len(l.waiters) == 0 {
		l.waiters = nil
		if !l.held {
			delete(s.locks, l.name)
		}
	}
}

func (s *state) unlock(x *op.Exec, req *op.Request, now int64) *op.Response {
	name, owner := req.Name, string(req.Value)
	l := s.locks[name]
	switch {
	case l == nil || !l.held:
		return fail(op.CodeNotLockOwner, "locks: lock %q is not held", name)
	case !l.holds(req.Origin, owner):
		return fail(op.CodeNotLockOwner, "locks: lock %q is held by another holder", name)
	case l.expired(now):
		return fail(op.CodeNotLockOwner, "locks: lock %q: the lease of token %d ended", name, l.h.token)
	case req.Num != 0 && req.Num != l.h.token:
		return fail(op.CodeNotLockOwner, "locks: lock %q: token %d is not the holder's (%d)", name, req.Num, l.h.token)
	}
	l.h.count--
	l.h.attempt = 0
	if l.h.count > 0 {
		return &op.Response{Found: true, Num: int64(l.h.count)}
	}
	s.release(x, l, now, eventReleased)
	return &op.Response{Found: true}
}

func (s *state) forceUnlock(x *op.Exec, name string, token int64, now int64) *op.Response {
	l := s.locks[name]
	if l == nil || !l.held {
		return &op.Response{}
	}
	if token != 0 && token != l.h.token {
		return &op.Response{Num: l.h.token}
	}
	tok := l.h.token
	s.release(x, l, now, eventForced)
	return &op.Response{Found: true, Num: tok}
}

func (s *state) abandon(x *op.Exec, req *op.Request, a args, now int64) *op.Response {
	l := s.locks[req.Name]
	if l == nil || a.attempt == 0 {
		return &op.Response{}
	}
	for i := range l.waiters {
		w := l.waiters[i]
		if w.call.Origin == req.Origin && w.owner == string(req.Value) && w.attempt == a.attempt {
			l.waiters = slices.Delete(l.waiters, i, i+1)
			x.Complete(w.call, &op.Response{Code: op.CodeCanceled, Msg: "locks: wait abandoned"})
			if len(l.waiters) == 0 {
				l.waiters = nil
			}
			return &op.Response{Found: true}
		}
	}
	if !l.holds(req.Origin, string(req.Value)) || l.h.attempt != a.attempt {
		return &op.Response{}
	}
	l.h.count--
	l.h.attempt = 0
	if l.h.count == 0 {
		s.release(x, l, now, eventReleased)
	}
	return &op.Response{Found: true}
}

// cancelWait removes a parked call whose deadline passed or whose caller
// gave up; the core answers it. A call already granted is left alone.
func (s *state) cancelWait(name string, call op.CallID) *op.Response {
	l := s.locks[name]
	if l == nil {
		return &op.Response{}
	}
	i := l.waiting(call)
	if i < 0 {
		return &op.Response{}
	}
	l.waiters = slices.Delete(l.waiters, i, i+1)
	if len(l.waiters) == 0 {
		l.waiters = nil
	}
	return &op.Response{Found: true}
}

// timer handles a lease timer: the lease is checked against the replicated
// expiry, so a stale or early fire changes nothing (an early one re-arms).
func (s *state) timer(x *op.Exec, name string, now int64) *op.Response {
	l := s.locks[name]
	if l == nil || !l.held || l.h.lease == 0 {
		return &op.Response{}
	}
	if !l.expired(now) {
		x.Timer(name, leaseTimer, time.Unix(0, l.h.lease))
		return &op.Response{}
	}
	s.release(x, l, now, eventExpired)
	return &op.Response{Found: true}
}

// sessionEnded releases every lock the session holds and drops its
// waiters (answering them with op.ErrSessionExpired), in name order so owner
// and backups hand out the same tokens. Num: locks released.
func (s *state) sessionEnded(x *op.Exec, session uint64, now int64) *op.Response {
	if session == 0 {
		return &op.Response{}
	}
	var names []string
	for name, l := range s.locks {
		if l.held && l.h.session == session || slices.ContainsFunc(l.waiters, func(w waiter) bool { return w.call.Origin == session }) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	released := 0
	for _, name := range names {
		l := s.locks[name]
		kept := l.waiters[:0]
		for _, w := range l.waiters {
			if w.call.Origin == session {
				x.Complete(w.call, &op.Response{Code: op.CodeSessionExpired, Msg: fmt.Sprintf("locks: lock %q: session %x ended", name, session)})
				continue
			}
			kept = append(kept, w)
		}
		clear(l.waiters[len(kept):])
		l.waiters = kept
		if l.held && l.h.session == session {
			released++
			s.release(x, l, now, eventSessionEnded)
		} else if len(l.waiters) == 0 {
			l.waiters = nil
		}
	}
	return &op.Response{Found: released > 0, Num: int64(released)}
}

// maxListed bounds the waiters a Status lists (it counts them all).
const maxListed = 100

func (s *state) status(req *op.Request, now int64) *op.Response {
	l := s.locks[req.Name]
	st := Status{Name: req.Name}
	if l != nil {
		st.Waiters = len(l.waiters)
		for i := range l.waiters[:min(len(l.waiters), maxListed)] {
			st.Queue = append(st.Queue, Holder{Session: l.waiters[i].call.Origin, Owner: l.waiters[i].owner})
		}
		if l.held {
			st.Held = true
			st.Holder = Holder{Session: l.h.session, Owner: l.h.owner}
			st.Token = uint64(l.h.token)
			st.Count = int(l.h.count)
			if l.h.lease != 0 {
				st.LeaseEnd = time.Unix(0, l.h.lease)
				st.LeaseEnded = l.h.lease <= now
			}
			st.Mine = l.holds(req.Origin, string(req.Value))
		}
	}
	return &op.Response{Found: st.Held, Num: int64(st.Token), Value: encodeStatus(&st)}
}

// BecameOwner re-arms the lease timers of every held lock, in name order.
func (s *state) BecameOwner(x *op.Exec) {
	names := make([]string, 0, len(s.locks))
	for name, l := range s.locks {
		if l.held && l.h.lease != 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		x.Timer(name, leaseTimer, time.Unix(0, s.locks[name].h.lease))
	}
}

// Len reports the number of locks held or waited for.
func (s *state) Len() int { return len(s.locks) }

// Snapshot serialises the partition: the token counter and every lock with
// its holder and waiter queue, locks sorted by name, so equal states give
// equal snapshots.
func (s *state) Snapshot(time.Time) ([]byte, error) { return encodeSnapshot(s), nil }

// Restore replaces the state with a snapshot. On error the state is left
// unchanged. Expired leases are kept: the new owner's timers (re-armed by
// BecameOwner) release them as a replicated mutation.
func (s *state) Restore(_ time.Time, snapshot []byte) error {
	fresh := newState(s.partition)
	if err := decodeSnapshot(snapshot, fresh); err != nil {
		return fmt.Errorf("locks: restore partition %d: %w", s.partition, err)
	}
	*s = *fresh
	return nil
}
