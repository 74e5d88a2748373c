package replicated

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/shoalgrid/shoal/internal/varbin"
	"github.com/shoalgrid/shoal/op"
)

// Name is the service name of replicated maps (op.Request.Service).
const Name = "rmap"

// Operations of the replicated map service. Key routes the request to a
// member (any member answers from its own copy); Name is the map.
const (
	// OpGet reads Key: Found, and Value = an encoded entry (version and
	// value).
	OpGet uint8 = iota + 1
	// OpPut writes Value under Key: Found reports whether a live entry was
	// replaced; Num is the write's version time.
	OpPut
	// OpDelete deletes Key (a deletion marker, even if the key is absent
	// here, so it also wins over older writes not yet received): Found
	// reports whether a live entry was removed; Num is the version time.
	OpDelete
	// OpEntries lists the live entries of the map in key order: Value
	// holds them encoded; Num counts them.
	OpEntries
	// OpLen counts the live entries of the map (Num).
	OpLen
)

// Defaults of Service.
const (
	// DefaultTombstoneTTL is how long a deletion marker is kept.
	DefaultTombstoneTTL = time.Hour
	// DefaultMaxMapBytes bounds what one member accepts into one map.
	DefaultMaxMapBytes = 8 << 20
	// DefaultMaxValueBytes bounds one value.
	DefaultMaxValueBytes = 1 << 20
)

// entryOverhead is what an entry costs besides its key, value and origin,
// roughly, for the byte bound.
const entryOverhead = 64

// Service is the replicated map service: register it in the member's
// services (grid.Config.Services). Every member of a cluster should use
// the same settings.
type Service struct {
	// TombstoneTTL is how long a deletion marker is kept after the delete
	// (by the delete's hybrid time); default DefaultTombstoneTTL. A member
	// cut off from the others for longer than this may bring a deleted key
	// back when the partition heals (see the package documentation).
	TombstoneTTL time.Duration
	// MaxMapBytes bounds the bytes (keys, values, markers, overhead) a
	// member accepts into one map from local writes; a write beyond it
	// fails with op.ErrMapFull. Default DefaultMaxMapBytes.
	MaxMapBytes int
	// MaxValueBytes bounds one value (op.ErrTooLarge beyond it); default
	// DefaultMaxValueBytes.
	MaxValueBytes int
}

var _ op.ReplicatedService = Service{}

// Name returns "rmap".
func (Service) Name() string { return Name }

// NewState is never called: the member core runs replicated services
// through NewReplica. It returns nil.
func (Service) NewState(int32) op.State { return nil }

// Mutates reports whether o writes (for access roles).
func (Service) Mutates(o uint8) bool { return o == OpPut || o == OpDelete }

// Grows reports whether o may grow the map (the member's memory guard
// refuses those while the member is full).
func (Service) Grows(o uint8) bool { return o == OpPut }

// OpName names the operations, for metrics.
func (Service) OpName(o uint8) string {
	switch o {
	case OpGet:
		return "get"
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpEntries:
		return "entries"
	case OpLen:
		return "len"
	}
	return ""
}

func (s Service) withDefaults() Service {
	if s.TombstoneTTL <= 0 {
		s.TombstoneTTL = DefaultTombstoneTTL
	}
	if s.MaxMapBytes <= 0 {
		s.MaxMapBytes = DefaultMaxMapBytes
	}
	if s.MaxValueBytes <= 0 {
		s.MaxValueBytes = DefaultMaxValueBytes
	}
	return s
}

// NewReplica returns member's empty copy.
func (s Service) NewReplica(member string) op.Replica {
	return &Replica{rules: s.withDefaults(), member: member, maps: map[string]*rmap{}}
}

// Version orders the writes of one key: the hybrid logical time of the
// write (Unix nanoseconds, never behind any time the accepting member has
// seen), then the name of the member that accepted it.
type Version struct {
	Time   int64
	Origin string
}

// Compare returns -1, 0 or +1 as v is older than, the same as or newer
// than w.
func (v Version) Compare(w Version) int {
	return cmp.Or(cmp.Compare(v.Time, w.Time), cmp.Compare(v.Origin, w.Origin))
}

// IsZero reports whether v is the zero version (no write).
func (v Version) IsZero() bool { return v.Time == 0 && v.Origin == "" }

type entry struct {
	ver     Version
	deleted bool
	value   []byte
}

func (e *entry) cost(key string) int {
	return len(key) + len(e.value) + len(e.ver.Origin) + entryOverhead
}

// wins reports whether a replaces b under the conflict rule: the newer
// version; for equal versions (only possible when a member restarted with
// a clock behind its earlier writes) a deletion, then the greater value,
// so that every member picks the same one.
func wins(a, b *entry) bool {
	if c := a.ver.Compare(b.ver); c != 0 {
		return c > 0
	}
	if a.deleted != b.deleted {
		return a.deleted
	}
	return bytes.Compare(a.value, b.value) > 0
}

