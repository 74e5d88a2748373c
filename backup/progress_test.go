package backup

import (
	"slices"
	"testing"
)

// TestProgress walks an owner's view of one backup through its states: a
// probe first, records streamed and acknowledged, a refused record that
// breaks the stream, waiters released only once the backup is synced again
// (by a copy, since the probe was used), and the waiters of a backup that
// leaves.
func TestProgress(t *testing.T) {
	var p Progress[string]
	var released []string
	release := func(w string) { released = append(released, w) }
	check := func(step string, acked uint64, synced, streaming bool, waiting int) {
		t.Helper()
		if p.Acked() != acked || p.Synced() != synced || p.Streaming() != streaming || p.Waiting() != waiting {
			t.Fatalf("%s: acked %d synced %v streaming %v waiting %d; want %d %v %v %d",
				step, p.Acked(), p.Synced(), p.Streaming(), p.Waiting(), acked, synced, streaming, waiting)
		}
	}
	check("new", 0, false, false, 0)
	if p.Holds(0) {
		t.Fatal("a new backup holds nothing yet")
	}
	// Mutation 1 happens before the backup is brought up to date.
	p.Wait(1, "w1")
	if s := p.Next(); s != SendProbe {
		t.Fatalf("first step %v, want a probe", s)
	}
	p.Started()
	if s := p.Next(); s != NoStep {
		t.Fatalf("step while the probe is under way: %v", s)
	}
	// An acknowledgement before the probe completes releases nothing.
	p.Advance(1, release)
	check("acked, not synced", 1, false, true, 1)
	if len(released) != 0 {
		t.Fatalf("released %v before the backup was synced", released)
	}
	p.Caught(1, release)
	check("probe completed", 1, true, true, 0)
	if !slices.Equal(released, []string{"w1"}) || !p.Holds(1) || p.Holds(2) {
		t.Fatalf("after the probe: released %v, holds(1) %v holds(2) %v", released, p.Holds(1), p.Holds(2))
	}

	// Records 2 and 3 in flight; 2 is acknowledged, 3 refused (a gap).
	p.Advance(2, release)
	p.Broken()
	p.Wait(3, "w3")
	p.Wait(4, "w4")
	check("broken", 2, false, false, 2)
	if s := p.Next(); s != SendCopy {
		t.Fatalf("step after a used probe: %v, want a copy", s)
	}
	p.Started()
	// An old acknowledgement arriving late does not move acked back.
	p.Advance(1, release)
	check("late acknowledgement", 2, false, true, 2)
	released = nil
	p.Caught(3, release)
	if !slices.Equal(released, []string{"w3"}) {
		t.Fatalf("copy at 3 released %v, want [w3]", released)
	}
	released = nil
	p.Advance(4, release)
	if !slices.Equal(released, []string{"w4"}) {
		t.Fatalf("acknowledgement of 4 released %v", released)
	}

	// A backup that leaves fails what still waits for it.
	p.Wait(5, "w5")
	var failed []string
	p.Drop(func(w string) { failed = append(failed, w) })
	if !slices.Equal(failed, []string{"w5"}) || p.Waiting() != 0 {
		t.Fatalf("drop failed %v, %d still waiting", failed, p.Waiting())
	}
}
