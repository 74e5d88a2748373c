// Package partition maps keys to partitions and partitions to members.
//
// Every key hashes to one of a fixed number of partitions (see ID), so data
// moves between members a partition at a time rather than key by key. A Table
// records, for each partition, the ordered replica list: the owner first, then
// its backups.
//
// Tables are immutable and versioned. The cluster agrees on a table by having
// one coordinator publish successive versions (that protocol lives in package
// grid, not here). Assign is a pure function of the member set and settings,
// so any member can compute the same target table and check or take over the
// coordinator's work without extra coordination.
//
// The package does no IO, starts no goroutines and holds no mutable
// package-level state.
package partition

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
)

// DefaultCount is the default number of partitions. It is prime so that
// modulo hashing spreads keys evenly, and matches Hazelcast's default.
const DefaultCount = 271

// ID returns the partition of key: xxhash.Sum64String(key) % count.
// count must be > 0 (and fit in an int32); ID panics otherwise because a
// non-positive count is a programming error, not a runtime condition.
func ID(key string, count int) int32 {
	if count <= 0 || count > math.MaxInt32 {
		panic(fmt.Sprintf("partition: invalid partition count %d", count))
	}
	return int32(xxhash.Sum64String(key) % uint64(count))
}

// Member is one cluster member as the table knows it. The table carries the
// address so a client can route a request from the table alone.
type Member struct {
	Name string `msgpack:"n"`           // unique member name
	Addr string `msgpack:"a"`           // data (client/member TCP) address host:port
	Zone string `msgpack:"z,omitempty"` // failure zone label, for ZoneAware placement
	Host string `msgpack:"h,omitempty"` // physical host label, for HostAware placement
}

// Table is an immutable, versioned partition table: for every partition, the
// ordered replica list (index 0 = owner, 1.. = backups) as indexes into
// Members. Indexes keep the encoded form compact and make member identity
// unambiguous. Never modify a Table after it is shared; derive a new one.
//
// The msgpack tags name the wire keys; the encoding itself is done by
// EncodeMsgpack and DecodeMsgpack so that hostile input cannot force huge
// allocations.
type Table struct {
	Version uint64 `msgpack:"v"`
	Count   int    `msgpack:"c"` // partition count
	// Epoch identifies the cluster incarnation: the coordinator picks it
	// at random for the first table and carries it forward, so a client
	// can tell a restarted cluster (versions start again) from a member
	// with a stale table.
	Epoch uint64 `msgpack:"e"`
	// Lost lists partitions whose every replica was lost before this
	// version: they start again empty, and members report them once.
	Lost     []int32   `msgpack:"l,omitempty"`
	Members  []Member  `msgpack:"m"` // sorted by Name, unique names
	Replicas [][]int32 `msgpack:"r"` // len == Count; Replicas[p][0] is the owner
	// Voters names the members the cluster's expected size counts: every
	// member a table included, until it leaves gracefully (a crashed or
	// unreachable member stays: see package quorum). Sorted.
	Voters []string `msgpack:"q,omitempty"`
}

// replica returns the member at replica index i of partition p. It checks
// every bound so that lookups on an unvalidated table cannot panic.
func (t *Table) replica(p int32, i int) (Member, bool) {
	if t == nil || p < 0 || int(p) >= len(t.Replicas) {
		return Member{}, false
	}
	rs := t.Replicas[p]
	if i < 0 || i >= len(rs) {
		return Member{}, false
	}
	m := rs[i]
	if m < 0 || int(m) >= len(t.Members) {
		return Member{}, false
	}
	return t.Members[m], true
}

// Owner returns the owner of partition p; false if p is out of range or has
// no replica.
func (t *Table) Owner(p int32) (Member, bool) { return t.replica(p, 0) }

// Replica returns the i-th replica of partition p (0 = owner, 1.. = backups);
// false if there is no such replica.
func (t *Table) Replica(p int32, i int) (Member, bool) { return t.replica(p, i) }

// ReplicaCount returns how many replicas (owner included) partition p has; 0
// if p is out of range.
func (t *Table) ReplicaCount(p int32) int {
	if t == nil || p < 0 || int(p) >= len(t.Replicas) {
		return 0
	}
	return len(t.Replicas[p])
}

// memberIndex returns the index of name in Members, relying on Members being
// sorted by name; -1 if absent.
func (t *Table) memberIndex(name string) int32 {
	if t == nil {
		return -1
	}
	i, ok := slices.BinarySearchFunc(t.Members, name, func(m Member, n string) int {
		return strings.Compare(m.Name, n)
	})
	if !ok {
		return -1
	}
	return int32(i)
}

// Member returns the member called name, so callers can resolve a name to an
// address.
func (t *Table) Member(name string) (Member, bool) {
	i := t.memberIndex(name)
	if i < 0 {
		return Member{}, false
	}
	return t.Members[i], true
}

// IsOwner reports whether the member called name owns partition p.
func (t *Table) IsOwner(p int32, name string) bool {
	m, ok := t.Owner(p)
	return ok && m.Name == name
}

// Owned returns, ascending, the partitions whose owner is name.
func (t *Table) Owned(name string) []int32 {
	idx := t.memberIndex(name)
	if idx < 0 {
		return nil
	}
	var out []int32
	for p, rs := range t.Replicas {
		if len(rs) > 0 && rs[0] == idx {
			out = append(out, int32(p))
		}
	}
	return out
}

