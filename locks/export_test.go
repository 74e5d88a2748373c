package locks

import (
	"testing"

	"github.com/shoalgrid/shoal/op"
)

// NewExampleInvoker returns an in-process invoker for the examples: one
// session on a simulated core (see simCore).
func NewExampleInvoker() op.Invoker { return newSimCore(7).invoker(1) }

// NewSimInvokers returns n invokers, each its own session, on one
// simulated core that is closed when t ends.
func NewSimInvokers(t *testing.T, n int) []op.Invoker {
	c := newSimCore(13)
	t.Cleanup(c.close)
	invs := make([]op.Invoker, n)
	for i := range invs {
		invs[i] = c.invoker(uint64(i + 1))
	}
	return invs
}
