package quorum_test

import (
	"fmt"
	"slices"

	"github.com/shoalgrid/shoal/quorum"
)

// A three-member cluster cut in two: only the side with a majority of the
// voters may serve a structure under the majority rule.
func Example() {
	rule, _ := quorum.ParseRule("majority")
	voters := []string{"n1", "n2", "n3"}
	noneLeft := func(string) bool { return false }

	big := quorum.ViewOf(voters, []string{"n1", "n2"}, noneLeft)
	small := quorum.ViewOf(voters, []string{"n3"}, noneLeft)
	fmt.Println("n1, n2:", quorum.Check(rule, big).OK)
	fmt.Println("n3:", quorum.Check(rule, small))

	// Scaling down gracefully keeps the quorum: n2 and n3 left on purpose,
	// so they no longer count.
	left := func(n string) bool { return slices.Contains([]string{"n2", "n3"}, n) }
	alone := quorum.ViewOf(voters, []string{"n1"}, left)
	fmt.Println("n1 after graceful leaves:", quorum.Check(rule, alone).OK)
	fmt.Println("next voters:", quorum.NextVoters(voters, []string{"n1"}, left))
	// Output:
	// n1, n2: true
	// n3: 1 of 3 members visible, 2 needed
	// n1 after graceful leaves: true
	// next voters: [n1]
}
