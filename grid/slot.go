package grid

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/wire"
)

// slot is one partition on this member, whatever its role (owner, backup or
// none). Its lock serialises every access to the partition's service
// states, which makes per-key operations linearizable on the owner without a
// goroutine per partition, and orders the backup records the owner sends.
type slot struct {
	id int32

	mu sync.Mutex
	// role is this member's replica index in its current table: 0 owner,
	// >= 1 backup, -1 none.
	role int
	// owner is the owner's name in the current table and ownerSince the
	// table version at which it became owner. Requests and backup records
	// stamped with an older version are refused: that fences a deposed
	// owner that has not noticed yet.
	owner      string
	ownerSince uint64
	// frozen is non-zero while the owner hands the partition over: it was
	// frozen at that table version, and a newer table unfreezes it.
	frozen uint64
	// seq is the sequence number of the last mutation applied here (the
	// owner assigns them; backups apply them in order).
	seq uint64
	// term identifies the owner that applied the last mutation (its
	// ownerSince version). Two replicas with the same seq and term hold
	// the same history; the same seq alone is not enough (after a failover
	// an async backup may have applied a record the new owner never saw).
	term uint64
	// dataVersion is the newest table version stamped on a record or
	// snapshot applied here. Table pushes can arrive out of order: an
	// older table in which this member holds no replica must not drop
	// data a newer table's owner has already sent it.
	dataVersion uint64
	// partial is true while this replica's data does not derive from a
	// complete copy of the partition: from the start and whenever its data
	// is dropped, until the owner's copy is installed, a probe finds the
	// owner's history here, or the first record of an empty history
	// arrives. A partial backup may lack writes acknowledged before it
	// was added; promotion prefers complete replicas (backup.Promote).
	partial bool
	// sealed is backup.Replica.Sealed: set by a coordinator's collection
	// of positions for a promotion (replicaSeqs), it ends the current
	// owner's replication here at that table version.
	sealed uint64
	states []op.State
	// targets are the backups the owner replicates to, in table order.
	targets []*target
	// dedup remembers the responses of recent mutations by request
	// identity, so a retried mutation is answered, not applied again.
	dedup backup.Dedup
	// waits are the acknowledgement waits of recent mutations, in
	// deadline order, for expireWaits.
	waits []*ackWait
	// rec is scratch for building backup records under mu.
	rec recordScratch
	// evMu guards evq, the structure events emitted in this partition
	// that wait for their mutation's acknowledgement, in emission order
	// (events.go).
	evMu sync.Mutex
	evq  []pendingEvent
	// exec is the execution context handed to states that implement
	// op.Executor (reused under mu).
	exec op.Exec
	// parked are the calls parked on this partition (owner only), by
	// identity (see park.go).
	parked map[op.CallID]*parkedCall
}

// expireWaits fails the mutations whose backups did not acknowledge them
// by their deadline, and forgets the settled ones.
func (s *slot) expireWaits(now time.Time, timeout time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := now.UnixNano()
	i := 0
	for i < len(s.waits) && s.waits[i].expire(ns, timeout) {
		s.waits[i] = nil
		i++
	}
	if i == len(s.waits) {
		s.waits = s.waits[:0]
		if cap(s.waits) > 1024 {
			s.waits = nil // release a burst's backing array
		}
		return
	}
	s.waits = s.waits[i:]
}

// target is the owner's view of one backup of the partition: its
// replication progress (the rules are backup.Progress's) and the IO side,
// the connection its records stream on.
type target struct {
	name, addr string
	prog       backup.Progress[*ackWait]
	// link is the transport the last probe or copy was sent through;
	// records follow it there while prog.Streaming().
	link backup.Transport
	// handoff is closed when the acknowledged sequence changes, for a
	// waiting hand-off.
	handoff chan struct{}
}

// ackOne is what a target's progress does with a mutation it releases
// (a static function: no closure per call).
func ackOne(w *ackWait) { w.ack() }

