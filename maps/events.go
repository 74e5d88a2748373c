package maps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/op"
)

// Entry events, the state side. A map emits events only while somebody
// listens to it: a listener registers on every partition with OpListen (a
// replicated mutation that holds a lease of listenLease, renewed by the
// listener), which gives the map a listen record in that partition. While a map has no record, a
// write costs one nil check more than before (no allocation, no event);
// while it has one, every change of a live entry (added, updated,
// removed) takes the next number of the record's sequence, on the owner
// and on every backup alike (the numbering is part of the replicated
// state), and the owner emits it (op.Exec.Emit), which the member core
// publishes once the synchronous backups hold the change.
//
// A registration ends with OpUnlisten or when its lease passes, judged
// with the time of a replicated mutation (so alike on every replica):
// renewing or adding a registration, or a change of the map. A record ends
// with its last registration; a later record starts a new epoch (the
// owner's time of its creation), so a listener can tell "the numbering
// restarted" from "events were lost". Leases rather than sessions: a map
// partition then needs no OpSessionEnded (which every ended session would
// send to every partition).
//
// TTL expiry of a listened map is the owner's decision, in sequenced
// expiry records that number one expired event per entry (expiry.go); a
// write that meets an expired entry before that record reclaims it with an
// unnumbered expired event. See Map.Listen.

// Operation codes of the event and paging operations. They continue the
// table in state.go from 24 up (17 to 23 are left to other additions of
// the same release); never renumber.
const (
	// OpListen registers a listener of map Name in partition Partition
	// (sent to every partition): Origin (the caller's session, not 0) and
	// Num (the listener's id, not 0, chosen by the listener) name it;
	// Aux[0]&1 asks for values in the events. The registration holds a
	// lease of 30s (listenLease) from the request's time; registering
	// again renews it. Found: newly registered; Num: the partition's
	// current event sequence; Value: the record's epoch (uvarint).
	OpListen uint8 = 24
	// OpUnlisten removes listener Num of Origin from map Name in this
	// partition. Found: it was registered.
	OpUnlisten uint8 = 25
	// OpKeysPage lists up to Num (at most MaxPageKeys; 0 = MaxPageKeys)
	// live keys of map Name in this partition that sort after Key (all
	// when Aux is empty; Aux[0]&1 means "after Key", so that the empty
	// key can be a cursor), in sorted order, in at most MaxPageBytes of
	// keys. Value: the keys (OpKeys payload); Found: more keys follow.
	OpKeysPage uint8 = 26
	// OpEntriesPage is OpKeysPage for entries: Value is an OpEntries
	// payload, sorted by key, of at most MaxPageBytes of keys and values
	// (but at least one entry, so a page always advances).
	OpEntriesPage uint8 = 27

	opExtEnd = 28
)

// listenFlagValues (Aux[0] of OpListen) asks for values in the events.
const listenFlagValues = 1

// listenLease is how long a registration lasts without renewal; listeners
// renew every listenLease/3 (Map.Listen).
const listenLease = 30 * time.Second

// MaxListeners bounds the registrations of one map in one partition (a
// listener holds one in every partition). Renewals always pass; a new
// registration past the bound fails with op.ErrTooLarge, so that a caller
// registering without end (a leak, or a hostile client) cannot grow the
// record, and the cost of every registration with it, without end.
const MaxListeners = 1024

type listenerID struct{ session, id uint64 }

// listenRec is a listened map's record in one partition.
type listenRec struct {
	// epoch is the owner's time (unix nanos) when the record was made.
	epoch int64
	// seq numbers the map's changes in this partition since epoch.
	seq uint64
	// subs are the registered listeners.
	subs map[listenerID]listenerReg
	// values counts the listeners that want values; soonest is the
	// earliest lease end of subs, so a change checks leases in O(1).
	values  int
	soonest int64
	// ttlAt is when the owner's armed expiry timer fires (unix nanos, 0
	// none); owner-local, not replicated (expiry.go).
	ttlAt int64
}

// listenerReg is one registration.
type listenerReg struct {
	values bool
	until  int64 // lease end, unix nanos
}

// eventKind is the kind byte of an event payload.
type eventKind uint8

