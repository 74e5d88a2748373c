package grid_test

import (
	"testing"

	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps/mapstest"
	"github.com/shoalgrid/shoal/op"
)

func TestMapConformanceEmbedded(t *testing.T) {
	mapstest.Run(t, func(t *testing.T) []op.Invoker {
		c := gridtest.New(t, 3)
		var invs []op.Invoker
		for _, m := range c.Live() {
			invs = append(invs, m)
		}
		return invs
	})
}
