package grid

import (
	"context"
	"fmt"
	"path"
	"sort"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/quorum"
	"github.com/shoalgrid/shoal/sysop"
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
	// MergeAppend (queues, their default) appends the losing side's items
	// after the winning side's.
	MergeAppend MergePolicy = "append"
	// MergeRevoke (locks, always) revokes the grants made on the losing
	// side and raises the winning side's fencing token counter above
	// every token issued there.
	MergeRevoke MergePolicy = "revoke"
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
	if p := m.configuredMerge(name); p != "" {
		return p
	}
	return MergeDiscard
}

// mergePolicyOf returns the policy of structure name of service svc and
// the policy number its MergeOp takes (0 for discard). Services with a
// policy of their own (op.MergeDefaulter: queues append, locks revoke) use
// it unless the structure's policy is "discard"; revoke always runs (it
// carries fencing token counters). A structure whose quorum rule is on
// always discards.
func (m *Member) mergePolicyOf(svc op.Service, name string) (MergePolicy, int64) {
	if m.quorum.rules.For(name).Mode != quorum.Off {
		return MergeDiscard, 0
	}
	if d, ok := svc.(op.MergeDefaulter); ok {
		switch def := d.DefaultMerge(); {
		case def == op.MergeRevoke:
			return MergeRevoke, def
		case m.configuredMerge(name) == MergeDiscard:
			return MergeDiscard, 0
		case def == op.MergeAppend:
			return MergeAppend, def
		}
		return MergeDiscard, 0
	}
	switch p := m.mergePolicy(name); p {
	case MergePutIfAbsent:
		return p, op.MergePutIfAbsent
	case MergePassThrough:
		return p, op.MergePassThrough
	case MergeLatest:
		return p, op.MergeLatest
	}
	return MergeDiscard, 0
}

// configuredMerge returns the policy a pattern gives structure name, or ""
// when none matches.
func (m *Member) configuredMerge(name string) MergePolicy {
	for _, s := range m.cfg.StructureMerge {
		if ok, _ := path.Match(s.Pattern, name); ok {
			p, _ := ParseMergePolicy(string(s.Policy))
			return p
		}
	}
	return ""
}

// orphanSnapshots snapshots the states of slot s (which this member owned
// on the losing side) whose service can merge, by service index. Called
// under s.mu.
func (m *Member) orphanSnapshots(s *slot) map[int][]byte {
	var out map[int][]byte
	for i, svc := range m.services {
		if _, ok := svc.(op.Merger); !ok || s.states[i] == nil {
			continue
		}
		b, err := s.states[i].Snapshot(time.Now())
		if err != nil {
			m.log.Error("merge after a split: snapshot failed; entries discarded", "partition", s.id, "service", svc.Name(), "err", err)
			continue
		}
		if out == nil {
			out = map[int][]byte{}
		}
		out[i] = b
	}
	return out
}

// orphan is the state of a partition this member owned on the losing
// side, kept for merging into the winning side's owner: a snapshot per
// service index.
type orphan struct {
	p     int32
	snaps map[int][]byte
}

// mergeOrphans merges the structures of orphaned partitions into their
// owners on the winning side by each structure's policy, then logs one
// line per structure and emits the merge report (sysop.MergeStream). parts
// and entries are the orphaned partitions and their entries.
func (m *Member) mergeOrphans(version uint64, parts, entries int, orphans []orphan) {
	type key struct{ service, name string }
	by := map[key]*sysop.MergeCount{}
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
	defer cancel()
	for _, o := range orphans {
		idx := make([]int, 0, len(o.snaps))
		for i := range o.snaps {
			idx = append(idx, i)
		}
		sort.Ints(idx)
		for _, i := range idx {
			svc := m.services[i]
			merger := svc.(op.Merger)
			snap := o.snaps[i]
			names, err := merger.MergeNames(snap, time.Now())
			if err != nil {
				m.log.Error("merge after a split: unreadable partition snapshot", "partition", o.p, "service", svc.Name(), "err", err)
				continue
			}
			for name, n := range names {
				k := key{svc.Name(), name}
				policy, num := m.mergePolicyOf(svc, name)
				mc := by[k]
				if mc == nil {
					mc = &sysop.MergeCount{Service: svc.Name(), Structure: name, Policy: string(policy)}
					by[k] = mc
				}
				mc.Entries += n
				if num == 0 {
					continue
				}
				resp, err := m.Invoke(ctx, &op.Request{Service: svc.Name(), Op: merger.MergeOp(), Name: name, Key: name, Partition: o.p, Value: snap, Num: num})
				if err != nil {
					mc.FailedPartitions++
					m.log.Error("merge after a split: merge into the owner failed; those entries are discarded", "service", svc.Name(), "structure", name, "partition", o.p, "err", err)
					continue
				}
				if policy != MergeRevoke {
					mc.Stored += int(resp.Num)
				}
			}
		}
	}
	rep := &sysop.MergeReport{Member: m.cfg.Name, TableVersion: version, Partitions: parts, Entries: entries}
	for _, mc := range by {
		if mc.Structure == "" && mc.Entries == 0 {
			continue // a lock partition's counter alone
		}
		mc.Discarded = mc.Entries - mc.Stored
		rep.Structures = append(rep.Structures, *mc)
	}
	sort.Slice(rep.Structures, func(i, j int) bool {
		a, b := rep.Structures[i], rep.Structures[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		return a.Structure < b.Structure
	})
	for _, mc := range rep.Structures {
		m.counters.mergeStored.Add(uint64(mc.Stored))
		m.log.Warn("merge after a split", "service", mc.Service, "structure", mc.Structure, "policy", mc.Policy, "entries", mc.Entries,
			"stored", mc.Stored, "discarded", mc.Discarded, "failed_partitions", mc.FailedPartitions, "version", partition.VersionString(version))
	}
	if entries > 0 || len(rep.Structures) > 0 {
		m.emitMergeReport(rep)
	}
}

// emitMergeReport counts the report and sends it to the subscribers of the
// system stream sysop.MergeStream and, as a MergeReported event, to the
// member's membership subscribers.
func (m *Member) emitMergeReport(rep *sysop.MergeReport) {
	m.counters.mergeReports.Add(1)
	if b, err := rep.Encode(); err != nil {
		m.log.Error("encode merge report", "err", err)
	} else {
		m.events.publish(sysService, sysop.MergeStream, b)
	}
	m.emitEvent(Event{Type: MergeReported, Merge: rep, Time: time.Now()})
}
