// Package op is the invocation seam of Shoal: the request and response that
// travel from a typed proxy (maps.Map, ...) to the owner of a partition, the
// Invoker interface that both an embedded member and the remote client
// implement, the per-partition service interface that structure packages
// implement, and the one table of error codes that lets errors.Is work across
// the wire.
//
// The package is a leaf: it imports only the standard library, so structure
// packages, the member core (grid) and the client can all depend on it
// without depending on each other.
package op

import (
	"context"
	"time"
)

// Request is one operation on one partition (or, for InvokeAll, on every
// partition). Its fields are a small fixed union rather than a nested payload
// so that the hot path (a map Put or Get) encodes and decodes without a second
// serialisation step. Each service documents what it reads from Key, Value,
// Aux and Num for each of its operations.
type Request struct {
	// Service names the structure kind ("map", "queue", ...). Names starting
	// with "_" are reserved for the member core.
	Service string
	// Name is the structure's name ("users").
	Name string
	// Op is the service-specific operation code.
	Op uint8
	// Partition is the target partition. Invoke fills it from Key when it
	// is negative.
	Partition int32
	// Key is the entry key; it also routes the request when Partition < 0.
	Key string
	// Value is the main operand (the value of a Put).
	Value []byte
	// Aux is a second operand (the expected value of a CompareAndSwap).
	Aux []byte
	// Num is a numeric operand (a TTL in milliseconds, a count, ...).
	Num int64
	// TableVersion is the partition-table version the sender routed by. The
	// owner refuses a request whose version differs from its own, so two
	// members never both act as owner of a partition at one version.
	// Zero means "route for me" and is only accepted from local callers.
	TableVersion uint64
	// Timeout is the time the caller is still willing to wait; it travels
	// as a duration (not a wall-clock deadline) so clock skew between hosts
	// does not matter. Zero means no deadline.
	Timeout time.Duration
	// Origin and CallSeq identify a mutation across retries: an invoker
	// picks a random Origin once and numbers its calls. The owner (and,
	// through replication, every backup) remembers recent identities with
	// their responses, so a retried mutation is answered with the original
	// response instead of being applied twice. Zero Origin opts out.
	Origin  uint64
	CallSeq uint64
}

// Response is the owner's answer to a Request.
type Response struct {
	// Code is OK or the code of an error from the table in errors.go.
	Code Code
	// Msg carries the error's detail text when Code is not OK.
	Msg string
	// Found reports whether the key existed / the condition held.
	Found bool
	// Value is the main result (the value of a Get, an encoded key list).
	Value []byte
	// Num is a numeric result (a size, a count, a fencing token).
	Num int64
	// TableVersion is the responder's partition-table version; a caller that
	// sees a newer one refreshes its table.
	TableVersion uint64
}

// Err returns the error the response carries, or nil when Code is OK.
func (r *Response) Err() error {
	if r == nil || r.Code == OK {
		return nil
	}
	return Error(r.Code, r.Msg)
}

// Invoker sends requests to partition owners. An embedded member
// (*grid.Member) and a remote client (*client.Client) both implement it, so a
// proxy written once over Invoker works in both modes.
//
// Implementations are safe for concurrent use. Invoke retries internally on
// retriable errors (a stale table, a partition in migration, a lost
// connection) until ctx ends; the error it returns is final for the caller.
type Invoker interface {
	// Invoke runs req on the owner of its partition and returns the owner's
	// response. A non-OK response is returned as an error (see Response.Err);
	// the response is returned too so callers can read detail fields.
	Invoke(ctx context.Context, req *Request) (*Response, error)
	// InvokeAll runs req once on every partition and returns the responses
	// indexed by partition id. It fails if any partition fails.
	InvokeAll(ctx context.Context, req *Request) ([]*Response, error)
	// PartitionOf returns the partition that owns key.
	PartitionOf(key string) int32
}

// BatchInvoker is implemented by invokers that send many requests at once
// grouped by owner: one round trip per member instead of one per request
// (*grid.Member and *client.Client). Each request is handled as Invoke
// would handle it (its own identity, routing and retries; a request whose
// partition moved is re-sent to its new owner); InvokeMany returns when
// every request has its result, in the order of reqs. Proxies use it for
// batch calls when the invoker has it and fall back to Invoke otherwise.
type BatchInvoker interface {
	Invoker
	InvokeMany(ctx context.Context, reqs []*Request) []Result
}

// Result is the outcome of one request of InvokeMany: what Invoke would
// have returned for it (a non-OK response comes with its error, as from
// Invoke).
type Result struct {
	Resp *Response
	Err  error
}

// EventSource is implemented by invokers that deliver structure events
// (Exec.Emit): *grid.Member and *client.Client. SubscribeEvents calls fn
// with every payload that structure name of service emits, until the
// returned function is called; delivery is at most once, in order per
// owner (see grid and client for the details).
type EventSource interface {
	SubscribeEvents(ctx context.Context, service, name string, fn func(payload []byte)) (stop func(), err error)
}

