package maps

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"github.com/shoalgrid/shoal/internal/iheap"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/shoalgrid/shoal/op"
)

// ServiceName is the op.Request.Service value the map service answers.
const ServiceName = "map"

// Operation codes of the map service (op.Request.Op). They are part of the
// wire protocol: never renumber. Every operation reads Request.Name (the map
// name, which must not be empty); the comments list what else it reads and
// which Response fields it writes. Request fields not listed are ignored.
// A TTL (Request.Num, in milliseconds) of 0 means "never expires"; a negative
// one fails the request with op.ErrBadRequest before anything changes.
// Response.Value may alias the partition's memory: the member core must
// encode or copy it before it lets another request touch the partition.
// (The state never writes to memory it has stored, an update stores a new
// copy, so an aliased value never changes; copying it is still what keeps
// a reader from pinning an overwritten entry.) Apply copies Key and Value
// into memory of its own and keeps no reference to the request.
const (
	// OpPut stores Value under Key with TTL Num.
	// Found: Key held a live entry before (its old value is not returned,
	// which keeps the common Put cheap).
	OpPut uint8 = iota + 1
	// OpGet reads Key. Found: Key is live; Value: its value.
	OpGet
	// OpDelete removes Key. Found: Key was live.
	OpDelete
	// OpPutIfAbsent stores Value under Key with TTL Num only when Key is
	// absent. Found: the value was stored; when it was not, Value is the
	// existing value.
	OpPutIfAbsent
	// OpReplace stores Value under Key with TTL Num only when Key is live.
	// Found: the value was replaced.
	OpReplace
	// OpCompareAndSwap stores Value under Key with TTL Num only when Key is
	// live and its value equals Aux byte for byte (an absent key never
	// matches). Found: the value was swapped.
	OpCompareAndSwap
	// OpContains tests Key. Found: Key is live.
	OpContains
	// OpSize counts the map's live entries in this partition: Num.
	OpSize
	// OpKeys lists the map's live keys in this partition: Value is their
	// msgpack encoding as a []string, in no particular order.
	OpKeys
	// OpEntries returns the map's live entries in this partition, sorted by
	// key: Value is a msgpack map of key (str) to value (bin, or nil for a
	// nil value). It serves iteration, one partition at a time.
	OpEntries
	// OpClear removes every entry of the map in this partition. Num: how
	// many live entries were removed.
	OpClear
	// OpIncr adds Num to the integer stored under Key (decimal text, as
	// Redis INCRBY; an absent key counts as 0) and keeps its TTL. Num in the
	// response: the new value. A value that is not a decimal int64 fails
	// with op.ErrWrongType, an overflow with op.ErrBadRequest; neither
	// changes anything. A retried Incr is not applied twice (request
	// identities).
	OpIncr
	// OpMerge merges into this partition the entries of map Name found in
	// Value, a partition snapshot (State.Snapshot) taken on the losing side
	// of a healed network split, by the policy in Num: MergePutIfAbsent
	// stores the entries whose key is absent here (this side's values
	// win), MergePassThrough stores them all (the losing side's values
	// win). Entries keep their absolute expiry; expired ones are skipped.
	// Num: how many entries were stored. Sent by the member core only.
	OpMerge
	// OpGetAll reads the keys listed in Value (encodeKeys), all of this
	// partition. Value in the response: the live ones as an OpEntries
	// payload (absent keys are left out), in request order.
	OpGetAll
	// OpPutAll stores every entry of Value (an OpEntries payload) with TTL
	// Num, in order; all or none (a malformed payload changes nothing).
	// Num in the response: how many entries it stored.
	OpPutAll
	// OpDeleteAll removes the keys listed in Value (encodeKeys). Num in the
	// response: how many were live.
	OpDeleteAll

	opEnd
)

// Service is the map service: it creates the per-partition state machines
// the member core hosts. Register it with the member under ServiceName.
// Rules are matched first to last when a map's table is created in a
// partition (never per request); a map no rule matches has no default TTL
// and no bound.
type Service struct {
	// Rules configure maps by name pattern (default TTL, max entries);
	// every member must have the same.
	Rules []Rule
	// PartitionCount is the cluster's partition count, which spreads a
	// rule's MaxEntries over partitions; 0 = 271 (partition.DefaultCount).
	PartitionCount int
}

