package replicated

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The replicated map's messages are a small hand-written binary format:
// every length is a uvarint checked against the bytes that follow it, so
// no input from a peer can make a decoder allocate more than the message
// holds, and nothing recurses.
//
//	change message: 0x01, then records: name, key, time (uvarint of the
//	                int64 bit pattern), origin, flags (bit 0: deleted), value
//	digest:         0x02, then per map: name, live count, xor hash (8 bytes)
//	entry (a Get):  0x03, time, origin, value
//	entries (list): 0x04, then per entry: key, time, origin, value
//	event:          0x05, type, key, time, origin, value
//
// Strings and byte slices are a uvarint length and the bytes.

const (
	tagChanges byte = 1
	tagDigest  byte = 2
	tagEntry   byte = 3
	tagEntries byte = 4
	tagEvent   byte = 5
)

// ErrCorrupt is wrapped by the errors of messages that do not decode.
var ErrCorrupt = errors.New("replicated: corrupt message")

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendVersion(b []byte, v Version) []byte {
	b = binary.AppendUvarint(b, uint64(v.Time))
	return appendString(b, v.Origin)
}

// reader decodes one message; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCorrupt, what)
	}
}

func (r *reader) done() bool { return r.err != nil || len(r.b) == 0 }

func (r *reader) byte1(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail(what + ": truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what + ": bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns the next length-prefixed slice, aliasing the input.
func (r *reader) bytes(what string) []byte {
	n := r.uvarint(what)
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(fmt.Sprintf("%s: length %d, %d bytes left", what, n, len(r.b)))
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

func (r *reader) str(what string) string { return string(r.bytes(what)) }

func (r *reader) version(what string) Version {
	t := r.uvarint(what + " time")
	if t > math.MaxInt64 {
		r.fail(what + ": time out of range")
	}
	return Version{Time: int64(t), Origin: r.str(what + " origin")}
}

func (r *reader) tag(want byte) {
	if c := r.byte1("tag"); r.err == nil && c != want {
		r.fail(fmt.Sprintf("tag %d, want %d", c, want))
	}
}

// change is one record of a change message: a write or a deletion.
type change struct {
	name, key string
	ver       Version
	deleted   bool
	value     []byte
}

func appendChange(b []byte, c *change) []byte {
	b = appendString(b, c.name)
	b = appendString(b, c.key)
	b = appendVersion(b, c.ver)
	var flags byte
	if c.deleted {
		flags = 1
	}
	b = append(b, flags)
	return appendBytes(b, c.value)
}

// decodeChanges calls fn for each record of a change message; values alias
// msg. It checks the whole message before calling fn, so a corrupt message
// changes nothing.
func decodeChanges(msg []byte, fn func(*change)) error {
	for pass := 0; pass < 2; pass++ {
		r := reader{b: msg}
		r.tag(tagChanges)
		for !r.done() {
			var c change
			c.name = r.str("name")
			c.key = r.str("key")
			c.ver = r.version("version")
			flags := r.byte1("flags")
			if flags > 1 {
				r.fail("unknown flags")
			}
			c.deleted = flags == 1
			c.value = r.bytes("value")
			if r.err == nil && pass == 1 {
				fn(&c)
			}
		}
		if r.err != nil {
			return r.err
		}
	}
	return nil
}

// mapDigest is one map's line of a digest.
type mapDigest struct {
	live int
	hash uint64
}

func decodeDigest(b []byte) (map[string]mapDigest, error) {
	r := reader{b: b}
	r.tag(tagDigest)
	out := map[string]mapDigest{}
	for !r.done() {
		name := r.str("name")
		live := r.uvarint("count")
		var h uint64
		if len(r.b) < 8 {
			r.fail("hash: truncated")
		} else if r.err == nil {
			h = binary.BigEndian.Uint64(r.b)
			r.b = r.b[8:]
		}
		if live > math.MaxInt32 {
			r.fail("count out of range")
		}
		if r.err == nil {
			out[name] = mapDigest{live: int(live), hash: h}
		}
	}
	return out, r.err
}

func encodeEntry(v Version, value []byte) []byte {
	b := make([]byte, 0, 16+len(v.Origin)+len(value))
	b = append(b, tagEntry)
	b = appendVersion(b, v)
	return appendBytes(b, value)
}

func decodeEntry(b []byte) (Version, []byte, error) {
	r := reader{b: b}
	r.tag(tagEntry)
	v := r.version("version")
	val := r.bytes("value")
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	return v, val, r.err
}

func decodeEntries(b []byte) ([]Entry, error) {
	r := reader{b: b}
	r.tag(tagEntries)
	var out []Entry
	for !r.done() {
		var e Entry
		e.Key = r.str("key")
		e.Version = r.version("version")
		e.Value = r.bytes("value")
		if r.err == nil {
			out = append(out, e)
		}
	}
	return out, r.err
}

func encodeEvent(ev *Event) []byte {
	b := make([]byte, 0, 24+len(ev.Key)+len(ev.Version.Origin)+len(ev.Value))
	b = append(b, tagEvent, byte(ev.Type))
	b = appendString(b, ev.Key)
	b = appendVersion(b, ev.Version)
	return appendBytes(b, ev.Value)
}

// DecodeEvent decodes an event payload (as delivered by an
// op.EventSource subscription to the replicated map service).
func DecodeEvent(b []byte) (Event, error) {
	r := reader{b: b}
	r.tag(tagEvent)
	var ev Event
	ev.Type = EventType(r.byte1("type"))
	if r.err == nil && (ev.Type < Added || ev.Type > Removed) {
		r.fail(fmt.Sprintf("unknown event type %d", ev.Type))
	}
	ev.Key = r.str("key")
	ev.Version = r.version("version")
	ev.Value = r.bytes("value")
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	return ev, r.err
}
