package op

import "time"

// This file is the seam for structures that wait, wake, time out and emit
// events (queues, locks, sessions), while staying pure: a State never blocks,
// never starts a goroutine and never does IO. Instead Apply records effects
// on the Exec it is given, and the member core carries them out after Apply
// returns, under the same partition lock and in the same order (the shape of
// go.etcd.io/raft's Ready: the state decides, the core does the IO).
//
// The rules that keep owner and backups identical:
//
//   - Everything a state must remember to answer correctly after a failover
//     (waiter queues, lock holders, lease expiries, in-flight deliveries) is
//     part of its replicated state. A call that parks changes state (it joins
//     a waiter list) and is replicated like any mutation.
//   - Apply runs on the owner (x.Owner true) and, replaying the owner's
//     records in order with the owner's time, on every backup (x.Owner
//     false). It must make the same state change in both; the effects are
//     only carried out on the owner (Complete is also recorded on backups, see
//     below).
//   - A mutating call is replicated when its response is OK, or when it
//     parked or recorded effects; a non-OK answer otherwise means "nothing
//     changed" and is not replicated.
//   - A call that parks and is re-sent with the same identity (its invoker
//     retries after a failover, a hand-over or a lost connection) must find
//     its place in the waiter list and park again, not join it twice; a
//     re-sent call that was already completed is answered by the core's
//     retry table and never reaches the state.
//   - The core answers parked calls with a retriable error when the member
//     stops owning the partition; the new owner only tracks the deadlines
//     of calls parked (or re-parked) on it, so a state that must expire
//     waiters whose callers vanished uses sessions (OpSessionEnded) or
//     its own timers.
//   - Timers, deadlines of parked calls, cancellations and ended sessions
//     reach the state as sequenced mutations on the owner, through the
//     reserved operation codes below, so backups replay them; no member ever
//     changes a state because of its own clock alone.

// CallID identifies one invocation across retries: the invoker's Origin
// and its CallSeq (see Request).
type CallID struct {
	Origin uint64
	Seq    uint64
}

// Call returns the identity of req.
func (r *Request) Call() CallID { return CallID{Origin: r.Origin, Seq: r.CallSeq} }

// Reserved operation codes the member core sends to a state (never a
// proxy). A state that parks calls, sets timers or listens for sessions must
// handle the ones it uses and treat them as mutations (Service.Mutates must
// return true for them). The core fills Service, Name, Partition and the
// fields listed for each.
const (
	// OpCancelWait ends a parked call: its deadline passed (Num is
	// CodeTimeout), its caller gave up (Num is CodeCanceled) or its
	// connection closed (Num is CodeCanceled). Origin and CallSeq identify
	// the parked call. The state removes the call from its waiter lists;
	// if the call is still parked after Apply, the core answers it with the
	// code in Num. If the call was already completed (granted), the state
	// does nothing.
	OpCancelWait uint8 = 255
	// OpTimer is a timer set with Exec.Timer firing on the owner. Name and
	// Key are those given to Timer; Num is the time it was set for, in Unix
	// nanoseconds. Timers are not exact and may fire late or more than
	// once (after a failover the new owner re-arms them): the state checks
	// x.Now against its own replicated deadlines and ignores stale fires.
	// On the owner the state may set Value (the core sends none): the core
	// replicates the request as Execute left it, so a state can hand its
	// backups what only the owner knows (maps flush the reads they served).
	// A timer armed by a call that does not mutate is still armed.
	OpTimer uint8 = 254
	// OpSessionEnded tells the state that the session in Num (an invoker's
	// Origin) ended: the process stopped heart-beating for its TTL, or its
	// member was declared dead. Name is empty: the state releases whatever
	// that session holds in every structure of the partition (locks,
	// in-flight deliveries, claims) and completes the waiters that this
	// unblocks. Delivered to every partition of services whose states
	// implement SessionListener.
	OpSessionEnded uint8 = 253
	// OpReservedMin is the lowest reserved code: services number their own
	// operations below it.
	OpReservedMin uint8 = 240
)

// SessionListener is implemented by states that hold things on behalf of a
// session (a lock, a delivery): the core delivers OpSessionEnded to them.
type SessionListener interface {
	// ListensForSessions is a marker; it is never called.
	ListensForSessions()
}

// OwnerHook is implemented by states with timers: the core calls BecameOwner
// when this member becomes owner of the partition (at start, after a
// promotion, after a migration), under the partition lock, so the state
// re-arms its timers with x.Timer. Only Timer and Emit effects are honoured
// here (an Emit is delivered at once: there is no mutation to wait for).
// BecameOwner must not change the state: it runs on the owner only.
type OwnerHook interface {
	BecameOwner(x *Exec)
}