var (
	_ op.Service = Service{}
	_ op.State   = (*state)(nil)
	_ op.Sweeper = (*state)(nil)
	_ op.Grower  = Service{}

	_ op.Executor = (*state)(nil)
)

// Name returns ServiceName.
func (Service) Name() string { return ServiceName }

// OpName names a map operation for metrics ("put"), or returns "".
func (Service) OpName(o uint8) string {
	switch o {
	case OpPut:
		return "put"
	case OpGet:
		return "get"
	case OpDelete:
		return "delete"
	case OpPutIfAbsent:
		return "put_if_absent"
	case OpReplace:
		return "replace"
	case OpCompareAndSwap:
		return "compare_and_swap"
	case OpContains:
		return "contains"
	case OpSize:
		return "size"
	case OpKeys:
		return "keys"
	case OpEntries:
		return "entries"
	case OpClear:
		return "clear"
	case OpGetAll:
		return "get_all"
	case OpPutAll:
		return "put_all"
	case OpDeleteAll:
		return "delete_all"
	case OpListen:
		return "listen"
	case OpUnlisten:
		return "unlisten"
	case OpKeysPage:
		return "keys_page"
	case OpEntriesPage:
		return "entries_page"
	}
	return ""
}

// AdminOp reports whether an operation needs the admin role on clusters
// that check client tokens (grid.AdminOps): Clear does.
func (Service) AdminOp(o uint8) bool { return o == OpClear }

// ReaderOp reports whether a mutating operation needs only the read role
// on clusters that check client tokens (grid.ReaderOps): registering,
// renewing and removing a listener write bookkeeping, no data.
func (Service) ReaderOp(o uint8) bool { return o == OpListen || o == OpUnlisten }

// Grows reports whether a map operation may grow the map (op.Grower): the
// member's memory guard refuses these when its heap is above the limit.
func (Service) Grows(o uint8) bool {
	switch o {
	case OpPut, OpPutIfAbsent, OpReplace, OpCompareAndSwap, OpIncr, OpMerge, OpPutAll:
		return true
	}
	return false
}

// Mutates reports whether a map operation may change state (and so is
// replayed on backups).
func (Service) Mutates(o uint8) bool {
	switch o {
	case OpPut, OpDelete, OpPutIfAbsent, OpReplace, OpCompareAndSwap, OpClear, OpIncr, OpMerge, OpPutAll, OpDeleteAll,
		op.OpTimer, op.OpEvict, OpListen, OpUnlisten:
		return true
	}
	return false
}

// NewState returns the empty map state of one partition. The returned value
// also implements op.Sweeper, op.Executor (timers of maps with max-idle or
// an eviction policy, and TTL expiry records of listened maps), op.OwnerHook
// and op.Evictor.
func (svc Service) NewState(partition int32) op.State {
	s := newState(partition)
	s.rules = resolveRules(svc.Rules, svc.PartitionCount)
	return s
}

// state holds every map whose keys hash to one partition. It is not safe for
// concurrent use: the member core serialises calls (op.State contract).
type state struct {
	partition int32
	maps      map[string]*table
	// n counts stored entries across all maps, including expired ones
	// that nobody has reclaimed yet; Len discounts those.
	n int
	// exp orders every entry that has a TTL by expiry, so Sweep finds the
	// expired ones without scanning and Size/Len can count them by visiting
	// only the expired prefix of the heap.
	exp iheap.Heap[*expiry]
	// last is the latest time (unix nanos) seen by any call; Len has no
	// clock of its own.
	last int64
	// rules are the service's map rules (nil: none), read when a table is
	// created.
	rules []resolvedRule
	// hlc is the partition's hybrid logical clock: the write timestamp of
	// the latest stored entry (see tick). Replicated: backups replay the
	// owner's times, and snapshots carry it.
	hlc int64
	// ages holds the LFU age of maps with policy lfu that evicted (see
	// evict.go); it outlives the map's table, which a local sweep may drop.
	ages map[string]int64
	// dropped counts the entries drop removed, by reason (replicated
	// decisions, so equal on owner and backups; read by tests).
	dropped [dropExpired + 1]int64
	// listen holds the records of listened maps (events.go); nil while no
	// map of the partition is listened, which is all the write path tests.
	listen map[string]*listenRec
	// x is the execution context during Execute (nil in Apply): where
	// events are emitted.
	x *op.Exec
	// expiring is set while an expiry record (expiry.go) drops entries:
	// their expired events are numbered.
	expiring bool
}