const (
	evAdded eventKind = iota + 1
	evUpdated
	evRemoved
	evExpired
	evEvicted

	// Flags in the kind byte.
	evHasValue   = 0x80
	evUnnumbered = 0x40 // the event took no sequence number (lazy expiry)
)

// applyExt serves the operations numbered from OpListen up.
func (s *state) applyExt(now int64, req *op.Request) *op.Response {
	if req.Op >= opExtEnd {
		return fail(op.CodeUnknownOp, "map: unknown operation %d", req.Op)
	}
	if req.Name == "" {
		return fail(op.CodeBadRequest, "map: empty map name")
	}
	s.observe(now)
	switch req.Op {
	case OpListen:
		return s.listenOp(now, req)
	case OpUnlisten:
		return s.unlistenOp(now, req)
	case OpKeysPage, OpEntriesPage:
		return s.page(now, req)
	}
	return fail(op.CodeUnknownOp, "map: unknown operation %d", req.Op)
}

func (s *state) listenOp(now int64, req *op.Request) *op.Response {
	if req.Origin == 0 || req.Num == 0 {
		return fail(op.CodeBadRequest, "map: listen needs a caller session and a listener id")
	}
	rec := s.listen[req.Name]
	if rec != nil && !s.prune(now, req.Name, rec) {
		rec = nil
	}
	if rec == nil {
		// From now on the owner's records expire the map's entries:
		// start every replica from the same entries (see expiry.go).
		s.dropExpiredSilently(now, req.Name)
		rec = &listenRec{epoch: now, subs: map[listenerID]listenerReg{}}
		if s.listen == nil {
			s.listen = map[string]*listenRec{}
		}
		s.listen[req.Name] = rec
	}
	id := listenerID{req.Origin, uint64(req.Num)}
	values := len(req.Aux) > 0 && req.Aux[0]&listenFlagValues != 0
	_, had := rec.subs[id]
	if !had && len(rec.subs) >= MaxListeners {
		return fail(op.CodeTooLarge, "map %s has %d listeners, the most one map takes", op.Quote(req.Name), MaxListeners)
	}
	rec.subs[id] = listenerReg{values: values, until: satAdd(now, int64(listenLease))}
	rec.recount()
	return &op.Response{Found: !had, Num: int64(rec.seq), Value: binary.AppendUvarint(nil, uint64(rec.epoch))}
}

func (s *state) unlistenOp(now int64, req *op.Request) *op.Response {
	rec := s.listen[req.Name]
	if rec == nil {
		return &op.Response{}
	}
	id := listenerID{req.Origin, uint64(req.Num)}
	_, had := rec.subs[id]
	delete(rec.subs, id)
	s.prune(now, req.Name, rec)
	return &op.Response{Found: had}
}

// recount recomputes values and soonest.
func (rec *listenRec) recount() {
	rec.values, rec.soonest = 0, math.MaxInt64
	for _, r := range rec.subs {
		if r.values {
			rec.values++
		}
		rec.soonest = min(rec.soonest, r.until)
	}
}

// prune drops the registrations of map name whose lease passed by now,
// and the record when none is left; it reports whether the record stays.
func (s *state) prune(now int64, name string, rec *listenRec) bool {
	if rec.soonest <= now {
		for id, r := range rec.subs {
			if r.until <= now {
				delete(rec.subs, id)
			}
		}
		rec.recount()
	}
	if len(rec.subs) > 0 {
		return true
	}
	delete(s.listen, name)
	if len(s.listen) == 0 {
		s.listen = nil // the hot path tests for nil
	}
	return false
}

// changed records a change of a live entry of map name: the next number
// of its sequence and, on the owner, an event. The caller tests
// s.listen != nil first, which keeps unlistened maps free of any cost.
func (s *state) changed(name string, kind eventKind, key string, value []byte) {
	rec := s.listen[name]
	if rec == nil {
		return
	}
	// Leases are judged with the mutation's time, which backups replay
	// (in Execute; Apply, for tests and tools, has none and leaves them).
	if s.x != nil && rec.soonest <= s.x.Now.UnixNano() && !s.prune(s.x.Now.UnixNano(), name, rec) {
		return
	}
	rec.seq++
	s.emit(name, rec, kind, key, value)
}

