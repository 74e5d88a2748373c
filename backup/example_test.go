package backup_test

import (
	"fmt"

	"github.com/shoalgrid/shoal/backup"
)

// A backup at sequence 5 decides about the records its owner sends.
func ExampleOnRecord() {
	r := backup.Replica{Role: 1, OwnerSince: 10, Seq: 5, Term: 10}
	for _, seq := range []uint64{6, 5, 8} {
		fmt.Println(seq, backup.OnRecord(r, 12, 12, seq))
	}
	fmt.Println("from a deposed owner:", backup.OnRecord(r, 12, 9, 6))
	// Output:
	// 6 accept
	// 5 duplicate
	// 8 gap
	// from a deposed owner: deposed
}

// The owner of a partition is gone: b applied a write of the owner
// promoted at table 7, a still holds more records of the owner before it.
func ExamplePromote() {
	cands := []backup.Candidate{
		{Name: "a", Reported: true, Holds: true, Pos: backup.Position{Seq: 103, Term: 5}},
		{Name: "b", Reported: true, Holds: true, Pos: backup.Position{Seq: 102, Term: 7}},
		{Name: "c", Reported: true}, // holds no replica
	}
	best, missing := backup.Promote(cands, "a")
	fmt.Println(cands[best].Name, missing)
	// Output: b -1
}

// An owner's view of a new backup: a probe first, then records stream; a
// mutation waiting for the backup completes once the probe does.
func ExampleProgress() {
	var p backup.Progress[string]
	p.Wait(1, "put k")
	fmt.Println(p.Next())
	p.Started()
	p.Caught(1, func(w string) { fmt.Println("acknowledged:", w) })
	fmt.Println(p.Holds(1), p.Streaming())
	// Output:
	// probe
	// acknowledged: put k
	// true true
}