// ackWait collects the backup acknowledgements one mutation waits for.
// It is failed with op.ErrBackupTimeout at deadline by the member's wait
// loop (see slot.expireWaits), which saves a timer per mutation.
type ackWait struct {
	mu       sync.Mutex
	need     int
	done     bool
	err      error
	ch       chan struct{} // made by wait, closed on completion
	cb       func(*wire.Batch, error)
	inline   bool        // run cb on the completing goroutine (no lock held)
	batch    *wire.Batch // the completing read loop's batch, when inline
	deadline int64       // unix nanoseconds
}

func newAckWait(need int, deadline time.Time) *ackWait {
	return &ackWait{need: need, deadline: deadline.UnixNano()}
}

// ack counts one acknowledgement. It may be called under a partition lock:
// a completion callback then runs on its own goroutine.
func (w *ackWait) ack() { w.count(false, nil) }

// ackInline is ack for callers that hold no lock: the completion callback
// (answering the client) runs on the caller's goroutine, saving a goroutine
// per mutation on the common path. b is the batch of the read loop running
// it (the answer leaves with the rest of that loop's output).
func (w *ackWait) ackInline(b *wire.Batch) { w.count(true, b) }

func (w *ackWait) count(inline bool, b *wire.Batch) {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	w.need--
	if w.need > 0 {
		w.mu.Unlock()
		return
	}
	w.inline, w.batch = inline, b
	w.finishLocked(nil)
}

func (w *ackWait) fail(err error) {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	w.finishLocked(err)
}

// finishLocked completes the wait; it is called with w.mu held and releases
// it before running the callback.
func (w *ackWait) finishLocked(err error) {
	w.done, w.err = true, err
	if w.ch != nil {
		close(w.ch)
	}
	cb, inline, b := w.cb, w.inline, w.batch
	w.mu.Unlock()
	switch {
	case cb == nil:
	case inline:
		cb(b, err)
	default:
		// Completions can happen under a partition lock: answering the
		// client may block on its connection, so it runs on its own
		// goroutine.
		go cb(nil, err)
	}
}

// then runs cb once the wait completes (or fails at its deadline). b is the
// batch of the calling read loop (used if the wait is already complete).
func (w *ackWait) then(b *wire.Batch, cb func(*wire.Batch, error)) {
	w.mu.Lock()
	if w.done {
		err := w.err
		w.mu.Unlock()
		cb(b, err)
		return
	}
	w.cb = cb
	w.mu.Unlock()
}

// expire fails the wait if it is still pending at now; it reports whether
// the wait is settled (done, or failed now) or still pending.
func (w *ackWait) expire(now int64, timeout time.Duration) bool {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return true
	}
	if now < w.deadline {
		w.mu.Unlock()
		return false
	}
	w.finishLocked(op.Errorf(op.CodeBackupTimeout, "no acknowledgement from %d backup(s) within %v", w.need, timeout))
	return true
}

func (w *ackWait) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.need
}

// wait blocks until the wait completes, ctx ends or timeout passes.
func (w *ackWait) wait(ctx context.Context, timeout time.Duration) error {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return w.result()
	}
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	ch := w.ch
	w.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return w.result()
	case <-ctx.Done():
		return op.FromContext(ctx)
	case <-t.C:
		w.fail(op.Errorf(op.CodeBackupTimeout, "no acknowledgement from %d backup(s) within %v", w.pending(), timeout))
		return w.result()
	}
}

// settled reports whether the wait completed, and how.
func (w *ackWait) settled() (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.done, w.err
}

