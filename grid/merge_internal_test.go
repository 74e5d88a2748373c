package grid

import (
	"errors"
	"testing"

	"github.com/shoalgrid/shoal/quorum"
)

// TestMergePolicy resolves merge policies: first matching pattern, discard
// by default, and always discard for a structure whose quorum rule is on
// (its copies on a losing side are stale, never newer).
func TestMergePolicy(t *testing.T) {
	cfg, err := Config{
		Profile: ProfilePerformance,
		StructureQuorum: []quorum.Pattern{
			{Pattern: "safe-*", Rule: quorum.Rule{Mode: quorum.Majority}},
		},
		StructureMerge: []StructureMerge{
			{Pattern: "cache-*", Policy: MergePutIfAbsent},
			{Pattern: "cache-x", Policy: MergePassThrough}, // shadowed
			{Pattern: "carts", Policy: MergePassThrough},
			{Pattern: "profiles", Policy: MergeLatest},
			{Pattern: "safe-*", Policy: MergePassThrough},
		},
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	m := &Member{cfg: cfg, quorum: newQuorumState(cfg)}
	for name, want := range map[string]MergePolicy{
		"cache-x": MergePutIfAbsent, "carts": MergePassThrough, "profiles": MergeLatest, "users": MergeDiscard, "safe-1": MergeDiscard,
	} {
		if got := m.mergePolicy(name); got != want {
			t.Errorf("mergePolicy(%q) = %q, want %q", name, got, want)
		}
	}
	for _, bad := range []StructureMerge{{Pattern: "a", Policy: "newest"}, {Pattern: "[", Policy: MergeDiscard}} {
		if _, err := (Config{StructureMerge: []StructureMerge{bad}}).withDefaults(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: error %v, want ErrConfig", bad, err)
		}
	}
}
