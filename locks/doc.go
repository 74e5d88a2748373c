// Package locks is Shoal's distributed lock with fencing tokens, and a
// leader election built on it.
//
// A named lock lives on the partition its name hashes to, replicated to the
// partition's backups like every structure. Its holder is a session (one
// per client process or member, see op.Request.Origin) plus a
// caller-chosen owner id; a lock is reentrant for its holder (same token, a
// hold count, an optional limit). Waiters are served in FIFO order. A lock
// is released by Unlock, by the end of an optional lease, by
// ForceUnlock, or when its holder's session ends (the process crashed,
// stopped heart-beating for the session TTL, or its member was declared
// dead); the next waiter gets it.
//
// # Fencing tokens
//
// Every acquisition returns a token greater than every token handed out
// before for that lock: the partition's counter is part of the replicated
// state (it survives failovers and migrations), and a token is never below
// the owner's clock in microseconds, so tokens keep increasing even after
// every replica of a partition was lost. A holder can lose its lock without
// knowing (a GC or SIGSTOP pause longer than its session TTL or lease, a
// network partition): give the token to every resource the lock guards and
// let the resource refuse a token lower than one it has seen.
//
// Shoal is not a consensus system: the lock is as strong as the partition's
// replication (an acknowledged grant survives the owner's crash because the
// synchronous backups hold it). The quorum guard (majority by default in
// the reliable profile) keeps the minority side of a network split from
// granting locks, but a holder cut off on that side learns it lost the
// lock only when its session ends; with the guard off both sides can grant
// the same lock.
// Fencing tokens are what keeps a stale holder from corrupting a resource
// in those windows; the lock alone is a very good mutual exclusion, not a
// proof.
//
// # Structure
//
// The package has two halves that meet only at the op seam:
//
//   - Service and its per-partition state: a pure, deterministic state
//     machine (op.State, op.Executor, op.SessionListener, op.OwnerHook).
//     It never blocks: a Lock that must wait joins a replicated FIFO queue
//     and parks its call (op.Exec.Park); an Unlock, a lease timer
//     (op.OpTimer) or a session end (op.OpSessionEnded) grants the next
//     waiter and completes its call (op.Exec.Complete), identically on the
//     owner and on the backups.
//   - Lock and Election: proxies that turn calls into op.Requests through
//     an op.Invoker, so the same code runs embedded (*grid.Member) and
//     remote (*client.Client).
//
// Lock.Watch delivers the lock's changes (acquired, released, lease
// expired, session ended, force-unlocked) as best-effort hints where the
// invoker delivers structure events; elections use them to notice a lost
// term at once and observers to see a new leader without waiting for the
// next poll.
//
// The request fields each operation reads and the response fields it writes
// are documented on the Op* constants; they are part of the wire protocol.
package locks