// tick returns the next write timestamp: the operation's time, or one past
// the latest timestamp when that is not earlier (a hybrid logical clock in
// nanoseconds: physical time while clocks move forward, a counter when they
// stall or a merged entry came from a clock ahead of ours).
func (s *state) tick(now int64) int64 {
	if s.hlc == math.MaxInt64 {
		return s.hlc // a forged far-future stamp: saturate, never wrap
	}
	s.hlc = max(now, s.hlc+1)
	return s.hlc
}

// table is one map's share of a partition.
//
// Memory layout: an entry costs one map slot (the key's string header and
// a pointer, 24 bytes) and one allocation, its blob, which holds the key and
// the value; the map's key string aliases the key bytes inside the blob.
// Only entries with a TTL cost more: an expiry in exps and in the heap.
type table struct {
	name    string
	entries map[string]blob
	// exps holds the expiry of every entry that has one, keyed like
	// entries; nil while no entry has a TTL, so Size is len(entries).
	exps map[string]*expiry
	// rule is the map's rule, looked up when the table was created.
	rule mapRule
	// pol is the access bookkeeping of a map with max-idle or an eviction
	// policy (evict.go); nil for other maps, which pay nothing for it.
	pol *policy
}

// blob points at the single allocation that holds an entry:
//
//	uvarint(h) | write timestamp (8 bytes, little endian) | key bytes | value bytes
//
// where h is 0 for a nil value and len(value)+1 otherwise (so nil and empty
// values stay apart; a value under 127 bytes costs one header byte). A blob
// is never modified once stored: an update stores a new blob. That is what
// lets a Response.Value alias it and the map's key string point into it.
// The write timestamp is the entry's hybrid logical clock reading (see
// state.tick), which the "latest" merge policy compares.
// The zero blob stands for "no entry".
type blob struct{ p *byte }

// tsLen is the size of a blob's write timestamp.
const tsLen = 8

// newBlob copies key and value into a fresh blob stamped ts and returns it
// with the key as a string aliasing the blob's copy.
func newBlob(key string, ts int64, value []byte) (blob, string) {
	var h uint64
	if value != nil {
		h = uint64(len(value)) + 1
	}
	n := uvarintLen(h)
	b := make([]byte, n+tsLen+len(key)+len(value))
	binary.PutUvarint(b, h)
	binary.LittleEndian.PutUint64(b[n:], uint64(ts))
	n += tsLen
	copy(b[n:], key)
	copy(b[n+len(key):], value)
	k := ""
	if len(key) > 0 {
		k = unsafe.String(&b[n], len(key))
	}
	return blob{&b[0]}, k
}

func uvarintLen(h uint64) int {
	n := 1
	for ; h >= 0x80; h >>= 7 {
		n++
	}
	return n
}

// header decodes the blob's header: h (see blob) and its length in bytes.
// It reads byte by byte so it never looks past the blob's end.
func (b blob) header() (h uint64, n int) {
	for shift := uint(0); ; shift += 7 {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(b.p), n))
		n++
		h |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return h, n
		}
	}
}

// value returns the blob's value, aliasing the blob (callers must not
// modify it), given the length of its key; nil for the zero blob.
func (b blob) value(keyLen int) []byte {
	if b.p == nil {
		return nil
	}
	h, n := b.header()
	switch h {
	case 0:
		return nil
	case 1:
		return unsafe.Slice(b.p, 0) // empty, but not nil
	}
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(b.p), n+tsLen+keyLen)), h-1)
}

// ts returns the blob's write timestamp (0 for the zero blob).
func (b blob) ts() int64 {
	if b.p == nil {
		return 0
	}
	_, n := b.header()
	return int64(binary.LittleEndian.Uint64(unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(b.p), n)), tsLen)))
}

// expiry is a TTL entry's slot in the expiry heap. The table's exps finds it
// by key so an overwrite or delete can fix or drop it in O(log n) instead
// of leaving garbage in the heap.
type expiry struct {
	at  int64 // unix nanos; the entry is absent from this instant on
	tab *table
	key string // aliases the current blob's key
	idx int    // position in the heap
}