// reclaimed is called before an expired entry of tab is removed by a
// mutation (lazy expiry on a write path): the owner emits an expired
// event, unnumbered (see the file comment).
func (s *state) reclaimed(tab *table, key string) {
	if s.x == nil || !s.x.Owner {
		return
	}
	rec := s.listen[tab.name]
	if rec == nil {
		return
	}
	s.emit(tab.name, rec, evExpired|evUnnumbered, key, tab.entries[key].value(len(key)))
}

func (s *state) emit(name string, rec *listenRec, kind eventKind, key string, value []byte) {
	if s.x == nil || !s.x.Owner {
		return // backups keep the numbering; only the owner publishes
	}
	s.x.Emit(name, encodeEvent(kind, s.partition, rec.epoch, rec.seq, key, value, rec.values > 0))
}

// dropping is called before the state drops an entry by itself (evict.go).
// Eviction, max-idle and the owner's expiry records (expiry.go, while
// s.expiring) are replicated decisions, made alike on owner and backups,
// so they take numbers; a TTL expiry met on the way of another decision
// may already have been reclaimed on a backup, so it does not.
func (s *state) dropping(why dropReason, tab *table, key string) {
	switch why {
	case dropExpired:
		if s.expiring {
			s.changed(tab.name, evExpired, key, tab.entries[key].value(len(key)))
			return
		}
		s.reclaimed(tab, key)
	case dropIdle:
		s.changed(tab.name, evExpired, key, tab.entries[key].value(len(key)))
	case dropEvicted:
		s.changed(tab.name, evEvicted, key, tab.entries[key].value(len(key)))
	}
}

// clearing emits a removed event for every live entry of tab, in key
// order, before Clear drops them.
func (s *state) clearing(now int64, tab *table) {
	if s.listen[tab.name] == nil {
		return
	}
	if tab.exps != nil {
		// Expired entries the owner's record has not removed yet leave
		// now, each with its (unnumbered) event.
		for _, x := range s.dueOf(now, tab, math.MaxInt) {
			s.reclaimed(tab, x.key)
		}
	}
	for _, e := range s.sorted(now, tab, nil) {
		s.changed(tab.name, evRemoved, e.key, e.value)
	}
}

// encodeEvent writes an event payload:
//
//	kind (| evHasValue | evUnnumbered) | uvarint partition | uvarint epoch | uvarint seq | uvarint len(key) | key
//	     [| uvarint h | value]   (when kind has evHasValue; h as in blob)
func encodeEvent(kind eventKind, partition int32, epoch int64, seq uint64, key string, value []byte, withValue bool) []byte {
	n := 1 + 4*binary.MaxVarintLen64 + len(key)
	if withValue {
		n += binary.MaxVarintLen64 + len(value)
		kind |= evHasValue
	}
	b := make([]byte, 0, n)
	b = append(b, byte(kind))
	b = binary.AppendUvarint(b, uint64(partition))
	b = binary.AppendUvarint(b, uint64(epoch))
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	if withValue {
		var h uint64
		if value != nil {
			h = uint64(len(value)) + 1
		}
		b = binary.AppendUvarint(b, h)
		b = append(b, value...)
	}
	return b
}

// rawEvent is a decoded event payload.
type rawEvent struct {
	kind       eventKind
	unnumbered bool
	partition  int32
	epoch      int64
	seq        uint64
	key        string
	value      []byte
	hasValue   bool
}

var errBadEvent = errors.New("malformed map event")

