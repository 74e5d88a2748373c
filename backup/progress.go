package backup

// Progress is a partition owner's view of one of its backups: how far the
// backup is known to hold the owner's history, whether records can be
// streamed to it, and the mutations waiting for it to acknowledge them.
// W is such a waiting mutation (the member core's acknowledgement wait).
//
// The states: not synced (a new backup, or one whose stream broke: a
// record was refused or could not be sent) until a probe or a copy
// completes; streaming once a probe or copy was sent on a connection (the
// records of later mutations follow it in order there); synced once it
// completed. A broken stream goes back to not synced and not streaming.
//
// Not safe for concurrent use: the owner holds the partition's lock.
type Progress[W any] struct {
	acked     uint64
	synced    bool
	streaming bool
	probed    bool
	waiters   []waiter[W]
}

type waiter[W any] struct {
	seq uint64
	w   W
}

// Step is what an owner sends to bring a backup up to date.
type Step uint8

// Steps.
const (
	// NoStep: a probe or a copy is already under way; the records that
	// follow it carry the rest.
	NoStep Step = iota
	// SendProbe: ask whether the backup already holds the owner's history
	// (it may have been a co-replica before this member became owner).
	SendProbe
	// SendCopy: copy the whole partition (a probe already found the
	// backup behind, or was refused).
	SendCopy
)

// String names the step.
func (s Step) String() string {
	switch s {
	case NoStep:
		return "nothing"
	case SendProbe:
		return "probe"
	case SendCopy:
		return "copy"
	}
	return "unknown"
}

// Acked is the highest sequence the backup acknowledged.
func (p *Progress[W]) Acked() uint64 { return p.acked }

// Synced reports whether the backup is known to hold every mutation the
// owner applied, in order, up to Acked.
func (p *Progress[W]) Synced() bool { return p.synced }

// Streaming reports whether records can be sent to the backup: a probe or
// copy was sent ahead of them on the connection.
func (p *Progress[W]) Streaming() bool { return p.streaming }

// Holds reports whether the backup is known to hold mutation seq and every
// one before it.
func (p *Progress[W]) Holds(seq uint64) bool { return p.synced && p.acked >= seq }

// Waiting is the number of mutations waiting for a resync of this backup.
func (p *Progress[W]) Waiting() int { return len(p.waiters) }

// Next decides how to bring the backup up to date: nothing while a probe
// or copy is under way, a probe the first time, a copy after that. The
// caller sends it and then calls Started.
func (p *Progress[W]) Next() Step {
	switch {
	case p.streaming:
		return NoStep
	case !p.probed:
		p.probed = true
		return SendProbe
	}
	return SendCopy
}

// Started records that the probe or copy Next chose was sent: records of
// later mutations can follow it.
func (p *Progress[W]) Started() { p.streaming = true }

// Broken records that the stream to the backup lost something (a record
// or probe refused, a send failed, the connection closed): nothing more is
// streamed until a resync brings it up to date.
func (p *Progress[W]) Broken() { p.streaming, p.synced = false, false }

// Wait makes mutation seq wait for this backup: its record was refused or
// not sent, and a completed resync will cover it.
func (p *Progress[W]) Wait(seq uint64, w W) { p.waiters = append(p.waiters, waiter[W]{seq, w}) }

// Caught records that a probe or copy taken at sequence seq completed: the
// backup holds everything up to seq. release gets the waiting mutations it
// covers.
func (p *Progress[W]) Caught(seq uint64, release func(W)) {
	p.synced = true
	p.Advance(seq, release)
}

// Advance records that the backup acknowledged everything up to seq; if it
// is synced, release gets the waiting mutations that covers.
func (p *Progress[W]) Advance(seq uint64, release func(W)) {
	if seq > p.acked {
		p.acked = seq
	}
	if !p.synced {
		return
	}
	kept := p.waiters[:0]
	for _, sw := range p.waiters {
		if sw.seq <= p.acked {
			release(sw.w)
		} else {
			kept = append(kept, sw)
		}
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
}

// Drop gives every waiting mutation to fail and forgets them: the backup
// left the partition before acknowledging them.
func (p *Progress[W]) Drop(fail func(W)) {
	for _, sw := range p.waiters {
		fail(sw.w)
	}
	p.waiters = nil
}