func newState(partition int32) *state {
	return &state{partition: partition, maps: make(map[string]*table), exp: newExpHeap()}
}

func (s *state) observe(now int64) {
	if now > s.last {
		s.last = now
	}
}

func fail(c op.Code, format string, args ...any) *op.Response {
	return &op.Response{Code: c, Msg: fmt.Sprintf(format, args...)}
}

// Apply executes one map operation at time now. It never panics: malformed
// requests get an error response. The member core calls Execute (idle.go),
// which comes here for the map operations.
func (s *state) Apply(now time.Time, req *op.Request) *op.Response {
	if req == nil {
		return fail(op.CodeBadRequest, "map: nil request")
	}
	if req.Op == op.OpTimer || req.Op == op.OpEvict {
		// The core's operations need an execution context (as the owner).
		var x op.Exec
		x.Reset(now, s.partition, true, req)
		return s.Execute(&x, req)
	}
	if req.Op >= OpListen {
		return s.applyExt(now.UnixNano(), req)
	}
	if req.Op == 0 || req.Op >= opEnd {
		return fail(op.CodeUnknownOp, "map: unknown operation %d", req.Op)
	}
	if req.Name == "" {
		return fail(op.CodeBadRequest, "map: empty map name")
	}
	t := now.UnixNano()
	s.observe(t)
	switch req.Op {
	case OpGet:
		tab, b, ok := s.lookupRead(t, req.Name, req.Key)
		if ok && tab.pol != nil {
			tab.pol.read(req.Key, t)
		}
		return &op.Response{Found: ok, Value: b.value(len(req.Key))}
	case OpContains:
		tab, _, ok := s.lookupRead(t, req.Name, req.Key)
		if ok && tab.pol != nil {
			tab.pol.read(req.Key, t)
		}
		return &op.Response{Found: ok}
	case OpDelete:
		tab, b, x, ok := s.lookup(t, req.Name, req.Key)
		if ok {
			if s.listen != nil {
				s.changed(req.Name, evRemoved, req.Key, b.value(len(req.Key)))
			}
			s.remove(tab, req.Key, x)
		}
		return &op.Response{Found: ok}
	case OpSize:
		return &op.Response{Num: int64(s.live(t, s.maps[req.Name]))}
	case OpKeys:
		return &op.Response{Value: s.keys(t, s.maps[req.Name])}
	case OpEntries:
		return &op.Response{Value: s.entries(t, s.maps[req.Name])}
	case OpClear:
		return &op.Response{Num: int64(s.clear(t, s.maps[req.Name]))}
	case OpIncr:
		return s.incr(t, req)
	case OpMerge:
		return s.merge(t, req)
	case OpGetAll, OpPutAll, OpDeleteAll:
		return s.batch(t, req)
	}

	// The remaining operations write with a TTL: validate it before any
	// change.
	at, err := expireAt(t, req.Num)
	if err != nil {
		return err
	}
	if len(s.rules) != 0 {
		at = s.defaultAt(t, req.Name, at)
		if req.Op == OpPut {
			if r := s.refuseNew(t, req.Name, req.Key); r != nil {
				return r
			}
		}
	}
	if req.Op == OpPut {
		had := s.put(t, req.Name, req.Key, req.Value, at, 0)
		if s.listen != nil {
			s.changed(req.Name, changeKind(had), req.Key, req.Value)
		}
		return &op.Response{Found: had}
	}
	tab, b, x, ok := s.lookup(t, req.Name, req.Key)
	switch req.Op {
	case OpPutIfAbsent:
		if ok {
			if tab.pol != nil {
				tab.pol.read(req.Key, t)
			}
			return &op.Response{Value: b.value(len(req.Key))}
		}
		if !s.roomFor(t, req.Name, 1) {
			if !s.evictFor(t, req.Name, 1) {
				return mapFull(req.Name, s.rule(tab, req.Name))
			}
			tab = s.maps[req.Name] // eviction may have dropped the table
		}
	case OpReplace:
		if !ok {
			return &op.Response{}
		}
	case OpCompareAndSwap:
		if !ok || !bytes.Equal(b.value(len(req.Key)), req.Aux) {
			return &op.Response{}
		}
	}
	had := s.store(t, tab, req.Name, req.Key, req.Value, at, 0, x)
	if s.listen != nil {
		s.changed(req.Name, changeKind(had), req.Key, req.Value)
	}
	return &op.Response{Found: true}
}

