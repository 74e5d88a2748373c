package grid

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/wire"
)

// A backup with the owner's sequence number but another history (it
// applied a record from a previous owner that the new owner never saw)
// must not pass the probe: the owner has to copy the partition.
func TestProbeComparesTermNotJustSequence(t *testing.T) {
	m := &Member{cfg: Config{Name: "b"}}
	s := &slot{id: 3, role: 1, ownerSince: 7, seq: 42, term: 5}
	if r := s.probe(m, 9, 9, 42, 5); r.Code != op.OK {
		t.Fatalf("same sequence and term: %v", r.Err())
	}
	if r := s.probe(m, 9, 9, 42, 7); !errors.Is(r.Err(), op.ErrBackupGap) {
		t.Fatalf("same sequence, other term: %v, want ErrBackupGap", r.Err())
	}
	if r := s.probe(m, 9, 9, 41, 5); !errors.Is(r.Err(), op.ErrBackupGap) {
		t.Fatalf("other sequence: %v, want ErrBackupGap", r.Err())
	}
	if r := s.probe(m, 9, 6, 42, 5); !errors.Is(r.Err(), op.ErrWrongOwner) {
		t.Fatalf("probe from a deposed owner: %v, want ErrWrongOwner", r.Err())
	}
}

// A resync requested while a worker runs the same job (the probe it sent
// was refused before the worker finished) must be queued again, not
// dropped as already pending: otherwise the backup never gets its copy.
func TestResyncRequestedWhileRunningIsQueuedAgain(t *testing.T) {
	m := &Member{resyncPending: map[resyncJob]bool{}, resyncKick: make(chan struct{}, 1)}
	m.scheduleResync(3, "b")
	m.scheduleResync(3, "b") // queued and not started: a duplicate
	j, ok := m.nextResync()
	if !ok || j != (resyncJob{3, "b"}) {
		t.Fatalf("nextResync = %v, %v", j, ok)
	}
	if _, ok := m.nextResync(); ok {
		t.Fatal("a duplicate request was queued twice")
	}
	m.scheduleResync(3, "b") // while the job runs
	if j, ok := m.nextResync(); !ok || j != (resyncJob{3, "b"}) {
		t.Fatalf("request made while the job ran was dropped: nextResync = %v, %v", j, ok)
	}
}

// A hand-off to a backup that is not being fed asks for a resync itself:
// the partition is frozen, so no mutation will.
func TestHandoffSchedulesResyncOfIdleTarget(t *testing.T) {
	tab, err := partition.New(5, 4, []partition.Member{{Name: "a"}, {Name: "b"}}, [][]string{{"a", "b"}, {"a", "b"}, {"a", "b"}, {"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	m := &Member{cfg: Config{Name: "a"}, resyncPending: map[resyncJob]bool{}, resyncKick: make(chan struct{}, 1)}
	m.table.Store(tab)
	s := &slot{id: 2, role: 0, seq: 10, targets: []*target{{name: "b"}}}
	m.slots = []*slot{{id: 0}, {id: 1}, s, {id: 3}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // return after the first check instead of waiting
	if err := m.handoff(ctx, 2, "b"); err == nil {
		t.Fatal("hand-off to an unsynced backup succeeded")
	}
	if j, ok := m.nextResync(); !ok || j != (resyncJob{2, "b"}) {
		t.Fatalf("hand-off did not ask for a resync: nextResync = %v, %v", j, ok)
	}
}

// The member's wait loop fails replicated mutations whose backups did not
// acknowledge them by their deadline (there is no timer per mutation), and
// forgets settled waits.
func TestExpireWaitsFailsLateMutations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Unix(1000, 0)
	const timeout = 100 * time.Millisecond
	s := &slot{id: 3}

	done := newAckWait(1, now.Add(timeout))
	late := newAckWait(1, now.Add(timeout))
	s.waits = []*ackWait{done, late}
	done.ack()
	result := make(chan error, 1)
	late.then(nil, func(_ *wire.Batch, err error) { result <- err })

	s.expireWaits(now.Add(timeout/2), timeout)
	if len(s.waits) != 1 || s.waits[0] != late {
		t.Fatalf("before the deadline: %d waits left, want the pending one", len(s.waits))
	}
	select {
	case err := <-result:
		t.Fatalf("pending wait completed early: %v", err)
	default:
	}

	s.expireWaits(now.Add(timeout), timeout)
	select {
	case err := <-result:
		if !errors.Is(err, op.ErrBackupTimeout) {
			t.Fatalf("late mutation failed with %v, want ErrBackupTimeout", err)
		}
	case <-ctx.Done():
		t.Fatal("late mutation never failed")
	}
	if len(s.waits) != 0 {
		t.Errorf("%d waits left after expiry", len(s.waits))
	}
	// An acknowledgement after the failure changes nothing.
	late.ack()
	if err := late.result(); !errors.Is(err, op.ErrBackupTimeout) {
		t.Errorf("result after a late ack: %v", err)
	}
}

// An owner that a new table makes a backup of its own partition, without
// a hand-over, was declared gone and replaced: its data is the losing
// side's, orphaned (snapshotted for the merge, counted, dropped) and the
// replica starts again partial, as when it holds no replica at all. After
// a hand-over the same change drops nothing.
func TestDemotedOwnerOrphansItsData(t *testing.T) {
	tab := func(version uint64, owner, backup string) *partition.Table {
		reps := make([][]string, 4)
		for i := range reps {
			reps[i] = []string{owner, backup}
		}
		tb, err := partition.New(version, 4, []partition.Member{{Name: "a"}, {Name: "b"}}, reps)
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	svc := maps.Service{}
	st := svc.NewState(2)
	for _, k := range []string{"x", "y", "z"} {
		st.Apply(time.Now(), &op.Request{Op: maps.OpPut, Name: "m", Key: k, Value: []byte("v")})
	}
	m := &Member{cfg: Config{Name: "a"}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), services: []op.Service{svc}}
	s := &slot{id: 2, role: 0, seq: 10, term: 3, states: []op.State{st}, targets: []*target{{name: "b"}}}
	dropped, orphaned, snaps, _ := s.adopt(m, tab(9, "b", "a"))
	if dropped != 3 || orphaned != 3 || snaps == nil || s.states[0] != nil || !s.partial || s.seq != 0 || s.role != 1 {
		t.Fatalf("demoted owner: dropped %d orphaned %d snaps %v states %v partial %v seq %d role %d",
			dropped, orphaned, snaps, s.states, s.partial, s.seq, s.role)
	}
	// After a hand-over (the slot was frozen for it) nothing is orphaned.
	s = &slot{id: 2, role: 0, seq: 10, term: 3, frozen: 8, states: []op.State{st}, targets: []*target{{name: "b"}}}
	if dropped, orphaned, snaps, _ := s.adopt(m, tab(9, "b", "a")); dropped != 0 || orphaned != 0 || snaps != nil || s.states[0] == nil {
		t.Fatalf("owner after a hand-over: dropped %d orphaned %d snaps %v", dropped, orphaned, snaps)
	}
}
