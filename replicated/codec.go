package replicated

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/shoalgrid/shoal/internal/varbin"
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

func appendVersion(b []byte, v Version) []byte {
	b = binary.AppendUvarint(b, uint64(v.Time))
	return varbin.AppendString(b, v.Origin)
}

// reader decodes one message over varbin.Reader; the first error sticks.
// It wraps ErrCorrupt and names the field that failed, so a refused peer
// message says where it went wrong.
type reader struct {
	in  varbin.Reader
	err error // nil exactly when in.Err() is
}

func newReader(b []byte) reader { return reader{in: varbin.NewReader(b)} }

// fail records a fault the codec itself found, such as an unknown tag; the
// reads that follow stop.
func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCorrupt, what)
		r.in.Fail(r.err)
	}
}

// at names the field what in the error of the read just made, if it
// failed.
func (r *reader) at(what string) {
	if r.err == nil && r.in.Err() != nil {
		r.err = fmt.Errorf("%w: %s: %w", ErrCorrupt, what, r.in.Err())
	}
}

// more reports whether another record follows (false after an error).
func (r *reader) more() bool { return r.in.Len() > 0 }

// end fails on bytes after the last field of message what and returns the
// first error.
func (r *reader) end(what string) error {
	r.in.Done()
	r.at(what)
	return r.err
}

func (r *reader) byte1(what string) byte     { c := r.in.Byte(); r.at(what); return c }
func (r *reader) uvarint(what string) uint64 { v := r.in.Uvarint(); r.at(what); return v }

// bytes returns the next length-prefixed slice, aliasing the input.
func (r *reader) bytes(what string) []byte { p := r.in.Bytes(); r.at(what); return p }

func (r *reader) str(what string) string { return string(r.bytes(what)) }

func (r *reader) version() Version {
	t := r.uvarint("version time")
	if t > math.MaxInt64 {
		r.fail("version: time out of range")
	}
	return Version{Time: int64(t), Origin: r.str("version origin")}
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
	b = varbin.AppendString(b, c.name)
	b = varbin.AppendString(b, c.key)
	b = appendVersion(b, c.ver)
	var flags byte
	if c.deleted {
		flags = 1
	}
	b = append(b, flags)
	return varbin.AppendBytes(b, c.value)
}

// decodeChanges calls fn for each record of a change message; values alias
// msg. It checks the whole message before calling fn, so a corrupt message
// changes nothing.
func decodeChanges(msg []byte, fn func(*change)) error {
	for pass := 0; pass < 2; pass++ {
		r := newReader(msg)
		r.tag(tagChanges)
		for r.more() {
			var c change
			c.name = r.str("name")
			c.key = r.str("key")
			c.ver = r.version()
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
	r := newReader(b)
	r.tag(tagDigest)
	out := map[string]mapDigest{}
	for r.more() {
		name := r.str("name")
		live := r.uvarint("count")
		var h uint64
		if p := r.in.Next(8); p != nil {
			h = binary.BigEndian.Uint64(p)
		}
		r.at("hash")
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
	return varbin.AppendBytes(b, value)
}

func decodeEntry(b []byte) (Version, []byte, error) {
	r := newReader(b)
	r.tag(tagEntry)
	v := r.version()
	val := r.bytes("value")
	return v, val, r.end("entry")
}

func decodeEntries(b []byte) ([]Entry, error) {
	r := newReader(b)
	r.tag(tagEntries)
	var out []Entry
	for r.more() {
		var e Entry
		e.Key = r.str("key")
		e.Version = r.version()
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
	b = varbin.AppendString(b, ev.Key)
	b = appendVersion(b, ev.Version)
	return varbin.AppendBytes(b, ev.Value)
}

// DecodeEvent decodes an event payload (as delivered by an
// op.EventSource subscription to the replicated map service).
func DecodeEvent(b []byte) (Event, error) {
	r := newReader(b)
	r.tag(tagEvent)
	var ev Event
	ev.Type = EventType(r.byte1("type"))
	if r.err == nil && (ev.Type < Added || ev.Type > Removed) {
		r.fail(fmt.Sprintf("unknown event type %d", ev.Type))
	}
	ev.Key = r.str("key")
	ev.Version = r.version()
	ev.Value = r.bytes("value")
	return ev, r.end("event")
}
