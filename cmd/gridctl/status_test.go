package main

import (
	"strings"
	"testing"

	"github.com/shoalgrid/shoal/partition"
)

func TestStatusOfSafety(t *testing.T) {
	three := []partition.Member{{Name: "a", Addr: "h:1", Zone: "z1"}, {Name: "b", Addr: "h:2"}, {Name: "c", Addr: "h:3"}}
	for _, tc := range []struct {
		name     string
		members  []partition.Member
		replicas [][]int32
		safe     bool
		need     int
		unsafe   int
	}{
		{"no backups", three, [][]int32{{0}, {1}, {2}, {0}}, true, 1, 0},
		{"full backups", three, [][]int32{{0, 1}, {1, 2}, {2, 0}, {0, 2}}, true, 2, 0},
		{"one backup lost", three, [][]int32{{0, 1}, {1}, {2, 0}, {0, 2}}, false, 2, 1},
		{"more backups than members", three[:2], [][]int32{{0, 1}, {1, 0}}, true, 2, 0},
	} {
		tb := &partition.Table{Version: 9, Count: len(tc.replicas), Members: tc.members, Replicas: tc.replicas}
		if err := tb.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		st := statusOf(tb)
		if st.Safe != tc.safe || st.Replicas != tc.need || st.Unsafe != tc.unsafe || st.TableVersion != 9 || st.PartitionCount != len(tc.replicas) {
			t.Errorf("%s: %+v", tc.name, st)
		}
		owned, backup := 0, 0
		for _, m := range st.Members {
			owned += m.PartitionsOwned
			backup += m.PartitionsBackup
		}
		wantBackup := 0
		for _, rs := range tc.replicas {
			wantBackup += len(rs) - 1
		}
		if owned != len(tc.replicas) || backup != wantBackup {
			t.Errorf("%s: owned %d backup %d", tc.name, owned, backup)
		}
	}
}

func TestWriteStatus(t *testing.T) {
	tb := &partition.Table{Version: 4, Count: 2, Members: []partition.Member{{Name: "a", Addr: "h:1", Zone: "z1", Host: "rack7"}, {Name: "b", Addr: "h:2"}}, Replicas: [][]int32{{0, 1}, {1}}}
	var b strings.Builder
	if err := writeStatus(&b, "prod", statusOf(tb)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, s := range []string{"cluster prod: 2 members, table version 0.4, 2 partitions", "safe: NO (1 partitions below 2 replicas)", "z1", "rack7", "a     h:1"} {
		if !strings.Contains(out, s) {
			t.Errorf("missing %q in:\n%s", s, out)
		}
	}
	if got := quorumText(false, 1, 3, 2); got != "NO (1 of 3 visible, 2 needed)" {
		t.Errorf("quorumText = %q", got)
	}
	if statusOf(nil).Members == nil {
		t.Error("members must encode as [], not null")
	}
}