// EffectKind says what an Effect asks the core to do.
type EffectKind uint8

// Effect kinds.
const (
	// EffectPark: do not answer the current call now; keep it parked until
	// a Complete effect names it, its deadline (At) passes, or its caller
	// gives up. The response Apply returns is ignored.
	EffectPark EffectKind = iota + 1
	// EffectComplete: answer the parked call Call with Resp. On backups
	// the core records Resp under Call in its retry table, so a caller that
	// retries after a failover gets the answer the old owner gave.
	EffectComplete
	// EffectEmit: deliver Payload to the subscribers of events of this
	// service and structure Name.
	EffectEmit
	// EffectTimer: ask the owner to send OpTimer for (Name, Key) at At.
	EffectTimer
)

// Effect is one thing Apply asks the member core to do once it returns.
type Effect struct {
	Kind    EffectKind
	Call    CallID
	Resp    *Response
	Name    string
	Key     string
	At      time.Time
	Payload []byte
}

// Exec is the execution context of one Apply: the time, who calls, whether
// this member is the owner, and the effects Apply asks for. The core reuses
// an Exec between calls; states must not keep it.
type Exec struct {
	// Now is the owner's time for this mutation (replayed on backups).
	Now time.Time
	// Partition is the partition the state belongs to.
	Partition int32
	// Owner is true on the owner, false when a backup replays a record.
	Owner bool
	// Caller identifies the invocation; Caller.Origin is also the caller's
	// session (one per client process or member).
	Caller CallID
	// Deadline is when the caller stops waiting (zero: no deadline), from
	// the request's Timeout, for Park.
	Deadline time.Time

	effects []Effect
}

// Reset prepares x for another Apply.
func (x *Exec) Reset(now time.Time, partition int32, owner bool, req *Request) {
	x.Now, x.Partition, x.Owner = now, partition, owner
	x.Caller, x.Deadline = CallID{}, time.Time{}
	if req != nil {
		x.Caller = req.Call()
		if req.Timeout > 0 {
			x.Deadline = now.Add(req.Timeout)
		}
	}
	clear(x.effects)
	x.effects = x.effects[:0]
}

// Park keeps the current call waiting until a later Apply completes it or
// deadline passes (zero: the caller's own deadline, x.Deadline). A call with
// an anonymous identity (Origin 0) cannot be parked: the state should answer
// it at once instead.
func (x *Exec) Park(deadline time.Time) {
	if deadline.IsZero() || (!x.Deadline.IsZero() && x.Deadline.Before(deadline)) {
		deadline = x.Deadline
	}
	x.effects = append(x.effects, Effect{Kind: EffectPark, Call: x.Caller, At: deadline})
}

// Complete answers the parked call id with resp. The core sends it once
// the mutation this Apply belongs to is acknowledged by the synchronous
// backups. Completing a call that is not parked here is harmless.
func (x *Exec) Complete(call CallID, resp *Response) {
	x.effects = append(x.effects, Effect{Kind: EffectComplete, Call: call, Resp: resp})
}

// Emit publishes an event about structure name to its subscribers. Events
// are sent by the owner only, after the mutation is acknowledged.
func (x *Exec) Emit(name string, payload []byte) {
	x.effects = append(x.effects, Effect{Kind: EffectEmit, Name: name, Payload: payload})
}

// Timer asks the owner to apply OpTimer for (name, key) at time at.
func (x *Exec) Timer(name, key string, at time.Time) {
	x.effects = append(x.effects, Effect{Kind: EffectTimer, Name: name, Key: key, At: at})
}

// Effects returns the effects recorded since the last Reset, in order.
func (x *Exec) Effects() []Effect { return x.effects }

// Parked reports whether the current call was parked.
func (x *Exec) Parked() bool {
	for i := range x.effects {
		if x.effects[i].Kind == EffectPark {
			return true
		}
	}
	return false
}

// OpEvict is sent by the member core when it is above its memory guard
// (grid Config.MaxMemory) and a write that may grow structure Name of a
// state implementing Evictor arrives, for a Name that Evicts accepts: the
// state evicts up to Num entries of Name by its eviction policy before the
// write is applied (instead of the write being refused with ErrMapFull).
// It is a sequenced mutation like any other, so backups evict the same
// entries; Num in the response: how many were evicted.
const OpEvict uint8 = 252

// Evictor is implemented by states whose structures can give up entries
// under memory pressure (a map with an eviction policy): see OpEvict.
type Evictor interface {
	// Evicts reports whether structure name evicts rather than refuses
	// when the member is full.
	Evicts(name string) bool
}
