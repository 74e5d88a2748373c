// Package replicated is Shoal's replicated map, for configuration and other
// small, read-mostly data every member needs: every member holds a full
// copy of every replicated map, reads are answered from the local copy,
// writes are applied on the member that receives them and propagate to all
// the others (and to members that join later), and every member fires
// change events for its own copy.
//
// # Consistency
//
// Eventual, with last-writer-wins per key. Each write gets a Version: the
// hybrid logical time of the accepting member (its wall clock in Unix
// nanoseconds, or one past the greatest time it has seen when that is
// ahead, so a write is always newer than every write its member has seen)
// and the member's name. The newer version wins; equal times are broken by
// the member name (then a deletion wins, then the greater value: only a
// member restarted with its clock behind its earlier writes can produce
// two equal versions). Merging is commutative, associative and idempotent,
// so members converge whatever order and however often changes arrive.
// Writes to one key from one process through one member are ordered; two
// members writing the same key concurrently: one write wins everywhere,
// the other is lost (and its members fire events for both).
//
// # Deletes
//
// A delete writes a deletion marker (tombstone) with its own version, so
// it also beats older writes that have not reached a member yet. Markers
// are kept for Service.TombstoneTTL (default one hour, by the delete's
// time) and then forgotten by Sweep; a marker received after its TTL is not
// stored. The rule's price: a member cut off from the others for longer
// than the TTL still holding a key deleted meanwhile brings it back when
// the partition heals (its live entry is newer than nothing). A member that
// crashes and restarts starts empty and cannot do that.
//
// # Propagation
//
// The member core (grid) sends each write's delta to every other member
// at once over its authenticated member connections (a write is
// acknowledged once the structure's synchronous backup count of them
// merged it: one in the reliable profile), and runs
// anti-entropy: periodically, and whenever a member joins or comes back,
// a member sends a Digest (per map: live count and an XOR of entry
// hashes) to a peer and merges what the peer's Diff returns (the whole of
// each map that differs). Deltas lost to a crash or a partition are
// repaired by that exchange.
//
// # Layers
//
// Service and Replica are the pure state (op.ReplicatedService,
// op.Replica: no IO, no goroutines, time passed in). Map is the proxy over
// op.Invoker (the same code in a member and in a client: a client is
// answered by whichever member its call reaches); Near is a client-side
// copy of the keys a process reads, updated by events.
package replicated
