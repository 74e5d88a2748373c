package maps

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
)

// Payload codecs of the map service. They are written by hand over the
// msgpack encoder and decoder primitives rather than with msgpack.Marshal
// so that they never reflect, and so that a decoder checks every declared
// length against the bytes actually left: a forged length in a hostile or
// corrupt payload must fail, not allocate gigabytes.

// kv is one entry of an OpEntries payload.
type kv struct {
	key   string
	value []byte
}

// snapshotVersion tags the snapshot layout so a future layout can be told
// apart during a rolling upgrade. Version 1 had no write timestamps and no
// access bookkeeping; decodeSnapshot still reads it.
const (
	snapshotVersion   = 2
	snapshotVersionV1 = 1
)

// encode runs fn over a pooled encoder writing into a buffer of capacity
// size. Writes to a bytes.Buffer cannot fail, so neither can encode.
func encode(size int, fn func(e *msgpack.Encoder)) []byte {
	buf := bytes.NewBuffer(make([]byte, 0, size))
	e := msgpack.GetEncoder()
	e.Reset(buf)
	fn(e)
	msgpack.PutEncoder(e)
	return buf.Bytes()
}

// encodeKeys encodes a key list as a msgpack array of str: the OpKeys
// payload, identical to msgpack.Marshal of a []string.
func encodeKeys(keys []string) []byte {
	size := 5
	for _, k := range keys {
		size += 5 + len(k)
	}
	return encode(size, func(e *msgpack.Encoder) {
		_ = e.EncodeArrayLen(len(keys))
		for _, k := range keys {
			_ = e.EncodeString(k)
		}
	})
}

