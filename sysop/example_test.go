package sysop_test

import (
	"fmt"

	"github.com/shoalgrid/shoal/sysop"
)

// A subscriber of the merge stream (SubscribeEvents(ctx, sysop.Service,
// sysop.MergeStream, fn)) decodes each payload.
func ExampleDecodeMergeReport() {
	payload := []byte(`{"member":"n3","table_version":8589934597,"partitions":2,"entries":3,
		"structures":[{"service":"queue","structure":"jobs","policy":"append","entries":3,"stored":3,"discarded":0}]}`)
	r, err := sysop.DecodeMergeReport(payload)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range r.Structures {
		fmt.Printf("%s let go of %s %s: %s, %d of %d stored\n", r.Member, s.Service, s.Structure, s.Policy, s.Stored, s.Entries)
	}
	// Output: n3 let go of queue jobs: append, 3 of 3 stored
}