// BackedUp returns, ascending, the partitions where name holds a backup
// (replica index >= 1).
func (t *Table) BackedUp(name string) []int32 {
	idx := t.memberIndex(name)
	if idx < 0 {
		return nil
	}
	var out []int32
	for p, rs := range t.Replicas {
		if len(rs) > 1 && slices.Contains(rs[1:], idx) {
			out = append(out, int32(p))
		}
	}
	return out
}

// Validate checks the table's invariants and returns a descriptive error for
// the first violation. Tables received from the network must pass it before
// use; it never panics, whatever the table holds.
func (t *Table) Validate() error {
	if t == nil {
		return errors.New("partition: nil table")
	}
	if t.Count <= 0 || t.Count > math.MaxInt32 {
		return fmt.Errorf("partition: invalid partition count %d", t.Count)
	}
	if len(t.Replicas) != t.Count {
		return fmt.Errorf("partition: %d replica lists for %d partitions", len(t.Replicas), t.Count)
	}
	if len(t.Members) == 0 {
		return errors.New("partition: table has no members")
	}
	for i, m := range t.Members {
		if m.Name == "" {
			return fmt.Errorf("partition: member %d has an empty name", i)
		}
		if i > 0 && t.Members[i-1].Name >= m.Name {
			return fmt.Errorf("partition: members not sorted/unique at %d (%q after %q)", i, m.Name, t.Members[i-1].Name)
		}
	}
	// seen[m] == p+1 marks member m as used in partition p, so one scratch
	// slice serves every partition without clearing.
	seen := make([]int, len(t.Members))
	for p, rs := range t.Replicas {
		if len(rs) == 0 {
			return fmt.Errorf("partition: partition %d has no replica", p)
		}
		for i, m := range rs {
			if m < 0 || int(m) >= len(t.Members) {
				return fmt.Errorf("partition: partition %d replica %d: member index %d out of range [0,%d)", p, i, m, len(t.Members))
			}
			if seen[m] == p+1 {
				return fmt.Errorf("partition: partition %d lists member %q twice", p, t.Members[m].Name)
			}
			seen[m] = p + 1
		}
	}
	for _, p := range t.Lost {
		if p < 0 || int(p) >= t.Count {
			return fmt.Errorf("partition: lost partition %d out of range", p)
		}
	}
	return nil
}

// WithVersion returns a shallow copy of t carrying version v. Sharing the
// slices is safe because tables are never modified.
func (t *Table) WithVersion(v uint64) *Table {
	if t == nil {
		return nil
	}
	c := *t
	c.Version = v
	return &c
}

// New builds a validated table from replica lists given by member name
// (replicas[p][0] is the owner). members may come in any order; they are
// sorted by name.
func New(version uint64, count int, members []Member, replicas [][]string) (*Table, error) {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	idx := make(map[string]int32, len(ms))
	for i, m := range ms {
		idx[m.Name] = int32(i)
	}
	if len(replicas) != count {
		return nil, fmt.Errorf("partition: %d replica lists for %d partitions", len(replicas), count)
	}
	flat := make([]int32, 0, count*2)
	rs := make([][]int32, count)
	for p, names := range replicas {
		start := len(flat)
		for _, n := range names {
			i, ok := idx[n]
			if !ok {
				return nil, fmt.Errorf("partition: replica %q of partition %d is not a member", n, p)
			}
			flat = append(flat, i)
		}
		rs[p] = flat[start:len(flat):len(flat)]
	}
	t := &Table{Version: version, Count: count, Members: ms, Replicas: rs}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// ReplicaNames returns the names of partition p's replicas, owner first.
func (t *Table) ReplicaNames(p int32) []string {
	n := t.ReplicaCount(p)
	out := make([]string, 0, n)
	for i := range n {
		if m, ok := t.Replica(p, i); ok {
			out = append(out, m.Name)
		}
	}
	return out
}

// Equal reports whether t and o have the same count, members and replicas,
// ignoring Version, so a coordinator can tell whether a new target differs
// from the published table.
func (t *Table) Equal(o *Table) bool {
	if t == nil || o == nil {
		return t == o
	}
	return t.Count == o.Count &&
		slices.Equal(t.Members, o.Members) &&
		slices.EqualFunc(t.Replicas, o.Replicas, slices.Equal[[]int32])
}

// Marshal encodes the table with msgpack for publishing to members and
// clients.
func (t *Table) Marshal() ([]byte, error) {
	return msgpack.Marshal(t)
}

// Unmarshal decodes a msgpack table and validates it, so callers only ever
// see well-formed tables. Garbage input returns an error, never panics, and
// costs work and memory proportional to its size.
func Unmarshal(b []byte) (*Table, error) {
	var t Table
	if err := mpsafe.Check(b, mpsafe.MaxDepth); err != nil {
		return nil, fmt.Errorf("partition: decode table: %w", err)
	}
	if err := msgpack.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("partition: decode table: %w", err)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// Move is one ownership change between two tables.
type Move struct {
	Partition int32
	From      string // "" if the old table had no owner or the old owner is not in the new member set
	To        string
}

// OwnerMoves lists, ascending by partition, the partitions whose owner
// differs between from and to, so the caller knows which partitions to
// migrate and from where. from may be nil (then every From is "").
func OwnerMoves(from, to *Table) []Move {
	if to == nil {
		return nil
	}
	var out []Move
	for p := range to.Replicas {
		pid := int32(p)
		var newName, oldName string
		if m, ok := to.Owner(pid); ok {
			newName = m.Name
		}
		if m, ok := from.Owner(pid); ok {
			oldName = m.Name
		}
		if oldName == newName {
			continue
		}
		if _, ok := to.Member(oldName); !ok {
			oldName = ""
		}
		out = append(out, Move{Partition: pid, From: oldName, To: newName})
	}
	return out
}