// decodeEvent decodes an event payload, checking every length against the
// bytes present. The value aliases b.
func decodeEvent(b []byte) (rawEvent, error) {
	var e rawEvent
	if len(b) < 1 {
		return e, errBadEvent
	}
	e.kind, e.hasValue, e.unnumbered = eventKind(b[0]&^(evHasValue|evUnnumbered)), b[0]&evHasValue != 0, b[0]&evUnnumbered != 0
	if e.kind < evAdded || e.kind > evEvicted {
		return e, fmt.Errorf("%w: kind %d", errBadEvent, b[0])
	}
	b = b[1:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	p, ok1 := uv()
	ep, ok2 := uv()
	seq, ok3 := uv()
	kl, ok4 := uv()
	if !ok1 || !ok2 || !ok3 || !ok4 || p > 1<<31-1 || ep > 1<<63-1 || kl > uint64(len(b)) {
		return e, errBadEvent
	}
	e.partition, e.epoch, e.seq = int32(p), int64(ep), seq
	e.key, b = string(b[:kl]), b[kl:]
	if e.hasValue {
		h, ok := uv()
		if !ok || h > uint64(len(b))+1 {
			return e, errBadEvent
		}
		if h > 0 {
			e.value, b = b[:h-1:h-1], b[h-1:]
		}
	}
	if len(b) != 0 {
		return e, fmt.Errorf("%w: %d trailing bytes", errBadEvent, len(b))
	}
	return e, nil
}

// listenLen is what the listen records add to Len: a partition that holds
// only registrations must still travel in snapshots (the core skips
// states whose Len is 0).
func (s *state) listenLen() int {
	n := 0
	for _, rec := range s.listen {
		n += len(rec.subs)
	}
	return n
}

// encodeListen writes the listen records, sorted, as the snapshot's third
// element: [[name, epoch, seq, [[session, id, values, until], ...]], ...].
func encodeListen(e *msgpack.Encoder, s *state) {
	names := make([]string, 0, len(s.listen))
	for name := range s.listen {
		names = append(names, name)
	}
	slices.Sort(names)
	_ = e.EncodeArrayLen(len(names))
	for _, name := range names {
		rec := s.listen[name]
		ids := make([]listenerID, 0, len(rec.subs))
		for id := range rec.subs {
			ids = append(ids, id)
		}
		slices.SortFunc(ids, func(a, b listenerID) int {
			if c := cmpU(a.session, b.session); c != 0 {
				return c
			}
			return cmpU(a.id, b.id)
		})
		_ = e.EncodeArrayLen(4)
		_ = e.EncodeString(name)
		_ = e.EncodeInt(rec.epoch)
		_ = e.EncodeUint(rec.seq)
		_ = e.EncodeArrayLen(len(ids))
		for _, id := range ids {
			_ = e.EncodeArrayLen(4)
			_ = e.EncodeUint(id.session)
			_ = e.EncodeUint(id.id)
			_ = e.EncodeBool(rec.subs[id].values)
			_ = e.EncodeInt(rec.subs[id].until)
		}
	}
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// decodeListen reads what encodeListen wrote into into.
func decodeListen(d *decoder, into *state) error {
	n, err := d.length(d.DecodeArrayLen())
	if err != nil {
		return err
	}
	for range n {
		if k, err := d.DecodeArrayLen(); err != nil || k != 4 {
			return fmt.Errorf("bad listen record (%d fields): %v", k, err)
		}
		name, err := d.string()
		if err != nil {
			return err
		}
		if name == "" {
			return errors.New("listen record without a map name")
		}
		epoch, err := d.DecodeInt64()
		if err != nil {
			return err
		}
		seq, err := d.DecodeUint64()
		if err != nil {
			return err
		}
		m, err := d.length(d.DecodeArrayLen())
		if err != nil {
			return err
		}
		rec := &listenRec{epoch: epoch, seq: seq, subs: make(map[listenerID]listenerReg, max(m, 0))}
		for range m {
			if k, err := d.DecodeArrayLen(); err != nil || k != 4 {
				return fmt.Errorf("bad listener (%d fields): %v", k, err)
			}
			session, err := d.DecodeUint64()
			if err != nil {
				return err
			}
			id, err := d.DecodeUint64()
			if err != nil {
				return err
			}
			v, err := d.DecodeBool()
			if err != nil {
				return err
			}
			until, err := d.DecodeInt64()
			if err != nil {
				return err
			}
			rec.subs[listenerID{session, id}] = listenerReg{values: v, until: until}
		}
		if len(rec.subs) == 0 {
			continue
		}
		rec.recount()
		if into.listen == nil {
			into.listen = map[string]*listenRec{}
		}
		into.listen[name] = rec
	}
	return nil
}

func changeKind(had bool) eventKind {
	if had {
		return evUpdated
	}
	return evAdded
}