// batch implements OpGetAll, OpPutAll and OpDeleteAll. The payload is
// decoded whole before anything changes.
func (s *state) batch(now int64, req *op.Request) *op.Response {
	if req.Op == OpPutAll {
		at, bad := expireAt(now, req.Num)
		if bad != nil {
			return bad
		}
		es, err := decodeEntriesRaw(req.Value)
		if err != nil {
			return fail(op.CodeBadRequest, "map: put-all: %v", err)
		}
		if len(s.rules) != 0 {
			at = s.defaultAt(now, req.Name, at)
			if r := s.refuseNewAll(now, req.Name, es); r != nil {
				return r
			}
		}
		for _, e := range es {
			if len(s.rules) != 0 {
				s.refuseNew(now, req.Name, e.key) // an evicting map makes room key by key
			}
			had := s.put(now, req.Name, e.key, e.value, at, 0)
			if s.listen != nil {
				s.changed(req.Name, changeKind(had), e.key, e.value)
			}
		}
		return &op.Response{Num: int64(len(es))}
	}
	keys, err := decodeKeys(req.Value)
	if err != nil {
		return fail(op.CodeBadRequest, "map: %s: %v", Service{}.OpName(req.Op), err)
	}
	if req.Op == OpDeleteAll {
		n := 0
		for _, k := range keys {
			if tab, b, x, ok := s.lookup(now, req.Name, k); ok {
				if s.listen != nil {
					s.changed(req.Name, evRemoved, k, b.value(len(k)))
				}
				s.remove(tab, k, x)
				n++
			}
		}
		return &op.Response{Num: int64(n)}
	}
	es := make([]kv, 0, len(keys))
	for _, k := range keys {
		if tab, b, ok := s.lookupRead(now, req.Name, k); ok {
			if tab.pol != nil {
				tab.pol.read(k, now)
			}
			es = append(es, kv{key: k, value: b.value(len(k))})
		}
	}
	return &op.Response{Value: encodeEntries(es)}
}

// incr implements OpIncr.
func (s *state) incr(now int64, req *op.Request) *op.Response {
	tab, b, x, ok := s.lookup(now, req.Name, req.Key)
	var cur int64
	if ok {
		v := b.value(len(req.Key))
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return fail(op.CodeWrongType, "map: incr: the value under the key is not a decimal integer")
		}
		cur = n
	}
	next := cur + req.Num
	if (req.Num > 0 && next < cur) || (req.Num < 0 && next > cur) {
		return fail(op.CodeBadRequest, "map: incr: %d + %d overflows int64", cur, req.Num)
	}
	var at int64
	if x != nil {
		at = x.at
	}
	if !ok && len(s.rules) != 0 {
		if !s.roomFor(now, req.Name, 1) {
			if !s.evictFor(now, req.Name, 1) {
				return mapFull(req.Name, s.rule(tab, req.Name))
			}
			tab = s.maps[req.Name] // eviction may have dropped the table
		}
		at = s.defaultAt(now, req.Name, 0)
	}
	var buf [20]byte
	v := strconv.AppendInt(buf[:0], next, 10)
	s.store(now, tab, req.Name, req.Key, v, at, 0, x)
	if s.listen != nil {
		s.changed(req.Name, changeKind(ok), req.Key, v)
	}
	return &op.Response{Found: ok, Num: next}
}

// expireAt converts a TTL in milliseconds into an absolute expiry (0 = none),
// saturating instead of overflowing so a huge TTL means "practically never".
func expireAt(now, ttlMillis int64) (int64, *op.Response) {
	switch {
	case ttlMillis < 0:
		return 0, fail(op.CodeBadRequest, "map: negative TTL %dms", ttlMillis)
	case ttlMillis == 0:
		return 0, nil
	case ttlMillis > math.MaxInt64/int64(time.Millisecond):
		return math.MaxInt64, nil
	}
	d := ttlMillis * int64(time.Millisecond)
	if now > 0 && d > math.MaxInt64-now {
		return math.MaxInt64, nil
	}
	return now + d, nil
}

