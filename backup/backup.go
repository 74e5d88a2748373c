// Package backup holds the pure rules and codecs of Shoal's replication:
// what a backup does with a record, a snapshot or a probe from a
// partition's owner (Fence, OnRecord, OnProbe); the owner's view of each
// of its backups (Progress); which replica to promote when an owner is gone
// (Promote); the table that answers retried mutations (Dedup); and the
// record and snapshot codecs, which never trust a length a peer sent.
//
// It does no IO, starts no goroutine and takes no lock: the member core
// (grid) holds the partition lock, asks for decisions and carries them out
// on its connections.
package backup

// Replica is what a member knows about its copy of one partition.
type Replica struct {
	// Role is the member's replica index in its table: 0 owner, >= 1
	// backup, -1 none.
	Role int
	// OwnerSince is the table version at which the current owner became
	// owner: anything stamped with an older version comes from a deposed
	// owner.
	OwnerSince uint64
	// Seq and Term identify the last mutation applied here (Term is the
	// OwnerSince of the owner that applied it).
	Seq, Term uint64
	// Sealed is the newest table version whose owner this replica no
	// longer takes anything from: a coordinator about to promote a replica
	// in place of an owner it saw depart collected this replica's position
	// and sealed it, so that the owner (perhaps alive, falsely suspected)
	// cannot get a write acknowledged here after the position was read
	// (0: not sealed).
	Sealed uint64
}

// Verdict is a backup's decision about something its owner sent.
type Verdict uint8

// Verdicts.
const (
	// Accept: apply it.
	Accept Verdict = iota
	// Deposed: it comes from an owner deposed at its table version; refuse
	// it (no acknowledgement: a deposed owner's write is never
	// acknowledged). Fencing.
	Deposed
	// NotBackup: this member holds no backup of the partition at a table
	// at least as new as the sender's; refuse it as a gap, so the owner
	// resyncs once the tables agree.
	NotBackup
	// Duplicate: already applied; acknowledge without applying.
	Duplicate
	// Gap: records are missing before it; refuse it, so the owner
	// resyncs this backup.
	Gap
	// Differs: a probe found a different history here; a copy is needed.
	Differs
)

// String names the verdict.
func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Deposed:
		return "deposed"
	case NotBackup:
		return "not a backup"
	case Duplicate:
		return "duplicate"
	case Gap:
		return "gap"
	case Differs:
		return "differs"
	}
	return "unknown"
}

// Fence is the rule shared by records, snapshots and probes: something
// stamped with table version `version`, arriving at a member that follows
// table `cur`, is refused when it comes from a deposed owner or when this
// member is not a backup at a table at least as new. A sender with a newer
// table than ours is trusted (our table is late).
func Fence(r Replica, cur, version uint64) Verdict {
	if version < r.OwnerSince || (r.Sealed != 0 && version <= r.Sealed) {
		return Deposed
	}
	if r.Role < 1 && version <= cur {
		return NotBackup
	}
	return Accept
}

// OnRecord decides about the owner's mutation number seq.
func OnRecord(r Replica, cur, version, seq uint64) Verdict {
	if v := Fence(r, cur, version); v != Accept {
		return v
	}
	if seq <= r.Seq {
		return Duplicate
	}
	if seq != r.Seq+1 {
		return Gap
	}
	return Accept
}

// OnProbe decides whether this backup already holds the owner's history up
// to mutation seq of term: the same sequence alone is not enough (after a
// failover an asynchronous backup may have applied a record the new owner
// never saw).
func OnProbe(r Replica, cur, version, seq, term uint64) Verdict {
	if v := Fence(r, cur, version); v != Accept {
		return v
	}
	if r.Seq != seq || r.Term != term {
		return Differs
	}
	return Accept
}
