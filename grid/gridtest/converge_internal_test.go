package gridtest

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message instead
// of ending the test (waitConverged returns after calling it).
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
}

func TestWaitConvergedFailsWhenStuck(t *testing.T) {
	r := &fatalRecorder{TB: t}
	start := time.Now()
	waitConverged(r, func() (bool, string) { return false, "m0 has table 41, m1 has 40" },
		func() string { return "m0:v41 m1:v40" }, 200*time.Millisecond, 10*time.Second)
	if !strings.Contains(r.msg, "no progress") {
		t.Fatalf("a stuck cluster gave %q, want a no-progress failure", r.msg)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stall noticed after %v, want about 200ms", d)
	}
}

func TestWaitConvergedFailsAtLimitWhileChanging(t *testing.T) {
	r := &fatalRecorder{TB: t}
	var n atomic.Int64
	waitConverged(r, func() (bool, string) { return false, "migration pending" },
		func() string { return fmt.Sprint(n.Add(1)) }, 200*time.Millisecond, 500*time.Millisecond)
	if !strings.Contains(r.msg, "still changing") {
		t.Fatalf("a cluster that never converges gave %q, want a limit failure", r.msg)
	}
}

func TestWaitConvergedWaitsWhileProgressing(t *testing.T) {
	r := &fatalRecorder{TB: t}
	var n atomic.Int64
	// Stable only after 30 polls (about 600 ms), three times the stall,
	// with progress at every poll.
	waitConverged(r, func() (bool, string) { return n.Load() >= 30, "migrating" },
		func() string { return fmt.Sprint(n.Add(1)) }, 200*time.Millisecond, 20*time.Second)
	if r.msg != "" {
		t.Fatalf("a progressing cluster failed: %s", r.msg)
	}
}