// lookup finds a live entry: its blob and its expiry (nil without a TTL).
// An expired entry it meets is reclaimed on the spot (lazy expiry), so
// afterwards the key is either live or not stored at all. tab is the map's
// table, nil when the map holds nothing.
func (s *state) lookup(now int64, name, key string) (tab *table, b blob, x *expiry, ok bool) {
	tab = s.maps[name]
	if tab == nil {
		return nil, blob{}, nil, false
	}
	b, ok = tab.entries[key]
	if !ok || tab.exps == nil {
		return tab, b, nil, ok
	}
	if x = tab.exps[key]; x != nil && x.at <= now {
		if s.listen != nil {
			s.reclaimed(tab, key)
		}
		s.remove(tab, key, x)
		if len(tab.entries) == 0 {
			tab = nil // remove dropped the table
		}
		return tab, blob{}, nil, false
	}
	return tab, b, x, true
}

// put writes key = value with expiry at (0 = none) unconditionally and
// reports whether key held a live entry. It is lookup and store in one,
// without looking the key up in entries first: only the expiry (if the map
// has any) is needed beforehand, and whether the key existed shows in the
// size of entries.
func (s *state) put(now int64, name, key string, value []byte, at, ts int64) (had bool) {
	tab := s.maps[name]
	var old *expiry
	if tab != nil && tab.exps != nil {
		if old = tab.exps[key]; old != nil && old.at <= now {
			if s.listen != nil {
				s.reclaimed(tab, key)
			}
			s.remove(tab, key, old) // expired: reclaim it first
			old = nil
			if len(tab.entries) == 0 {
				tab = nil // remove dropped the table
			}
		}
	}
	return s.store(now, tab, name, key, value, at, ts, old)
}

// store writes key = value with expiry at (0 = none) and write timestamp
// ts (0: the next reading of the partition's clock, see tick) at time now,
// and reports whether key was stored before. tab is the map's table (nil if it has none) and
// old the key's expiry (nil if none); any expired entry under key must have
// been reclaimed already (lookup and put do), so a stored entry is live.
// It copies key and value into a new blob, so neither is retained: key may
// even alias memory the caller reuses.
func (s *state) store(now int64, tab *table, name, key string, value []byte, at, ts int64, old *expiry) (had bool) {
	if tab == nil {
		tab = &table{name: name, entries: make(map[string]blob, 1), rule: s.ruleFor(name)}
		if tab.rule.tracked() {
			tab.pol = newPolicy(tab.rule)
		}
		s.maps[name] = tab
	}
	if ts == 0 {
		ts = s.tick(now)
	} else if ts > s.hlc {
		s.hlc = ts // a merged entry's clock: later writes stamp after it
	}
	b, k := newBlob(key, ts, value)
	n := len(tab.entries)
	// Assigning under k also replaces the stored key string, which must
	// stop pointing into the old blob so that the old blob can be freed.
	tab.entries[k] = b
	had = len(tab.entries) == n
	switch {
	case at != 0 && old != nil:
		old.at, old.key = at, k
		tab.exps[k] = old // re-point the stored key at the new blob too
		s.exp.Fix(old.idx)
	case at != 0:
		x := &expiry{at: at, tab: tab, key: k}
		if tab.exps == nil {
			tab.exps = make(map[string]*expiry, 1)
		}
		tab.exps[k] = x
		s.exp.Push(x)
	case old != nil:
		tab.dropExpiry(key)
		s.exp.Remove(old.idx)
	}
	if !had {
		s.n++
	}
	if tab.pol != nil {
		s.wrote(tab, k, now, had)
	}
	return had
}

// dropExpiry forgets key's expiry, and exps itself once empty: a Go map
// never shrinks, so a table whose TTL entries are gone must not keep their
// capacity.
func (tab *table) dropExpiry(key string) {
	delete(tab.exps, key)
	if len(tab.exps) == 0 {
		tab.exps = nil
	}
}

// remove deletes a stored entry, x being its expiry (nil without a TTL),
// and drops its table when it empties, so abandoned maps cost nothing.
func (s *state) remove(tab *table, key string, x *expiry) {
	if tab.pol != nil {
		tab.pol.forget(key)
	}
	delete(tab.entries, key)
	if x != nil {
		tab.dropExpiry(key)
		s.exp.Remove(x.idx)
	}
	s.n--
	if len(tab.entries) == 0 {
		delete(s.maps, tab.name)
	}
}