func (w *ackWait) result() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// execute applies req if this member owns the partition at the request's
// table version. For a mutation with synchronous backups it also returns
// the wait for their acknowledgements; the caller must not report success
// before it completes. A call that a state parked (op.Exec.Park) returns
// no response but its parkedCall: the caller attaches its responder to it.
func (s *slot) execute(m *Member, b *wire.Batch, cur *partition.Table, req *op.Request) (*op.Response, *ackWait, *parkedCall) {
	svc, ok := m.svcIndex[req.Service]
	if !ok {
		return &op.Response{Code: op.CodeUnknownService, Msg: fmt.Sprintf("no service %s", op.Quote(req.Service)), TableVersion: cur.Version}, nil, nil
	}
	now := time.Now()
	if m.pausedAt(now) {
		return &op.Response{Code: op.CodeStaleTable, Msg: fmt.Sprintf("member %s was paused and waits for a new table", m.cfg.Name), TableVersion: cur.Version}, nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.TableVersion > cur.Version {
		return &op.Response{Code: op.CodeStaleTable, Msg: fmt.Sprintf("member %s has table %d, request has %d", m.cfg.Name, cur.Version, req.TableVersion), TableVersion: cur.Version}, nil, nil
	}
	if s.role != 0 || (req.TableVersion != 0 && req.TableVersion < s.ownerSince) {
		return &op.Response{Code: op.CodeWrongOwner, Msg: fmt.Sprintf("member %s does not own partition %d at table %d", m.cfg.Name, s.id, req.TableVersion), TableVersion: cur.Version}, nil, nil
	}
	if s.frozen != 0 {
		return &op.Response{Code: op.CodeMigrating, Msg: fmt.Sprintf("partition %d is being handed over", s.id), TableVersion: cur.Version}, nil, nil
	}
	if r := m.checkQuorum(req.Name, now, cur.Version); r != nil {
		return r, nil, nil
	}
	mutates := m.services[svc].Mutates(req.Op)
	if mutates && req.Origin != 0 && req.Op < op.OpReservedMin {
		if r, seq, ok := s.dedup.Get(req.Origin, req.CallSeq); ok {
			// A retry: answer with the original response, once the
			// synchronous backups hold the original mutation.
			r.TableVersion = cur.Version
			return &r, s.coverage(m, req, seq), nil
		}
	}
	st := s.state(m, svc)
	if mutates && m.mem != nil && m.mem.full.Load() && m.growers[svc] != nil && m.growers[svc].Grows(req.Op) {
		// The memory guard: a structure with an eviction policy gives up
		// entries first (a sequenced mutation, so backups evict the same);
		// others are refused before anything is applied, so backups
		// (which replay what the owner applied) never diverge.
		if !s.evictForMemory(m, b, cur, req, st, now) {
			return m.mem.refusal(m.cfg.Name, cur.Version), nil, nil
		}
	}
	if ex, ok := st.(op.Executor); ok {
		return s.executeSeam(m, b, cur, req, ex, mutates, now)
	}
	resp := st.Apply(now, req)
	m.counters.served.Add(1)
	if !mutates || resp.Code != op.OK {
		resp.TableVersion = cur.Version
		return resp, nil, nil
	}
	s.seq++
	s.term = s.ownerSince
	if req.Origin != 0 {
		s.dedup.Put(req.Origin, req.CallSeq, s.seq, resp, now)
	}
	var w *ackWait
	if len(s.targets) > 0 {
		need := min(m.syncBackups(req.Service, req.Name), len(s.targets))
		if need > 0 {
			w = newAckWait(need, now.Add(m.cfg.BackupTimeout))
			s.waits = append(s.waits, w)
		}
		m.replicate(s, b, cur.Version, now, req, w, need)
	}
	resp.TableVersion = cur.Version
	return resp, w, nil
}

func (s *slot) state(m *Member, svc int) op.State {
	st := s.states[svc]
	if st == nil {
		st = m.services[svc].NewState(s.id)
		s.states[svc] = st
	}
	return st
}

// applyBackup replays one of the owner's mutations on this backup. It
// refuses records from an owner deposed at the record's version (fencing)
// and reports a gap when a record is missing, so the owner resyncs.
func (s *slot) applyBackup(m *Member, cur uint64, version, seq, term uint64, now time.Time, req *op.Request) *op.Response {
	svc, ok := m.svcIndex[req.Service]
	if !ok {
		return &op.Response{Code: op.CodeUnknownService, Msg: "no service " + op.Quote(req.Service)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := backup.OnRecord(s.replica(), cur, version, seq)
	if v == backup.Deposed || v == backup.NotBackup {
		return s.fenced(m, v, "record", cur, version)
	}
	if version > cur {
		s.dataVersion = max(s.dataVersion, version)
	}
	switch v {
	case backup.Duplicate:
		return &op.Response{TableVersion: cur} // already applied
	case backup.Gap:
		return &op.Response{Code: op.CodeBackupGap, Msg: fmt.Sprintf("partition %d: record %d after %d", s.id, seq, s.seq), TableVersion: cur}
	}
	if ex, ok := s.state(m, svc).(op.Executor); ok {
		s.applySeam(ex, seq, now, req)
	} else if resp := s.state(m, svc).Apply(now, req); req.Origin != 0 {
		// Replay is deterministic, so this is the owner's response: keep
		// it for a retry that reaches this member after a failover.
		s.dedup.Put(req.Origin, req.CallSeq, seq, resp, now)
	}
	if s.seq == 0 && s.term == 0 && seq == 1 {
		// The first mutation of an empty history: nothing came before
		// it that this replica could lack.
		s.partial = false
	}
	s.seq, s.term = seq, term
	s.dataVersion = max(s.dataVersion, version)
	if req.Service[0] != '_' {
		m.counters.records.Add(1) // user mutations only
	}
	return &op.Response{TableVersion: cur}
}

// replica is the slot's replication position, for the rules in backup.
// s.mu is held.
func (s *slot) replica() backup.Replica {
	return backup.Replica{Role: s.role, OwnerSince: s.ownerSince, Seq: s.seq, Term: s.term, Sealed: s.sealed}
}

// fenced answers a record, snapshot or probe that backup.Fence refused.
// s.mu is held.
func (s *slot) fenced(m *Member, v backup.Verdict, what string, cur, version uint64) *op.Response {
	if v == backup.Deposed {
		return &op.Response{Code: op.CodeWrongOwner, Msg: fmt.Sprintf("backup %s: %s of table %d from a deposed owner of partition %d (owner since %d)", m.cfg.Name, what, version, s.id, s.ownerSince), TableVersion: cur}
	}
	return &op.Response{Code: op.CodeBackupGap, Msg: fmt.Sprintf("%s is not a backup of partition %d at table %d", m.cfg.Name, s.id, cur), TableVersion: cur}
}

func (s *slot) sweep(now time.Time, budget int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.role < 0 {
		return
	}
	for _, st := range s.states {
		if sw, ok := st.(op.Sweeper); ok {
			sw.Sweep(now, budget)
		}
	}
	s.dedup.Expire(now)
}

// entries counts live entries in the partition.
func (s *slot) entries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, st := range s.states {
		if _, internal := st.(*sessionState); st != nil && !internal {
			n += st.Len()
		}
	}
	return n
}

// adopt updates the slot for a new table. It returns the entries dropped
// (this member holds no replica any more), those of them that were
// orphaned (this member owned the partition and lost it without handing it
// over: the cluster declared it gone, e.g. on the losing side of a healed
// network cut; its writes since are discarded, the winning side's values
// kept) and the backups that need a full resync (new backups of a
// partition this member owns).
func (s *slot) adopt(m *Member, t *partition.Table) (dropped, orphaned int, mergeSnaps map[int][]byte, resync []string) {
	names := t.ReplicaNames(s.id)
	role := -1
	for i, n := range names {
		if n == m.cfg.Name {
			role = i
		}
	}
	owner := ""
	if len(names) > 0 {
		owner = names[0]
	}
	lost := false
	for _, p := range t.Lost {
		lost = lost || p == s.id
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if owner != s.owner || lost {
		s.owner, s.ownerSince = owner, t.Version
	}
	// A partition frozen for a hand-over that this table completes is not
	// orphaned when this member drops it: the new owner holds it all.
	handedOver := s.frozen != 0
	if s.frozen != 0 && t.Version > s.frozen {
		s.frozen = 0
	}
	// An owner that finds itself a backup without having handed the
	// partition over was declared gone (the losing side of a healed cut,
	// a long pause) and another replica promoted in its place; the table
	// re-adds it as a backup to give the partition back by a hand-over.
	// What it holds is the losing side's: orphaned as if it held no
	// replica (merged by policy, reported), and the replica starts again
	// from the new owner's copy.
	demoted := s.role == 0 && role > 0 && !handedOver && t.Version >= s.dataVersion
	if (role < 0 && t.Version >= s.dataVersion) || (lost && s.role < 0) || demoted {
		s.dataVersion = 0
		before := dropped
		orphan := s.role == 0 && !handedOver
		if orphan {
			// Orphaned: keep the structures that can merge for the
			// winning side's owner (and the merge report).
			mergeSnaps = m.orphanSnapshots(s)
		}
		for i, st := range s.states {
			if st != nil {
				dropped += st.Len()
				s.states[i] = nil
			}
		}
		if orphan {
			orphaned = dropped - before
			m.log.Debug("orphaned partition dropped", "partition", s.id, "entries", orphaned, "seq", s.seq, "term", s.term, "owner_since", s.ownerSince, "version", t.Version, "new_replicas", names)
		}
		s.seq, s.term = 0, 0
		s.partial = true
		s.dedup.Reset()
	}
	// Rebuild the owner's targets, keeping the sync state of backups that
	// stay.
	var next []*target
	if role == 0 {
		for _, n := range names[1:] {
			mb, _ := t.Member(n)
			var tg *target
			for _, old := range s.targets {
				// A backup of the same name at another address is a
				// restarted member (empty, on a new connection): a new
				// target that needs a full copy, not the old one's state.
				if old.name == n && old.addr == mb.Addr {
					tg = old
				}
			}
			if tg == nil {
				tg = &target{name: n, addr: mb.Addr}
				resync = append(resync, n)
			}
			next = append(next, tg)
		}
	}
	for _, old := range s.targets {
		keep := false
		for _, tg := range next {
			keep = keep || tg == old
		}
		if !keep {
			old.signal() // a hand-off waiting for this backup gives up
			old.prog.Drop(func(w *ackWait) {
				w.fail(op.Errorf(op.CodeBackupTimeout, "backup %s of partition %d left before acknowledging; the outcome is unknown", old.name, s.id))
			})
		}
	}
	s.targets = next
	if s.role == 0 && role != 0 {
		s.failParked(op.CodeWrongOwner, fmt.Sprintf("member %s no longer owns partition %d (table %d)", m.cfg.Name, s.id, t.Version), t.Version)
	}
	was := s.role
	s.role = role
	if role == 0 && was != 0 {
		// What an owner holds is the partition, by definition (a partial
		// replica is promoted only with the partition reported lost).
		s.partial = false
		s.becameOwner(m, time.Now())
	}
	return dropped, orphaned, mergeSnaps, resync
}

// coverage returns a wait for the synchronous backups to hold mutation seq
// (nil when they already do). s.mu is held.
func (s *slot) coverage(m *Member, req *op.Request, seq uint64) *ackWait {
	need := min(m.syncBackups(req.Service, req.Name), len(s.targets))
	if need == 0 {
		return nil
	}
	w := newAckWait(need, time.Now().Add(m.cfg.BackupTimeout))
	s.waits = append(s.waits, w)
	for _, tg := range s.targets[:need] {
		if tg.prog.Holds(seq) {
			w.ack()
			continue
		}
		tg.prog.Wait(seq, w)
		if !tg.prog.Streaming() {
			m.scheduleResync(s.id, tg.name)
		}
	}
	return w
}

// advance records that the backup acknowledged everything up to seq and
// releases the mutations waiting for it. s.mu is held.
func (tg *target) advance(seq uint64) {
	tg.prog.Advance(seq, ackOne)
	tg.signal()
}

// caught records that a probe or copy taken at seq completed. s.mu is
// held.
func (tg *target) caught(seq uint64) {
	tg.prog.Caught(seq, ackOne)
	tg.signal()
}
