// Package queues is Shoal's distributed FIFO queue: cluster-wide work queues
// ("VM queues" of an integration runtime) that never lose an acknowledged
// item.
//
// A named queue lives on the partition its name hashes to, with that
// partition's owner and backups; every operation on it is one request to
// the owner, so one very hot queue runs at one partition's throughput:
// spread load over many queues (they spread over partitions) when that is
// not enough.
//
// Two ways to consume:
//
//   - Poll / PollWait / Drain remove items at once (at-most-once: a
//     consumer that crashes after Poll loses the item, as with Hazelcast's
//     IQueue).
//   - Take / TakeWait deliver an item that stays in flight until the
//     consumer Acks it (done) or Nacks it (back at the head). An item whose
//     visibility timeout ends, or whose consumer's session ends (process
//     crashed, member declared dead), goes back to the head of the queue
//     with its delivery count raised; after MaxDeliveries it moves to the
//     dead-letter queue (name + "#dlq") instead. This is at-least-once.
//
// Waiting calls (PollWait, TakeWait, OfferWait on a full bounded queue) are
// parked on the owner without a goroutine per waiter and served in arrival
// order; a caller that gives up is removed from the owner's waiter list.
// Items, in-flight deliveries, waiters and delivery counters are part of the
// replicated state, so a backup promoted after a crash knows what is in
// flight and re-arms visibility timers.
//
// The state machine (Service, one state per partition) is pure: no
// goroutines, no IO, time from op.Exec; the member core carries out its
// effects (parking, completions, timers). Queue is the proxy over
// op.Invoker, the same code embedded and through the client.
package queues
