package op

import "time"

// ReplicatedService is a service that is not partitioned: every member
// holds a full copy of its structures (a replicated map), answers reads
// and writes from its own copy at once, and propagates changes to the other
// members, which merge them. Consistency is eventual; the service defines
// the conflict rule, so that merging is commutative, associative and
// idempotent and every member ends in the same state whatever order the
// changes arrive in.
//
// A program registers it in the member's services like any other (grid's
// Config.Services); the member core recognises the interface and never
// calls NewState or creates partition states for it. Mutates still says
// which operations write (for access roles).
//
// The member core drives it:
//   - a proxy's request (embedded, or from a client over any member) runs
//     Replica.Apply on the member that receives it; the delta it returns is
//     sent to every other member, which Merges it;
//   - anti-entropy: periodically, and when a member joins or comes back,
//     a member sends its Digest to a peer, which answers with Diff (the
//     state the asker lacks or holds differently), merged by the asker;
//     every pair of members pulls from each other, so joiners get the full
//     state and both sides of a healed partition converge;
//   - Sweep runs periodically (garbage collection of deletion markers).
type ReplicatedService interface {
	Service
	// NewReplica returns the empty copy that member runs. member names the
	// origin of the writes it accepts (the conflict rule's tie-break).
	NewReplica(member string) Replica
}

// Replica is one member's copy of a replicated service's structures. It is
// pure (no IO, no goroutines, time passed in) and not safe for concurrent
// use: the member core serialises calls. Effects (events) are recorded
// with x.Emit, as for partition states (see Exec); only Emit is honoured.
//
// Every byte slice handed to Merge and Diff came from a peer: decoding
// must be bounded and must fail with an error, never panic.
type Replica interface {
	// Apply runs a proxy's request at x.Now. For a change it returns the
	// delta to send to every other member (nil for reads and no-ops).
	Apply(x *Exec, req *Request) (resp *Response, delta []byte)
	// Merge applies a delta or a Diff from a peer at x.Now.
	Merge(x *Exec, msg []byte) error
	// Digest summarises the state (small; sent to a peer for anti-entropy).
	Digest(now time.Time) []byte
	// Diff returns what a peer whose Digest is peer may lack or hold
	// differently, as a message for Merge (nil when nothing differs), at
	// most about limit bytes; more reports whether it left some out (the
	// peer then asks again).
	Diff(now time.Time, peer []byte, limit int) (msg []byte, more bool, err error)
	// Sweep garbage-collects what the service's rules let it forget at
	// now (deletion markers) and returns how many it removed.
	Sweep(now time.Time) int
	// Len reports the number of live entries, for metrics.
	Len() int
}

// LocalEventSource is implemented by members (*grid.Member): it delivers
// only the events this member publishes itself. A replicated service fires
// events on every member for that member's own copy, so a member's own
// events are complete, and subscribing to the others' as well (what
// EventSource does, since a partitioned structure's owner can be any
// member) would only deliver each change once per member.
type LocalEventSource interface {
	SubscribeLocalEvents(service, name string, fn func(payload []byte)) (stop func(), err error)
}
