package grid

import (
	"cmp"
	"slices"
)

// StructureLister is implemented by partition states that can name the
// structures they hold (a map state: its maps), for status pages.
type StructureLister interface {
	// Structures returns each structure's name and entry count in this
	// partition.
	Structures() map[string]int
}

// StructureInfo is one structure as seen in the partitions a member owns.
type StructureInfo struct {
	// Service is the structure kind ("map").
	Service string `json:"service"`
	// Name is the structure's name.
	Name string `json:"name"`
	// Entries counts its entries in this member's owned partitions.
	Entries int `json:"entries"`
	// Partitions counts the owned partitions that hold some of it.
	Partitions int `json:"partitions"`
}

// Structures lists the structures held in the partitions this member owns,
// by service then name, for states that implement StructureLister, and
// those of its replicated services' copies (Partitions 0). It
// takes each partition's lock in turn: meant for status pages, not for hot
// paths.
func (m *Member) Structures() []StructureInfo {
	t := m.Table()
	if t == nil {
		return nil
	}
	type key struct{ svc, name string }
	acc := map[key]*StructureInfo{}
	for _, p := range t.Owned(m.cfg.Name) {
		sl := m.slots[p]
		sl.mu.Lock()
		for i, st := range sl.states {
			l, ok := st.(StructureLister)
			if !ok || st == nil {
				continue
			}
			for name, n := range l.Structures() {
				k := key{m.services[i].Name(), name}
				si := acc[k]
				if si == nil {
					si = &StructureInfo{Service: k.svc, Name: name}
					acc[k] = si
				}
				si.Entries += n
				si.Partitions++
			}
		}
		sl.mu.Unlock()
	}
	out := make([]StructureInfo, 0, len(acc))
	for _, si := range acc {
		out = append(out, *si)
	}
	// Replicated services: every member holds all of each structure.
	out = append(out, m.wideStructures()...)
	slices.SortFunc(out, func(a, b StructureInfo) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Name, b.Name))
	})
	return out
}
