package wire

import (
	"github.com/shoalgrid/shoal/op"
)

// Limits bound what one peer may send another. Both sides enforce them: the
// sender fails fast with op.ErrTooLarge before anything is written, and the
// receiver refuses oversized input, so a buggy or hostile peer cannot make a
// member allocate without bound.
type Limits struct {
	// MaxKeySize is the largest key in bytes.
	MaxKeySize int
	// MaxValueSize is the largest value (and Aux operand) in bytes.
	MaxValueSize int
	// MaxFrameSize is the largest frame in bytes, header included.
	MaxFrameSize int
	// MaxNameSize is the longest structure name (and service name) in
	// bytes. Names are copied into every request and every state; a 30 MiB
	// name used to be accepted.
	MaxNameSize int
}

// Default limits.
const (
	DefaultMaxKeySize   = 32 << 10
	DefaultMaxValueSize = 16 << 20
	DefaultMaxFrameSize = 40 << 20
	DefaultMaxNameSize  = 256
)

// DefaultLimits returns the default limits: 32 KiB keys, 16 MiB values,
// 40 MiB frames (room for a value and an Aux operand of full size), 256-byte
// names.
func DefaultLimits() Limits {
	return Limits{MaxKeySize: DefaultMaxKeySize, MaxValueSize: DefaultMaxValueSize, MaxFrameSize: DefaultMaxFrameSize, MaxNameSize: DefaultMaxNameSize}
}

// withDefaults fills zero fields with the defaults.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxKeySize <= 0 {
		l.MaxKeySize = d.MaxKeySize
	}
	if l.MaxValueSize <= 0 {
		l.MaxValueSize = d.MaxValueSize
	}
	if l.MaxFrameSize <= 0 {
		l.MaxFrameSize = d.MaxFrameSize
	}
	if l.MaxNameSize <= 0 {
		l.MaxNameSize = d.MaxNameSize
	}
	return l
}

// recordSlack is what a record frame holds besides its request's names,
// key and values: the frame header, the record's position fields and the
// request's fixed fields (about 150 bytes), with room to spare.
const recordSlack = 4 << 10

// MaxRecordFrame is the largest KindRecord frame, header included: room for
// a request with a key, a value and an Aux operand at their limits, and
// names at theirs. It does not depend on MaxFrameSize, so a mutation a
// member accepted from a client can always be shipped to its backups as a
// record (not only as a full copy of the partition).
func (l Limits) MaxRecordFrame() int {
	l = l.withDefaults()
	return recordSlack + l.MaxKeySize + 2*l.MaxValueSize + 2*l.MaxNameSize
}

// WithDefaults returns l with zero fields set to the defaults.
func (l Limits) WithDefaults() Limits { return l.withDefaults() }

// Check returns an error wrapping op.ErrTooLarge when req's names, key or
// values exceed the limits. The message gives sizes, never the oversized
// input itself.
func (l Limits) Check(req *op.Request) error {
	l = l.withDefaults()
	if n := len(req.Name); n > l.MaxNameSize {
		return op.Errorf(op.CodeTooLarge, "structure name is %d bytes, limit is %d", n, l.MaxNameSize)
	}
	if n := len(req.Service); n > l.MaxNameSize {
		return op.Errorf(op.CodeTooLarge, "service name is %d bytes, limit is %d", n, l.MaxNameSize)
	}
	if n := len(req.Key); n > l.MaxKeySize {
		return op.Errorf(op.CodeTooLarge, "key is %d bytes, limit is %d", n, l.MaxKeySize)
	}
	if n := len(req.Value); n > l.MaxValueSize {
		return op.Errorf(op.CodeTooLarge, "value is %d bytes, limit is %d", n, l.MaxValueSize)
	}
	if n := len(req.Aux); n > l.MaxValueSize {
		return op.Errorf(op.CodeTooLarge, "aux value is %d bytes, limit is %d", n, l.MaxValueSize)
	}
	return nil
}
