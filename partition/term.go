package partition

import "fmt"

// A table version carries the coordinator term that published it in its
// high 32 bits and the table's number within that term in the low 32
// bits. A coordinator publishes only in a term a majority granted it, and
// a member grants each term once, so two different tables never share a
// version; ordering versions as integers orders them by (term, number),
// which every comparison of versions (members, clients, fencing of
// requests) gets for free.
const termShift = 32

// TermOf returns the coordinator term of table version v.
func TermOf(v uint64) uint64 { return v >> termShift }

// SeqOf returns the number of table version v within its term.
func SeqOf(v uint64) uint64 { return v & (1<<termShift - 1) }

// VersionOf returns the version of the seq-th table of term term. seq must
// be below 2^32.
func VersionOf(term, seq uint64) uint64 { return term<<termShift | seq }

// MaxSeq is the largest table number within one term: the coordinator
// wins a new term before it runs out.
const MaxSeq = 1<<termShift - 1

// Term returns the coordinator term that published t.
func (t *Table) Term() uint64 { return TermOf(t.Version) }

// VersionString formats a table version as "term.seq" for logs and
// displays, e.g. "3.17".
func VersionString(v uint64) string { return fmt.Sprintf("%d.%d", TermOf(v), SeqOf(v)) }
