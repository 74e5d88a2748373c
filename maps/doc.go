// Package maps is Shoal's distributed map (the "object store"): string keys,
// []byte values, optional per-entry TTL.
//
// The package has two halves that meet only at the op seam:
//
//   - Service and its per-partition State: a pure, deterministic state
//     machine (no goroutines, no IO, no locks, time passed in) that holds
//     every map whose keys hash to one partition. The member core owns the
//     partitions, serialises calls to each State and migrates them with
//     Snapshot/Restore; it never looks inside.
//
//   - Map and Typed: thin proxies that turn method calls into op.Requests
//     and send them through an op.Invoker. An embedded member (*grid.Member)
//     and a remote client (*client.Client) both implement op.Invoker, so the
//     very same proxy code runs inside a member and in a client; only the
//     transport under the Invoker differs.
//
// Expired entries behave as absent on every operation (lazy expiry) and are
// reclaimed by op.Sweeper's Sweep, which the member core calls periodically;
// those of a map with listeners are instead removed by the owner's
// replicated expiry records, which give each its expired event.
//
// The request fields each operation reads and the response fields it writes
// are documented on the Op* constants; they are part of the wire protocol.
package maps
