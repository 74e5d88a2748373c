package backup

import "testing"

func TestOnRecord(t *testing.T) {
	backup := Replica{Role: 1, OwnerSince: 10, Seq: 5, Term: 10}
	sealed := backup
	sealed.Sealed = 12
	for _, c := range []struct {
		name              string
		r                 Replica
		cur, version, seq uint64
		want              Verdict
	}{
		{"next record", backup, 12, 12, 6, Accept},
		{"duplicate", backup, 12, 12, 5, Duplicate},
		{"old duplicate", backup, 12, 12, 1, Duplicate},
		{"gap", backup, 12, 12, 8, Gap},
		{"deposed owner", backup, 12, 9, 6, Deposed},
		{"owner since exactly", backup, 12, 10, 6, Accept},
		{"newer table than ours", Replica{Role: -1, OwnerSince: 10, Seq: 5}, 12, 13, 6, Accept},
		{"not a backup at our table", Replica{Role: -1, OwnerSince: 10, Seq: 5}, 12, 12, 6, NotBackup},
		{"the owner itself", Replica{Role: 0, OwnerSince: 10, Seq: 5}, 12, 11, 6, NotBackup},
		{"deposed beats duplicate", backup, 12, 3, 2, Deposed},
		// A coordinator read this replica's position at table 12 to
		// promote it (or another replica) in place of its owner.
		{"sealed: the owner of that table", sealed, 12, 12, 6, Deposed},
		{"sealed: an older table", sealed, 12, 11, 6, Deposed},
		{"sealed: the new owner's table", sealed, 13, 13, 6, Accept},
	} {
		if got := OnRecord(c.r, c.cur, c.version, c.seq); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestOnProbe(t *testing.T) {
	r := Replica{Role: 2, OwnerSince: 4, Seq: 100, Term: 4}
	for _, c := range []struct {
		name                    string
		cur, version, seq, term uint64
		want                    Verdict
	}{
		{"same history", 5, 5, 100, 4, Accept},
		{"same seq, other term", 5, 5, 100, 3, Differs},
		{"behind", 5, 5, 101, 4, Differs},
		{"ahead", 5, 5, 99, 4, Differs},
		{"deposed", 5, 3, 100, 4, Deposed},
	} {
		if got := OnProbe(r, c.cur, c.version, c.seq, c.term); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if got := Fence(Replica{Role: -1}, 7, 7); got != NotBackup {
		t.Errorf("fence of a non-replica: %v", got)
	}
	for v := Accept; v <= Differs+1; v++ {
		if v.String() == "" {
			t.Errorf("verdict %d has no name", v)
		}
	}
}
