package partition

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Placement picks how replicas of a partition are spread over failure
// groups, so that losing one host or zone does not lose every copy.
type Placement uint8

const (
	// PerMember only requires replicas to be on distinct members.
	PerMember Placement = iota
	// HostAware puts replicas on distinct Host labels when enough distinct
	// hosts exist.
	HostAware
	// ZoneAware puts replicas on distinct Zone labels when enough distinct
	// zones exist.
	ZoneAware
)

// String names the placement for logs and errors.
func (p Placement) String() string {
	switch p {
	case PerMember:
		return "per-member"
	case HostAware:
		return "host-aware"
	case ZoneAware:
		return "zone-aware"
	}
	return fmt.Sprintf("Placement(%d)", uint8(p))
}

// Ring settings for owner placement. They are part of the placement
// function: changing them changes every member's target table, so all
// members must agree on them.
const (
	ringReplicationFactor = 100
	ringLoad              = 1.05
)

// ringMember adapts a member name to consistent.Member.
type ringMember string

func (m ringMember) String() string { return string(m) }

// xxHasher adapts xxhash to consistent.Hasher.
type xxHasher struct{}

func (xxHasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// Assign computes the target table (Version 0) for a member set. It is a
// pure function of (the set of members, count, backups, placement): input
// order does not matter, so every member computes the same table.
//
// Owners come from consistent hashing with bounded loads
// (buraksezer/consistent, 20 virtual nodes per member, load factor 1.25), so
// a join or leave moves about 1/N of the owners and no member owns more
// than ceil(1.25*count/N) partitions.
//
// Backups are ranked per partition by rendezvous (highest-random-weight)
// hashing over the non-owner members, so one owner's partitions spread their
// backups over all other members instead of all landing on one neighbour.
// Placement groups (Host or Zone labels; an empty label is its own group)
// are preferred distinct; when groups run out any remaining member is used.
// With fewer than backups+1 members each partition gets one replica per
// member.
func Assign(members []Member, count, backups int, placement Placement) (*Table, error) {
	switch {
	case len(members) == 0:
		return nil, errors.New("partition: assign: no members")
	case count <= 0 || count > math.MaxInt32:
		return nil, fmt.Errorf("partition: assign: invalid partition count %d", count)
	case backups < 0:
		return nil, fmt.Errorf("partition: assign: negative backup count %d", backups)
	case placement > ZoneAware:
		return nil, fmt.Errorf("partition: assign: unknown placement %v", placement)
	}

	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	for i, m := range ms {
		if m.Name == "" {
			return nil, errors.New("partition: assign: member with empty name")
		}
		if i > 0 && ms[i-1].Name == m.Name {
			return nil, fmt.Errorf("partition: assign: duplicate member name %q", m.Name)
		}
	}
	n := len(ms)

	// Owners. Members are added in name order so that ring hash collisions
	// resolve the same way everywhere.
	ring := make([]consistent.Member, n)
	index := make(map[string]int32, n)
	for i, m := range ms {
		ring[i] = ringMember(m.Name)
		index[m.Name] = int32(i)
	}
	c := consistent.New(ring, consistent.Config{
		PartitionCount:    count,
		ReplicationFactor: ringReplicationFactor,
		Load:              ringLoad,
		Hasher:            xxHasher{},
	})

	groups := groupIDs(ms, placement)
	nrep := min(backups+1, n)
	// One backing array for all replica lists; the full slice expression
	// caps each list so an append by a caller cannot clobber its neighbour.
	backing := make([]int32, count*nrep)
	replicas := make([][]int32, count)

	type cand struct {
		idx   int32
		score uint64
	}
	cands := make([]cand, 0, n)
	usedGroup := make([]bool, n) // group ids are < n
	var key []byte

	for p := range count {
		owner, ok := index[c.GetPartitionOwner(p).String()]
		if !ok {
			return nil, fmt.Errorf("partition: assign: ring returned unknown owner for partition %d", p)
		}
		rs := backing[p*nrep : p*nrep : (p+1)*nrep]
		rs = append(rs, owner)
		if nrep > 1 {
			clear(usedGroup)
			usedGroup[groups[owner]] = true
			cands = cands[:0]
			for i := range ms {
				if int32(i) == owner {
					continue
				}
				key = binary.LittleEndian.AppendUint32(key[:0], uint32(p))
				key = append(key, ms[i].Name...)
				cands = append(cands, cand{int32(i), xxhash.Sum64(key)})
			}
			slices.SortFunc(cands, func(a, b cand) int {
				if d := cmp.Compare(b.score, a.score); d != 0 {
					return d
				}
				return cmp.Compare(a.idx, b.idx)
			})
			for len(rs) < nrep {
				// Highest-ranked candidate in an unused group, else the
				// highest-ranked candidate left.
				pick := 0
				for j, cd := range cands {
					if !usedGroup[groups[cd.idx]] {
						pick = j
						break
					}
				}
				cd := cands[pick]
				rs = append(rs, cd.idx)
				usedGroup[groups[cd.idx]] = true
				cands = slices.Delete(cands, pick, pick+1)
			}
		}
		replicas[p] = rs
	}
	return &Table{Count: count, Members: ms, Replicas: replicas}, nil
}

// groupIDs numbers the failure group of each (name-sorted) member, densely
// from 0. Members with an empty label form a group of their own.
func groupIDs(ms []Member, placement Placement) []int {
	ids := make([]int, len(ms))
	byLabel := make(map[string]int, len(ms))
	next := 0
	for i, m := range ms {
		var label string
		switch placement {
		case HostAware:
			label = m.Host
		case ZoneAware:
			label = m.Zone
		}
		if label == "" {
			ids[i] = next
			next++
			continue
		}
		id, ok := byLabel[label]
		if !ok {
			id = next
			next++
			byLabel[label] = id
		}
		ids[i] = id
	}
	return ids
}
