package grid

import (
	"context"
	"fmt"
	"path"
	"sort"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/quorum"
)

// MergePolicy says what a heal does with the entries of a structure that a
// member owned on the losing side of a network split (the side whose table
// lost): see docs/quorum.md.
type MergePolicy string

// Merge policies.
const (
	// MergeDiscard keeps the winning side's values: the losing side's
	// entries are discarded (and counted).
	MergeDiscard MergePolicy = "discard"
	// MergePutIfAbsent adds the losing side's entries whose key is absent
	// on the winning side; the winning side's values are kept.
	MergePutIfAbsent MergePolicy = "put-if-absent"
	// MergePassThrough writes every entry of the losing side over the
	// winning side's values.
	MergePassThrough MergePolicy = "pass-through"
	// MergeLatest keeps, per key, the entry written last (the higher
	// hybrid-logical-clock write timestamp; ties go to the larger value),
	// whichever side wrote it.
	MergeLatest MergePolicy = "latest"
)

// ParseMergePolicy checks a policy name ("" is MergeDiscard).
func ParseMergePolicy(s string) (MergePolicy, error) {
	switch p := MergePolicy(s); p {
	case "":
		return MergeDiscard, nil
	case MergeDiscard, MergePutIfAbsent, MergePassThrough, MergeLatest:
		return p, nil
	}
	return "", fmt.Errorf("%w: unknown merge policy %q (discard, put-if-absent, pass-through or latest)", ErrConfig, s)
}

// StructureMerge sets the merge policy of the structures whose name
// matches Pattern (path.Match syntax).
type StructureMerge struct {
	Pattern string
	Policy  MergePolicy
}

// mergePolicy returns the policy of structure name: discard unless a
// pattern says otherwise and the structure's quorum rule is off.
func (m *Member) mergePolicy(name string) MergePolicy {
	if m.quorum.rules.For(name).Mode != quorum.Off {
		return MergeDiscard
	}
	for _, s := range m.cfg.StructureMerge {
		if ok, _ := path.Match(s.Pattern, name); ok {
			p, _ := ParseMergePolicy(string(s.Policy))
			return p
		}
	}
	return MergeDiscard
}

// wantsMerge reports whether any structure may be merged rather than
// discarded (then orphaned partitions are snapshotted before they are
// dropped).
func (m *Member) wantsMerge() bool {
	for _, s := range m.cfg.StructureMerge {
		if p, _ := ParseMergePolicy(string(s.Policy)); p != MergeDiscard {
			return true
		}
	}
	return false
}

// mergerIndex is the index of the service whose structures merge after a
// split (the first implementing op.Merger: the maps), or -1.
func (m *Member) mergerIndex() int {
	for i, svc := range m.services {
		if _, ok := svc.(op.Merger); ok {
			return i
		}
	}
	return -1
}

// orphan is the map state of a partition this member owned on the losing
// side, kept for merging into the winning side's owner.
type orphan struct {
	p    int32
	snap []byte
}

// mergeOrphans merges the maps of orphaned partitions into their owners on
// the winning side by each map's policy, and logs what it did per map.
func (m *Member) mergeOrphans(version uint64, orphans []orphan) {
	type tally struct {
		policy                    MergePolicy
		entries, stored, failures int
	}
	by := map[string]*tally{}
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
	defer cancel()
	mi := m.mergerIndex()
	if mi < 0 {
		return
	}
	svc := m.services[mi]
	merger := svc.(op.Merger)
	for _, o := range orphans {
		names, err := merger.MergeNames(o.snap, time.Now())
		if err != nil {
			m.log.Error("merge after a split: unreadable partition snapshot", "partition", o.p, "err", err)
			continue
		}
		for name, n := range names {
			tl := by[name]
			if tl == nil {
				tl = &tally{policy: m.mergePolicy(name)}
				by[name] = tl
			}
			tl.entries += n
			num := int64(op.MergePutIfAbsent)
			switch tl.policy {
			case MergeDiscard:
				continue
			case MergePassThrough:
				num = op.MergePassThrough
			case MergeLatest:
				num = op.MergeLatest
			}
			resp, err := m.Invoke(ctx, &op.Request{Service: svc.Name(), Op: merger.MergeOp(), Name: name, Partition: o.p, Value: o.snap, Num: num})
			if err != nil {
				tl.failures++
				m.log.Error("merge after a split: merge into the owner failed; those entries are discarded", "structure", name, "partition", o.p, "err", err)
				continue
			}
			tl.stored += int(resp.Num)
		}
	}
	names := make([]string, 0, len(by))
	for n := range by {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		tl := by[n]
		m.counters.mergeStored.Add(uint64(tl.stored))
		m.log.Warn("merge after a split", "structure", n, "policy", string(tl.policy), "entries", tl.entries,
			"stored", tl.stored, "discarded", tl.entries-tl.stored, "failed_partitions", tl.failures, "version", version)
	}
}
