package locks_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/shoalgrid/shoal/locks"
	"github.com/shoalgrid/shoal/op"
)

// fencedStore is a resource guarded by a lock: it remembers the highest
// fencing token it has seen and refuses writes with a lower one.
type fencedStore struct {
	highest uint64
	value   string
}

func (s *fencedStore) write(token uint64, v string) error {
	if token < s.highest {
		return fmt.Errorf("stale token %d (seen %d)", token, s.highest)
	}
	s.highest, s.value = token, v
	return nil
}

func Example() {
	ctx := context.Background()
	// In a program, inv is a *grid.Member (embedded) or a *client.Client
	// (remote); every process has its own session.
	inv := locks.NewExampleInvoker()

	store := &fencedStore{}
	first := locks.New(inv, "report")
	tok1, _ := first.Lock(ctx)
	_ = store.write(tok1, "from first")

	// Another holder waits while the first holds the lock.
	second := locks.New(inv, "report")
	_, ok, _ := second.TryLock(ctx)
	fmt.Println("second acquired while held:", ok)

	_ = first.Unlock(ctx)
	tok2, _ := second.Lock(ctx)
	fmt.Println("token increased:", tok2 > tok1)
	_ = store.write(tok2, "from second")

	// A holder that lost the lock without knowing is fenced off.
	err := store.write(tok1, "late write")
	fmt.Println("stale write refused:", err != nil)

	// Unlocking a lock one does not hold fails clearly.
	err = first.Unlock(ctx)
	fmt.Println(errors.Is(err, op.ErrNotLockOwner))
	// Output:
	// second acquired while held: false
	// token increased: true
	// stale write refused: true
	// true
}

func ExampleElect() {
	ctx := context.Background()
	inv := locks.NewExampleInvoker()
	err := locks.Elect(ctx, inv, "poller", func(ctx context.Context, term uint64) error {
		// Runs on exactly one participant at a time; ctx is cancelled if
		// leadership is lost. Pass term to what the leader writes.
		fmt.Println("leading")
		return nil
	})
	fmt.Println(err)
	// Output:
	// leading
	// <nil>
}