// rmap is one map's copy.
type rmap struct {
	entries    map[string]*entry
	live       int
	tombstones int
	bytes      int
	// hash is the XOR of entryHash over the live entries: equal maps
	// have equal (live, hash), whatever order they were built in.
	hash uint64
}

// entryHash mixes a live entry's identity (map, key, version) into 64 bits
// (FNV-1a, then a finaliser so XORs of many hashes stay well spread).
func entryHash(name, key string, v Version) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	mix := func(s string) {
		for i := 0; i < len(s); i++ {
			h = (h ^ uint64(s[i])) * prime
		}
		h = (h ^ 0xff) * prime
	}
	mix(name)
	mix(key)
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(v.Time))
	mix(string(t[:]))
	mix(v.Origin)
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// Replica is one member's copy of every replicated map (op.Replica). It is
// not safe for concurrent use.
type Replica struct {
	rules  Service
	member string
	// hlc is the hybrid logical clock: the greatest version time this
	// replica issued or saw.
	hlc  int64
	maps map[string]*rmap
}

// tick returns the time of a new local write: the wall clock, or one past
// the greatest time seen when that is ahead (a clock behind the others'
// or stepped back never makes a new write lose to an older one).
func (r *Replica) tick(now time.Time) int64 {
	r.hlc = max(now.UnixNano(), r.hlc+1)
	return r.hlc
}

func (r *Replica) get(name string, create bool) *rmap {
	m := r.maps[name]
	if m == nil && create {
		m = &rmap{entries: map[string]*entry{}}
		r.maps[name] = m
	}
	return m
}

// set makes e the entry of key in map name if it wins over the current
// one; it reports the event to emit (Type 0: none) and whether e was
// stored.
func (r *Replica) set(name, key string, e *entry, horizon int64) (Event, bool) {
	r.hlc = max(r.hlc, e.ver.Time)
	m := r.get(name, false)
	var cur *entry
	if m != nil {
		cur = m.entries[key]
	}
	if cur != nil && !wins(e, cur) {
		return Event{}, false
	}
	if cur == nil && e.deleted && e.ver.Time < horizon {
		// A marker already past its TTL deletes nothing here: do not
		// bring it back after this member forgot it.
		return Event{}, false
	}
	if m == nil {
		m = r.get(name, true)
	}
	var ev Event
	if cur != nil {
		m.bytes -= cur.cost(key)
		if cur.deleted {
			m.tombstones--
		} else {
			m.live--
			m.hash ^= entryHash(name, key, cur.ver)
		}
	}
	switch {
	case e.deleted && cur != nil && !cur.deleted:
		ev = Event{Type: Removed, Key: key, Version: e.ver, Value: cur.value}
	case !e.deleted && (cur == nil || cur.deleted):
		ev = Event{Type: Added, Key: key, Version: e.ver, Value: e.value}
	case !e.deleted:
		ev = Event{Type: Updated, Key: key, Version: e.ver, Value: e.value}
	}
	m.entries[key] = e
	m.bytes += e.cost(key)
	if e.deleted {
		m.tombstones++
	} else {
		m.live++
		m.hash ^= entryHash(name, key, e.ver)
	}
	if len(m.entries) == 0 {
		delete(r.maps, name)
	}
	return ev, true
}

func (r *Replica) horizon(now time.Time) int64 {
	return now.Add(-r.rules.TombstoneTTL).UnixNano()
}

func emit(x *op.Exec, name string, ev Event) {
	if ev.Type != 0 {
		x.Emit(name, encodeEvent(&ev))
	}
}

