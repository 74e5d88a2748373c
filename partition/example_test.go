package partition_test

import (
	"fmt"

	"github.com/shoalgrid/shoal/partition"
)

func ExampleAssign() {
	members := []partition.Member{
		{Name: "m3", Addr: "10.0.0.3:5701"},
		{Name: "m1", Addr: "10.0.0.1:5701"},
		{Name: "m2", Addr: "10.0.0.2:5701"},
	}
	t, err := partition.Assign(members, partition.DefaultCount, 1, partition.PerMember)
	if err != nil {
		panic(err)
	}
	t = t.WithVersion(1) // the coordinator numbers each published table

	p := partition.ID("user:42", t.Count)
	owner, _ := t.Owner(p)
	backup, _ := t.Replica(p, 1)
	fmt.Printf("key user:42 -> partition %d, owner %s (%s), backup %s\n", p, owner.Name, owner.Addr, backup.Name)
	for _, m := range t.Members {
		fmt.Printf("%s owns %d partitions\n", m.Name, len(t.Owned(m.Name)))
	}
	// Output:
	// key user:42 -> partition 195, owner m1 (10.0.0.1:5701), backup m2
	// m1 owns 85 partitions
	// m2 owns 91 partitions
	// m3 owns 95 partitions
}

// A table version orders tables by coordinator term first, then by their
// number within the term.
func ExampleVersionOf() {
	v := partition.VersionOf(3, 17)
	fmt.Println(partition.TermOf(v), partition.SeqOf(v), partition.VersionString(v))
	fmt.Println(partition.VersionOf(4, 1) > partition.VersionOf(3, 900))
	// Output:
	// 3 17 3.17
	// true
}