// expired reports whether tab's stored entry key has expired by now.
func (tab *table) expired(now int64, key string) bool {
	if tab.exps == nil {
		return false
	}
	x := tab.exps[key]
	return x != nil && x.at <= now
}

func (s *state) expiredPending(now int64) bool {
	return s.exp.Len() > 0 && s.exp.Items[0].at <= now
}

// live counts tab's live entries: O(1) unless expired entries are waiting
// for the sweeper, and then O(expired entries of the partition).
func (s *state) live(now int64, tab *table) int {
	if tab == nil {
		return 0
	}
	n := len(tab.entries)
	if tab.exps == nil || !s.expiredPending(now) {
		return n
	}
	return n - countExpired(s.exp.Items, now, tab, 0)
}

func (s *state) keys(now int64, tab *table) []byte {
	if tab == nil {
		return encodeKeys(nil)
	}
	keys := make([]string, 0, s.live(now, tab))
	check := tab.exps != nil && s.expiredPending(now)
	for k := range tab.entries {
		if !check || !tab.expired(now, k) {
			keys = append(keys, k)
		}
	}
	return encodeKeys(keys)
}

func (s *state) entries(now int64, tab *table) []byte {
	if tab == nil {
		return encodeEntries(nil)
	}
	return encodeEntries(s.sorted(now, tab, make([]kv, 0, s.live(now, tab))))
}

// sorted appends tab's live entries to es sorted by key, so iteration and
// snapshots are deterministic. The keys and values alias the blobs.
func (s *state) sorted(now int64, tab *table, es []kv) []kv {
	check := tab.exps != nil && s.expiredPending(now)
	for k, b := range tab.entries {
		if !check || !tab.expired(now, k) {
			es = append(es, kv{key: k, value: b.value(len(k))})
		}
	}
	slices.SortFunc(es, func(a, b kv) int { return strings.Compare(a.key, b.key) })
	return es
}

func (s *state) clear(now int64, tab *table) int {
	if tab == nil {
		return 0
	}
	if s.listen != nil {
		s.clearing(now, tab)
	}
	n := s.live(now, tab)
	for _, x := range tab.exps {
		s.exp.Remove(x.idx)
	}
	s.n -= len(tab.entries)
	if tab.pol != nil {
		tab.pol.forgetAll()
	}
	delete(s.maps, tab.name)
	delete(s.ages, tab.name)
	return n
}

// Sweep removes up to max expired entries, soonest-expired first. It costs
// O(1) when nothing has expired and O(log n) per removed entry otherwise.
// Entries of listened maps are left to the owner's expiry records
// (expiry.go).
func (s *state) Sweep(now time.Time, max int) int {
	t := now.UnixNano()
	s.observe(t)
	if s.listen != nil {
		return s.sweepUnlistened(t, max)
	}
	n := 0
	for n < max && s.expiredPending(t) {
		x := s.exp.Items[0]
		s.remove(x.tab, x.key, x)
		n++
	}
	return n
}

// Len reports the live entries across all maps, as of the latest time any
// call passed in (Len takes no clock).
func (s *state) Len() int {
	n := s.n
	if s.listen != nil {
		n += s.listenLen()
	}
	if !s.expiredPending(s.last) {
		return n
	}
	return n - countExpired(s.exp.Items, s.last, nil, 0)
}

// Structures reports the maps of this partition and their stored entries
// (expired ones not yet swept included), for status pages.
func (s *state) Structures() map[string]int {
	out := make(map[string]int, len(s.maps))
	for name, tab := range s.maps {
		out[name] = len(tab.entries)
	}
	return out
}

// Snapshot serialises every live entry with its absolute expiry. Maps and
// keys are sorted so equal states give equal snapshots.
func (s *state) Snapshot(now time.Time) ([]byte, error) {
	t := now.UnixNano()
	s.observe(t)
	return encodeSnapshot(s, t)
}

