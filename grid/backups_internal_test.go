package grid

import (
	"fmt"
	"testing"
)

// TestBackupRules resolves backup counts per structure: first matching
// pattern, the default otherwise, the table sized for the largest rule,
// and a cache that stops growing at its bound (a structure per session
// must not grow it without end) while answers stay right past it.
func TestBackupRules(t *testing.T) {
	r := newBackupRules(Config{
		Backups: &Backups{Sync: 1},
		StructureBackups: []StructureBackups{
			{Pattern: "tmp-*", Backups: Backups{}},
			{Pattern: "orders.*", Backups: Backups{Sync: 2, Async: 1}},
		},
	})
	if r.table != 3 {
		t.Errorf("table carries %d backups, want 3", r.table)
	}
	for i := range 2 * maxCachedBackups {
		if b := r.forName(fmt.Sprintf("tmp-%d", i)); b != (Backups{}) {
			t.Fatalf("tmp-%d: %+v, want none", i, b)
		}
		if b := r.forName(fmt.Sprintf("orders.%d", i)); b != (Backups{Sync: 2, Async: 1}) {
			t.Fatalf("orders.%d: %+v", i, b)
		}
		if b := r.forName(fmt.Sprintf("users-%d", i)); b != (Backups{Sync: 1}) {
			t.Fatalf("users-%d: %+v, want the default", i, b)
		}
	}
	n := 0
	r.cache.Range(func(any, any) bool { n++; return true })
	if n != maxCachedBackups {
		t.Errorf("cache holds %d names, want %d", n, maxCachedBackups)
	}
}