// Service is a kind of distributed structure (maps, queues, locks). The
// member core creates one State per partition from it and never looks inside.
type Service interface {
	// Name is the value of Request.Service this service answers.
	Name() string
	// NewState returns the empty state of one partition.
	NewState(partition int32) State
	// Mutates reports whether operation op may change state. The owner
	// ships such operations to the partition's backups, which replay them.
	Mutates(op uint8) bool
}

// Grower is implemented by services whose operations can grow a member's
// memory (a map put, a queue offer, an idempotency claim). When the member's
// heap in use is above its memory guard (grid.Config.MaxMemory), the owner
// refuses the operations for which Grows is true with ErrMapFull before
// applying them; deletes, clears and reads keep working. Backups never
// refuse: they replay what the owner applied. A service that does not
// implement Grower is never refused.
type Grower interface {
	// Grows reports whether operation op may grow the service's state.
	Grows(op uint8) bool
}

// State is the pure per-partition state machine of one service: every
// structure of that service that hashes to the partition. The member core
// guarantees that at most one goroutine calls a State's methods at a time
// (it holds the partition's lock), so implementations need no locking. Time
// is passed in so that state machines are deterministic and testable.
//
// Apply must be deterministic: given the same state, time and request it
// must make the same change. Backups replay the owner's mutating requests
// in the owner's order with the owner's time, and must end in the same
// state.
type State interface {
	// Apply executes req at time now and returns its response. It must not
	// block, do IO or keep references to req's byte slices beyond the call
	// unless it owns them (the member core hands over ownership of Value and
	// Aux).
	//
	// Ownership of the response: once Apply (or Execute) returns, the
	// Response and its Value belong to the member core, which may send it,
	// keep it in its retry table (for as long as the table remembers the
	// call) and hand it to the caller (an embedded caller gets a copy of
	// Value). Value may share memory with the state (a stored value) only
	// if the state never writes into that memory afterwards: replace a
	// stored slice, never modify it in place. The same holds for the
	// responses given to Exec.Complete and the payloads given to Exec.Emit.
	Apply(now time.Time, req *Request) *Response
	// Snapshot serialises the whole partition state, for migration.
	Snapshot(now time.Time) ([]byte, error)
	// Restore replaces the state with a snapshot produced by Snapshot.
	Restore(now time.Time, snapshot []byte) error
	// Len reports the number of entries, for metrics and migration logs.
	Len() int
}

// Executor is implemented by states that use the Exec seam (see exec.go):
// the member core calls Execute instead of Apply, with an Exec that carries
// the time, the caller and whether this member is the owner, and carries
// out the effects Execute records on it once it returns. Apply is still
// required (it may simply call Execute with a fresh Exec).
type Executor interface {
	Execute(x *Exec, req *Request) *Response
}

// Merger is implemented by services whose structures can be merged after a
// healed network split (the merge policies of structures without a quorum
// rule): the member core keeps a snapshot of a partition it owned on the
// losing side and, for every structure in it whose policy is not
// "discard", sends MergeOp to the winning side's owner with the snapshot in
// Value and the policy (one of the Merge constants) in Num.
type Merger interface {
	// MergeOp is the operation that merges a snapshot into a state.
	MergeOp() uint8
	// MergeNames lists the structures of a partition snapshot (as written
	// by State.Snapshot) with their entry counts at now.
	MergeNames(snapshot []byte, now time.Time) (map[string]int, error)
}

// Merge policies, Request.Num of a Merger's MergeOp.
const (
	// MergePutIfAbsent stores the losing side's entries whose key is
	// absent on the winning side (the winning side's values win).
	MergePutIfAbsent = 1
	// MergePassThrough stores every entry of the losing side (its values
	// win).
	MergePassThrough = 2
	// MergeLatest keeps, per key, the entry written last by the hybrid
	// logical clock of the structure's entries (ties broken
	// deterministically, e.g. by value bytes).
	MergeLatest = 3
	// MergeAppend adds the losing side's items after the winning side's
	// (queues).
	MergeAppend = 4
	// MergeRevoke drops what the losing side granted and carries its
	// counters over, so that what the winning side grants later ranks
	// above it (locks: fencing tokens).
	MergeRevoke = 5
)

// MergeDefaulter is implemented by Mergers whose structures merge by their
// own policy (one of the Merge constants) rather than the map policies:
// queues append, locks revoke. A structure whose configured policy is
// "discard" is still discarded, except with MergeRevoke, which carries
// safety state (fencing token counters) and always runs.
type MergeDefaulter interface {
	DefaultMerge() int64
}

// Sweeper is implemented by states that hold expiring entries. The member
// core calls Sweep periodically, under the partition's lock, so expired
// entries are reclaimed even when nobody reads them.
type Sweeper interface {
	// Sweep removes at most max expired entries at time now and returns how
	// many it removed.
	Sweep(now time.Time, max int) int
}
