package locks

import "github.com/shoalgrid/shoal/op"

// NewExampleInvoker returns an in-process invoker for the examples: one
// session on a simulated core (see simCore).
func NewExampleInvoker() op.Invoker { return newSimCore(7).invoker(1) }
