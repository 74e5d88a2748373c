package backup

import (
	"bytes"
	"encoding/binary"
	"time"
)

// A snapshot travels from owner to backup in chunks, each a request value
// (so no larger than the value limit), the last one marked with the
// replication position the snapshot was taken at; a probe carries the
// owner's term the same way.

// Mark is the mark of a snapshot's last chunk: the sequence and term it
// was taken at (16 bytes).
func Mark(seq, term uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), seq), term)
}

// ParseMark reads a Mark; ok is false when b is too short.
func ParseMark(b []byte) (seq, term uint64, ok bool) {
	if len(b) < 16 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), true
}

// ParseTerm reads the term a probe or an older owner's record carries in
// its first 8 bytes; ok is false when b is too short.
func ParseTerm(b []byte) (term uint64, ok bool) {
	if len(b) < 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// Assembly gathers the chunks of one incoming snapshot, in order.
type Assembly struct {
	// Started is when the first chunk arrived (an assembly whose sender
	// died mid-copy never completes: the receiver drops old ones).
	Started time.Time
	buf     bytes.Buffer
}

// NewAssembly starts the assembly of a snapshot whose first chunk arrived
// at now.
func NewAssembly(now time.Time) *Assembly { return &Assembly{Started: now} }

// Add appends the chunk that starts at offset off; it reports false, and
// keeps nothing, when the chunk is not the next one.
func (a *Assembly) Add(off int64, chunk []byte) bool {
	if int64(a.buf.Len()) != off {
		return false
	}
	a.buf.Write(chunk)
	return true
}

// Bytes is the snapshot gathered so far.
func (a *Assembly) Bytes() []byte { return a.buf.Bytes() }