// Apply runs a proxy's request on this copy (op.Replica).
func (r *Replica) Apply(x *op.Exec, req *op.Request) (*op.Response, []byte) {
	switch req.Op {
	case OpGet:
		m := r.get(req.Name, false)
		if m == nil {
			return &op.Response{}, nil
		}
		e := m.entries[req.Key]
		if e == nil || e.deleted {
			return &op.Response{}, nil
		}
		return &op.Response{Found: true, Value: encodeEntry(e.ver, e.value), Num: e.ver.Time}, nil
	case OpPut, OpDelete:
		del := req.Op == OpDelete
		value := req.Value
		if del {
			value = nil
		} else if len(value) > r.rules.MaxValueBytes {
			return &op.Response{Code: op.CodeTooLarge, Msg: fmt.Sprintf("replicated map value of %d bytes, limit %d", len(value), r.rules.MaxValueBytes)}, nil
		}
		m := r.get(req.Name, false)
		var cur *entry
		if m != nil {
			cur = m.entries[req.Key]
		}
		if !del {
			used := 0
			if m != nil {
				used = m.bytes
				if cur != nil {
					used -= cur.cost(req.Key)
				}
			}
			e := entry{value: value, ver: Version{Origin: r.member}}
			if used+e.cost(req.Key) > r.rules.MaxMapBytes {
				return &op.Response{Code: op.CodeMapFull, Msg: fmt.Sprintf("replicated map %s would hold %d bytes, limit %d", op.Quote(req.Name), used+e.cost(req.Key), r.rules.MaxMapBytes)}, nil
			}
		}
		e := &entry{ver: Version{Time: r.tick(x.Now), Origin: r.member}, deleted: del, value: value}
		found := cur != nil && !cur.deleted
		ev, _ := r.set(req.Name, req.Key, e, r.horizon(x.Now))
		emit(x, req.Name, ev)
		delta := appendChange([]byte{tagChanges}, &change{name: req.Name, key: req.Key, ver: e.ver, deleted: del, value: value})
		return &op.Response{Found: found, Num: e.ver.Time}, delta
	case OpEntries:
		m := r.get(req.Name, false)
		b := []byte{tagEntries}
		if m == nil {
			return &op.Response{Value: b}, nil
		}
		keys := make([]string, 0, m.live)
		for k, e := range m.entries {
			if !e.deleted {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			e := m.entries[k]
			b = varbin.AppendString(b, k)
			b = appendVersion(b, e.ver)
			b = varbin.AppendBytes(b, e.value)
		}
		return &op.Response{Found: len(keys) > 0, Value: b, Num: int64(len(keys))}, nil
	case OpLen:
		n := 0
		if m := r.get(req.Name, false); m != nil {
			n = m.live
		}
		return &op.Response{Num: int64(n)}, nil
	}
	return &op.Response{Code: op.CodeUnknownOp, Msg: fmt.Sprintf("replicated map operation %d", req.Op)}, nil
}

// Merge applies a change message from a peer (a delta or a Diff). Values
// are copied: msg is not kept.
func (r *Replica) Merge(x *op.Exec, msg []byte) error {
	horizon := r.horizon(x.Now)
	return decodeChanges(msg, func(c *change) {
		var v []byte
		if !c.deleted {
			v = bytes.Clone(c.value)
			if v == nil {
				v = []byte{}
			}
		}
		ev, _ := r.set(c.name, c.key, &entry{ver: c.ver, deleted: c.deleted, value: v}, horizon)
		emit(x, c.name, ev)
	})
}

// Digest lists every map's live count and hash, in name order.
func (r *Replica) Digest(time.Time) []byte {
	names := make([]string, 0, len(r.maps))
	for n := range r.maps {
		names = append(names, n)
	}
	slices.Sort(names)
	b := []byte{tagDigest}
	for _, n := range names {
		m := r.maps[n]
		b = varbin.AppendString(b, n)
		b = binary.AppendUvarint(b, uint64(m.live))
		b = binary.BigEndian.AppendUint64(b, m.hash)
	}
	return b
}

// Diff returns every entry (deletion markers included) of the maps whose
// live entries differ from the peer's digest, whole maps in name order,
// until limit bytes are passed.
func (r *Replica) Diff(now time.Time, peer []byte, limit int) ([]byte, bool, error) {
	theirs, err := decodeDigest(peer)
	if err != nil {
		return nil, false, err
	}
	names := make([]string, 0, len(r.maps))
	for n, m := range r.maps {
		if d, ok := theirs[n]; !ok || d.live != m.live || d.hash != m.hash {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, false, nil
	}
	slices.Sort(names)
	b := []byte{tagChanges}
	for i, n := range names {
		if i > 0 && len(b) >= limit {
			return b, true, nil
		}
		for k, e := range r.maps[n].entries {
			b = appendChange(b, &change{name: n, key: k, ver: e.ver, deleted: e.deleted, value: e.value})
		}
	}
	return b, false, nil
}

// Sweep removes the deletion markers older than the tombstone TTL.
func (r *Replica) Sweep(now time.Time) int {
	horizon := r.horizon(now)
	n := 0
	for name, m := range r.maps {
		if m.tombstones == 0 {
			continue
		}
		for k, e := range m.entries {
			if e.deleted && e.ver.Time < horizon {
				delete(m.entries, k)
				m.tombstones--
				m.bytes -= e.cost(k)
				n++
			}
		}
		if len(m.entries) == 0 {
			delete(r.maps, name)
		}
	}
	return n
}

// Len counts the live entries of every map.
func (r *Replica) Len() int {
	n := 0
	for _, m := range r.maps {
		n += m.live
	}
	return n
}

// Structures lists the maps and their live entries (for status pages).
func (r *Replica) Structures() map[string]int {
	out := make(map[string]int, len(r.maps))
	for n, m := range r.maps {
		out[n] = m.live
	}
	return out
}