// decodeKeys decodes an OpKeys payload.
func decodeKeys(b []byte) ([]string, error) {
	var keys []string
	err := decodeAll(b, func(d *decoder) error {
		n, err := d.length(d.DecodeArrayLen())
		if err != nil || n < 0 {
			return err
		}
		keys = make([]string, 0, n)
		for range n {
			k, err := d.string()
			if err != nil {
				return err
			}
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode key list: %w", err)
	}
	return keys, nil
}

// encodeEntries encodes entries as a msgpack map of str to bin: the
// OpEntries payload. The order of es is kept.
func encodeEntries(es []kv) []byte {
	size := 5
	for _, e := range es {
		size += 10 + len(e.key) + len(e.value)
	}
	return encode(size, func(e *msgpack.Encoder) {
		_ = e.EncodeMapLen(len(es))
		for _, x := range es {
			_ = e.EncodeString(x.key)
			_ = e.EncodeBytes(x.value)
		}
	})
}

// decodeEntries decodes an OpEntries payload, keeping its order. Values are
// fresh copies, so retaining one does not pin the whole payload.
func decodeEntries(b []byte) ([]kv, error) {
	return decodeEntriesAs(b, (*decoder).bytes)
}

// decodeEntriesRaw is decodeEntries with values aliasing b (nil stays nil),
// for a caller that copies them before b is reused (the state's store
// does).
func decodeEntriesRaw(b []byte) ([]kv, error) {
	return decodeEntriesAs(b, (*decoder).raw)
}

func decodeEntriesAs(b []byte, value func(*decoder) ([]byte, error)) ([]kv, error) {
	var es []kv
	err := decodeAll(b, func(d *decoder) error {
		n, err := d.length(d.DecodeMapLen())
		if err != nil || n < 0 {
			return err
		}
		es = make([]kv, 0, n)
		for range n {
			k, err := d.string()
			if err != nil {
				return err
			}
			v, err := value(d)
			if err != nil {
				return err
			}
			es = append(es, kv{key: k, value: v})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode entries: %w", err)
	}
	return es, nil
}

// encodeSnapshot writes the live entries of s at time now as
//
//	[2, hlc, {map name: [entry, ...], ...}, {map name: lfu age, ...}]
//
// where an entry is [key, value, expireAt, writeTS], followed by access,
// freq and prio for maps with max-idle or an eviction policy (evict.go);
// expireAt is in absolute unix nanos (0 = never), maps and keys sorted.
// Absolute times survive the trip to another member unchanged; the clocks of
// members are assumed to agree far better than TTL granularity. A listened
// map's expired entries that the owner's expiry record has not removed yet
// travel too (expiry.go: their events are still due).
func encodeSnapshot(s *state, now int64) ([]byte, error) {
	names := make([]string, 0, len(s.maps))
	size := 24
	for name, tab := range s.maps {
		if s.live(now, tab) > 0 || s.listened(name) && tab.exps != nil {
			names = append(names, name)
			size += 10 + len(name) + 32*len(tab.entries)
		}
	}
	slices.Sort(names)
	ages := make([]string, 0, len(s.ages))
	for name := range s.ages {
		ages = append(ages, name)
	}
	slices.Sort(ages)
	var es []kv
	return encode(size, func(e *msgpack.Encoder) {
		if s.listen != nil {
			// Listen records (events.go) ride as a fifth element, only
			// when there are any.
			_ = e.EncodeArrayLen(5)
		} else {
			_ = e.EncodeArrayLen(4)
		}
		_ = e.EncodeUint(snapshotVersion)
		_ = e.EncodeInt(s.hlc)
		_ = e.EncodeMapLen(len(names))
		for _, name := range names {
			tab := s.maps[name]
			if s.listened(name) {
				es = s.sorted(math.MinInt64, tab, es[:0]) // expired ones too
			} else {
				es = s.sorted(now, tab, es[:0])
			}
			_ = e.EncodeString(name)
			_ = e.EncodeArrayLen(len(es))
			for _, x := range es {
				var at int64
				if ex := tab.exps[x.key]; ex != nil {
					at = ex.at
				}
				var m *meta
				if tab.pol != nil {
					m = tab.pol.metas[x.key]
				}
				if m != nil {
					_ = e.EncodeArrayLen(7)
				} else {
					_ = e.EncodeArrayLen(4)
				}
				_ = e.EncodeString(x.key)
				_ = e.EncodeBytes(x.value)
				_ = e.EncodeInt(at)
				_ = e.EncodeInt(tab.entries[x.key].ts())
				if m != nil {
					_ = e.EncodeInt(m.access)
					_ = e.EncodeInt(m.freq)
					_ = e.EncodeInt(m.prio)
				}
			}
		}
		_ = e.EncodeMapLen(len(ages))
		for _, name := range ages {
			_ = e.EncodeString(name)
			_ = e.EncodeInt(s.ages[name])
		}
		if s.listen != nil {
			encodeListen(e, s)
		}
	}), nil
}

// decodeSnapshot loads a snapshot (version 1 or 2) into the empty state
// into, skipping entries that expired by now. Duplicate keys keep the last
// value.
func decodeSnapshot(b []byte, now int64, into *state) error {
	return decodeAll(b, func(d *decoder) error {
		n, err := d.DecodeArrayLen()
		if err != nil {
			return err
		}
		if n < 2 || n > 5 {
			return errors.New("not a map snapshot")
		}
		v, err := d.DecodeInt64()
		if err != nil {
			return err
		}
		// Version 1 has 2 elements, version 2 has 4; either may carry the
		// listen records (events.go) as one more.
		if (v != snapshotVersionV1 || (n != 2 && n != 3)) && (v != snapshotVersion || (n != 4 && n != 5)) {
			return fmt.Errorf("unsupported snapshot version %d", v)
		}
		var hlc int64
		if v == snapshotVersion {
			if hlc, err = d.DecodeInt64(); err != nil {
				return err
			}
		}
		maps, err := d.length(d.DecodeMapLen())
		if err != nil {
			return err
		}
		var late []lateEntry
		for range maps {
			name, err := d.string()
			if err != nil {
				return err
			}
			if name == "" {
				return errors.New("empty map name")
			}
			n, err := d.length(d.DecodeArrayLen())
			if err != nil {
				return err
			}
			for range n {
				if err := decodeSnapshotEntry(d, now, name, into, &late); err != nil {
					return err
				}
			}
		}
		if v == snapshotVersion {
			ages, err := d.length(d.DecodeMapLen())
			if err != nil {
				return err
			}
			for range ages {
				name, err := d.string()
				if err != nil {
					return err
				}
				age, err := d.DecodeInt64()
				if err != nil {
					return err
				}
				if into.ages == nil {
					into.ages = make(map[string]int64)
				}
				into.ages[name] = age
			}
		}
		into.hlc = max(into.hlc, hlc)
		if n == 3 || n == 5 {
			if err := decodeListen(d, into); err != nil {
				return err
			}
		}
		// Expired entries stay only in listened maps, for the owner's
		// expiry record (expiry.go).
		for _, e := range late {
			if into.listened(e.name) {
				into.restoreEntry(now, e.name, e.key, e.value, e.n, e.f)
			}
		}
		return nil
	})
}

// lateEntry is a snapshot entry that expired by the time of decoding, kept
// until the listen records tell whether its map needs it.
type lateEntry struct {
	name, key string
	value     []byte
	n         int
	f         [5]int64
}

func decodeSnapshotEntry(d *decoder, now int64, name string, into *state, late *[]lateEntry) error {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n != 3 && n != 4 && n != 7 {
		return fmt.Errorf("snapshot entry has %d fields, want 3, 4 or 7", n)
	}
	// Key and value alias the payload: store copies both into the entry's
	// blob, so nothing here outlives the call.
	k, err := d.raw()
	if err != nil {
		return err
	}
	key := unsafe.String(unsafe.SliceData(k), len(k))
	value, err := d.raw()
	if err != nil {
		return err
	}
	var f [5]int64 // expireAt, ts, access, freq, prio
	for i := range n - 2 {
		if f[i], err = d.DecodeInt64(); err != nil {
			return err
		}
	}
	at, ts := f[0], f[1]
	if ts < 0 {
		return errors.New("negative write timestamp")
	}
	if at != 0 && at <= now {
		// Expired (in transit, or a listened map's entry waiting for the
		// owner's expiry record): decodeSnapshot decides.
		*late = append(*late, lateEntry{name: name, key: string(key), value: bytes.Clone(value), n: n, f: f})
		return nil
	}
	into.restoreEntry(now, name, key, value, n, f)
	return nil
}

// restoreEntry stores a decoded snapshot entry: n fields f (expireAt, ts,
// then access, freq, prio when n is 7).
func (into *state) restoreEntry(now int64, name, key string, value []byte, n int, f [5]int64) {
	at, ts := f[0], f[1]
	// ts 0 (a version 1 entry) stamps the entry now.
	into.put(now, name, key, value, at, ts)
	if n == 7 {
		if tab := into.maps[name]; tab != nil && tab.pol != nil {
			if m := tab.pol.metas[key]; m != nil {
				m.access, m.freq, m.prio = f[2], max(f[3], 0), f[4]
				tab.pol.fix(m)
			}
		}
	}
}

// decoder reads msgpack from an in-memory payload. The msgpack decoder reads
// straight from r (a bytes.Reader needs no buffering), so data[len(data) -
// r.Len():] is always the unread rest.
type decoder struct {
	*msgpack.Decoder
	data []byte
	r    bytes.Reader
}

var errShort = errors.New("declared length exceeds payload")

// decodeAll runs fn over b and fails if fn leaves bytes unread: a payload is
// one value, and trailing garbage means corruption.
func decodeAll(b []byte, fn func(d *decoder) error) error {
	d := &decoder{data: b, Decoder: msgpack.GetDecoder()}
	d.r.Reset(b)
	d.Reset(&d.r)
	err := fn(d)
	msgpack.PutDecoder(d.Decoder)
	if err == nil && d.r.Len() != 0 {
		err = fmt.Errorf("%d trailing bytes", d.r.Len())
	}
	return err
}

// length checks a collection length (-1 for nil) against the bytes left: every
// element takes at least one byte, so a larger count is a lie.
func (d *decoder) length(n int, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	if n > d.r.Len() {
		return 0, errShort
	}
	return n, nil
}

// raw reads a str or bin header and returns its body in place (nil for a
// msgpack nil).
func (d *decoder) raw() ([]byte, error) {
	n, err := d.DecodeBytesLen()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, nil
	}
	if n > d.r.Len() {
		return nil, errShort
	}
	pos := len(d.data) - d.r.Len()
	if _, err := d.r.Seek(int64(n), io.SeekCurrent); err != nil {
		return nil, err
	}
	return d.data[pos : pos+n : pos+n], nil
}

func (d *decoder) string() (string, error) {
	b, err := d.raw()
	return string(b), err
}

// bytes returns a copy, keeping nil and empty apart.
func (d *decoder) bytes() ([]byte, error) {
	b, err := d.raw()
	if b == nil || err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

// maxValueDepth bounds the nesting of arrays and maps in a typed value.
// msgpack decodes nested values recursively: a stored value nested millions
// of levels deep (a few MB) would overflow the stack of every client that
// reads it. No sensible type nests this deep.
const maxValueDepth = 1000

// wellFormed checks that b is exactly one msgpack value whose declared
// lengths and counts all fit in b, nested at most maxValueDepth levels. It
// is iterative (no recursion depth to exhaust) and runs before handing
// untrusted bytes to the reflective msgpack decoder, which would allocate a
// declared bin length before reading it.
func wellFormed(b []byte) error {
	i, err := mpsafe.ValueEnd(b, maxValueDepth)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: %w", errShort, err)
		}
		return err
	}
	if i != len(b) {
		return fmt.Errorf("%d trailing bytes", len(b)-i)
	}
	return nil
}
