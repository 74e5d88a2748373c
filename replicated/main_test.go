package replicated_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/shoalgrid/shoal/grid/gridtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, gridtest.LeakOptions()...)
}
