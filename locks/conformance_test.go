package locks_test

import (
	"testing"

	"github.com/shoalgrid/shoal/locks"
	"github.com/shoalgrid/shoal/locks/lockstest"
	"github.com/shoalgrid/shoal/op"
)

// TestConformanceInProcess runs the conformance suite on the in-process
// core harness; grid and client run it on real clusters.
func TestConformanceInProcess(t *testing.T) {
	lockstest.Run(t, "sim", func(t *testing.T) []op.Invoker { return locks.NewSimInvokers(t, 3) })
}