// Restore replaces the state with a snapshot, dropping entries that have
// expired by now. On error the state is left unchanged.
func (s *state) Restore(now time.Time, snapshot []byte) error {
	t := now.UnixNano()
	fresh := newState(s.partition)
	fresh.rules = s.rules
	if err := decodeSnapshot(snapshot, t, fresh); err != nil {
		return fmt.Errorf("maps: restore partition %d: %w", s.partition, err)
	}
	fresh.observe(max(t, s.last))
	*s = *fresh
	return nil
}

// newExpHeap returns an empty expiry heap, soonest first, that keeps each
// expiry's idx current.
func newExpHeap() iheap.Heap[*expiry] {
	return iheap.New(func(a, b *expiry) bool { return a.at < b.at }, func(x *expiry, i int) { x.idx = i })
}

// countExpired counts the items at or below index i that expired by now and
// belong to tab (any table when tab is nil). A subtree whose root expires
// later holds only later items, so only the expired part is visited.
func countExpired(h []*expiry, now int64, tab *table, i int) int {
	if i >= len(h) || h[i].at > now {
		return 0
	}
	n := 0
	if tab == nil || h[i].tab == tab {
		n = 1
	}
	return n + countExpired(h, now, tab, 2*i+1) + countExpired(h, now, tab, 2*i+2)
}

// Merge policies of OpMerge (Request.Num).
const (
	// MergePutIfAbsent stores the losing side's entries whose key is
	// absent on the winning side.
	MergePutIfAbsent = op.MergePutIfAbsent
	// MergePassThrough stores every entry of the losing side, overwriting
	// the winning side's values.
	MergePassThrough = op.MergePassThrough
	// MergeLatest keeps, per key, the entry with the later write
	// timestamp (hybrid logical clock); equal timestamps go to the larger
	// value (bytes.Compare), so every member decides alike.
	MergeLatest = op.MergeLatest
)

// merge applies OpMerge.
func (s *state) merge(now int64, req *op.Request) *op.Response {
	if req.Num != MergePutIfAbsent && req.Num != MergePassThrough && req.Num != MergeLatest {
		return fail(op.CodeBadRequest, "map: unknown merge policy %d", req.Num)
	}
	from := newState(s.partition)
	if err := decodeSnapshot(req.Value, now, from); err != nil {
		return fail(op.CodeBadRequest, "map: merge: %v", err)
	}
	src := from.maps[req.Name]
	if src == nil {
		return &op.Response{}
	}
	var es []kv
	stored := 0
	for _, x := range from.sorted(now, src, es) {
		ts := src.entries[x.key].ts()
		switch req.Num {
		case MergePutIfAbsent:
			if _, _, _, ok := s.lookup(now, req.Name, x.key); ok {
				continue
			}
		case MergeLatest:
			if _, b, _, ok := s.lookup(now, req.Name, x.key); ok {
				if here := b.ts(); here > ts || (here == ts && bytes.Compare(b.value(len(x.key)), x.value) >= 0) {
					continue
				}
			}
		}
		var at int64
		if ex := src.exps[x.key]; ex != nil {
			at = ex.at
		}
		if len(s.rules) != 0 && s.evicts(req.Name) {
			s.refuseNew(now, req.Name, x.key) // a full map evicts to take it
		}
		// The entry keeps its write timestamp, so a later merge (or
		// split) still compares the original write times.
		had := s.put(now, req.Name, x.key, x.value, at, ts)
		if s.listen != nil {
			s.changed(req.Name, changeKind(had), x.key, x.value)
		}
		stored++
	}
	return &op.Response{Num: int64(stored)}
}

// MergeOp returns OpMerge (op.Merger).
func (Service) MergeOp() uint8 { return OpMerge }

// MergeNames is SnapshotMaps (op.Merger).
func (Service) MergeNames(snapshot []byte, now time.Time) (map[string]int, error) {
	return SnapshotMaps(snapshot, now)
}

// SnapshotMaps returns the maps in a partition snapshot (State.Snapshot)
// with their live entry counts at now: what OpMerge can merge.
func SnapshotMaps(snapshot []byte, now time.Time) (map[string]int, error) {
	from := newState(0)
	t := now.UnixNano()
	if err := decodeSnapshot(snapshot, t, from); err != nil {
		return nil, fmt.Errorf("maps: snapshot: %w", err)
	}
	out := make(map[string]int, len(from.maps))
	for name, tab := range from.maps {
		out[name] = from.live(t, tab)
	}
	return out, nil
}
