// Package varbin reads and writes the small binary codecs of the structure
// packages: uvarints, varints, single bytes and uvarint-length-prefixed
// byte strings. Their bytes come from peers and from snapshots, so the
// Reader never trusts a length: a string or a count is checked against the
// bytes actually left before anything is allocated, and nothing recurses.
// Written once here, instead of once per package, so the checks cannot
// drift apart.
package varbin

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrTruncated is wrapped by the errors of input that ends before what it
// declares (a varint, a byte, a length-prefixed string), so callers can tell
// short input from malformed input.
var ErrTruncated = errors.New("truncated input")

// AppendBytes appends p with its uvarint length, the form Reader.Bytes
// reads.
func AppendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// AppendString appends s with its uvarint length, the form Reader.String
// and Reader.Bytes read.
func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// AppendBool appends v as one byte, 1 or 0, the only two Reader.Bool
// accepts.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// Reader decodes a byte slice from its start. The first error sticks:
// after it every read returns a zero value and changes nothing, so a
// decoder reads all its fields and checks Err (or Done) once at the end.
// Its errors carry no package prefix: callers wrap them with what they
// were decoding.
type Reader struct {
	b   []byte
	err error
}

// NewReader returns a Reader of b. Bytes results alias b.
func NewReader(b []byte) Reader { return Reader{b: b} }

// Err returns the first error, or nil.
func (r *Reader) Err() error { return r.err }

// Fail records err as the first error, unless there is one already, so
// that codec-level checks (a bad version, a duplicate key) stop the reads
// that follow just like a malformed varint does.
func (r *Reader) Fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// Len returns the number of bytes left (0 after an error).
func (r *Reader) Len() int {
	if r.err != nil {
		return 0
	}
	return len(r.b)
}

// Done fails when bytes are left over, then returns the first error: a
// message with trailing bytes is not one the encoder wrote.
func (r *Reader) Done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return r.err
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = ErrTruncated
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// Bool reads a byte that must be 0 or 1, so that a boolean has one
// encoding and a decoded value re-encodes to the same bytes.
func (r *Reader) Bool() bool {
	switch c := r.Byte(); c {
	case 0:
		return false
	case 1:
		return true
	default:
		r.Fail(fmt.Errorf("bad boolean %d", c))
		return false
	}
}

// Uvarint reads an unsigned varint (binary.AppendUvarint).
func (r *Reader) Uvarint() uint64 { return varint(r, binary.Uvarint) }

// Varint reads a signed varint (binary.AppendVarint).
func (r *Reader) Varint() int64 { return varint(r, binary.Varint) }

// The two ways a varint fails, told apart so that short input still
// matches ErrTruncated. Values, not fmt calls: hostile input fails often.
var (
	errVarintShort    = fmt.Errorf("%w: varint", ErrTruncated)
	errVarintOverflow = errors.New("bad varint: overflows 64 bits")
)

// varint reads one varint with decode (binary.Uvarint or binary.Varint),
// which returns n == 0 when the input ends inside the varint and n < 0 when
// it overflows 64 bits.
func varint[T uint64 | int64](r *Reader, decode func([]byte) (T, int)) T {
	if r.err != nil {
		return 0
	}
	v, n := decode(r.b)
	switch {
	case n == 0:
		r.err = errVarintShort
		return 0
	case n < 0:
		r.err = errVarintOverflow
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Count reads the length of a collection whose elements each take at least
// minSize bytes (at least 1), and fails when that many elements cannot fit
// in the bytes left: the caller may then allocate the count without a
// forged one making it allocate more than the input holds.
func (r *Reader) Count(minSize int) int {
	n := r.Uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)/max(minSize, 1)) {
		r.err = fmt.Errorf("count %d exceeds the %d bytes left", n, len(r.b))
		return 0
	}
	return int(n)
}

// Bytes reads a uvarint length and that many bytes. The result aliases the
// input (with its capacity cut to its length, so appending to it cannot
// overwrite what follows): callers that keep it past the input's life copy
// it.
func (r *Reader) Bytes() []byte {
	n := r.Uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: length %d, %d bytes left", ErrTruncated, n, len(r.b))
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

// String reads a uvarint length and that many bytes as a string of at most
// limit bytes: the limit is the codec's own bound (a name, an owner id),
// checked after the length is known to fit in the input.
func (r *Reader) String(limit int) string {
	p := r.Bytes()
	if r.err == nil && len(p) > limit {
		r.err = fmt.Errorf("length %d exceeds the limit of %d", len(p), limit)
		return ""
	}
	return string(p)
}

// Next reads the next n bytes (a fixed-size field), aliasing the input.
func (r *Reader) Next(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("%w: %d bytes wanted, %d left", ErrTruncated, n, len(r.b))
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}
