package locks

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// TestElectOneLeaderAtATime runs participants that each win several terms
// and checks that no two terms overlap and that terms increase.
func TestElectOneLeaderAtATime(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	var active atomic.Int32
	var mu sync.Mutex
	var terms []uint64
	var wg sync.WaitGroup
	for p := range 4 {
		inv := c.invoker(uint64(p + 1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				err := Elect(ctx, inv, "poller", func(ctx context.Context, term uint64) error {
					if n := active.Add(1); n != 1 {
						t.Errorf("%d leaders at once", n)
					}
					mu.Lock()
					terms = append(terms, term)
					mu.Unlock()
					time.Sleep(2 * time.Millisecond) // the work itself
					active.Add(-1)
					return nil
				}, WithCheckInterval(time.Millisecond))
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(terms) != 12 {
		t.Fatalf("%d terms, want 12", len(terms))
	}
	for i := 1; i < len(terms); i++ {
		if terms[i] <= terms[i-1] {
			t.Fatalf("terms %v do not increase", terms)
		}
	}
}

func TestElectLeadershipLostOnSessionEnd(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	var mu sync.Mutex
	var events []Event
	record := WithEvents(func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() })
	started := make(chan uint64, 1)
	var cause error
	errc := make(chan error, 1)
	go func() {
		errc <- Elect(ctx, c.invoker(1), "e", func(wctx context.Context, term uint64) error {
			started <- term
			<-wctx.Done()
			cause = context.Cause(wctx)
			return wctx.Err()
		}, WithCheckInterval(5*time.Millisecond), record)
	}()
	t1 := <-started
	second := make(chan uint64, 1)
	go func() {
		_ = Elect(ctx, c.invoker(2), "e", func(wctx context.Context, term uint64) error {
			second <- term
			return nil
		}, WithCheckInterval(5*time.Millisecond))
	}()
	e := NewElection(c.invoker(3), "e")
	eventually(t, "second participant queued", func() bool { st, _ := e.lock.Status(ctx); return st.Waiters == 1 })
	c.endSession(1)
	if t2 := <-second; t2 <= t1 {
		t.Fatalf("term %d after %d", t2, t1)
	}
	err := <-errc
	if !errors.Is(err, ErrLeadershipLost) || !errors.Is(cause, ErrLeadershipLost) {
		t.Fatalf("Elect returned %v, work's cause %v", err, cause)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || events[0].Kind != BecameLeader || events[1].Kind != LostLeadership || events[1].Term != t1 || events[1].Err == nil {
		t.Fatalf("events %+v", events)
	}
}

func TestElectLostWhenForcedOut(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	e := NewElection(c.invoker(1), "forced", WithCheckInterval(5*time.Millisecond))
	term, err := e.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ld, err := e.Leader(ctx)
	if err != nil || !ld.Elected || ld.Term != term.Value() || ld.Holder.Session != 1 {
		t.Fatalf("leader %+v %v", ld, err)
	}
	if term.Err() != nil || term.Lost() {
		t.Fatal("term over too early")
	}
	if _, err := New(c.invoker(9), "forced").ForceUnlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-term.Done():
	case <-ctx.Done():
		t.Fatal("leadership loss not detected")
	}
	if !term.Lost() || !errors.Is(term.Err(), ErrLeadershipLost) {
		t.Fatalf("term ended with %v", term.Err())
	}
	if err := term.Resign(ctx); err != nil {
		t.Fatalf("resign after loss: %v", err)
	}
}

func TestElectLostWhenUnconfirmed(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	e := NewElection(c.invoker(1), "cut", WithCheckInterval(5*time.Millisecond))
	term, err := e.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.close() // the cluster is unreachable: checks fail
	select {
	case <-term.Done():
	case <-ctx.Done():
		t.Fatal("unconfirmed leadership not given up")
	}
	if !term.Lost() || !errors.Is(term.Err(), op.ErrClosed) {
		t.Fatalf("term ended with %v", term.Err())
	}
	_ = term.Resign(ctx)
}

func TestElectResignHandsOver(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	a := NewElection(c.invoker(1), "r", WithCheckInterval(time.Hour))
	b := NewElection(c.invoker(2), "r", WithCheckInterval(time.Hour))
	ta, err := a.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Term, 1)
	go func() {
		tb, err := b.Campaign(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- tb
	}()
	eventually(t, "b queued", func() bool { st, _ := a.lock.Status(ctx); return st.Waiters == 1 })
	if err := ta.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	tb := <-got
	if tb == nil || tb.Value() <= ta.Value() || ta.Lost() {
		t.Fatalf("hand-over: %v, a lost %v", tb, ta.Lost())
	}
	if err := ta.Resign(ctx); err != nil {
		t.Fatalf("second resign: %v", err)
	}
	if err := tb.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if ld, _ := a.Leader(ctx); ld.Elected {
		t.Fatalf("leader after everyone resigned: %+v", ld)
	}
}

func TestElectWorkErrorAndCampaignTimeout(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	boom := errors.New("boom")
	if err := Elect(ctx, c.invoker(1), "w", func(context.Context, uint64) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("work error: %v", err)
	}
	// The failed work resigned: the next participant wins at once.
	e := NewElection(c.invoker(2), "w")
	term, err := e.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Resign(ctx) //nolint:errcheck // test clean-up
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := Elect(short, c.invoker(3), "w", func(context.Context, uint64) error { return nil }); !errors.Is(err, op.ErrTimeout) {
		t.Fatalf("campaign past its deadline: %v", err)
	}
}

func TestObserve(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	obs := NewElection(c.invoker(9), "o", WithCheckInterval(2*time.Millisecond))
	seen := make(chan Leader, 16)
	octx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- obs.Observe(octx, func(l Leader) { seen <- l }) }()
	if l := <-seen; l.Elected {
		t.Fatalf("first observation %+v", l)
	}
	a := NewElection(c.invoker(1), "o", WithCheckInterval(time.Hour))
	ta, err := a.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l := <-seen; !l.Elected || l.Term != ta.Value() || l.Holder.Session != 1 {
		t.Fatalf("observed %+v", l)
	}
	if err := ta.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if l := <-seen; l.Elected {
		t.Fatalf("observed %+v after resign", l)
	}
	cancel()
	if err := <-done; !errors.Is(err, op.ErrCanceled) {
		t.Fatalf("observe returned %v", err)
	}
}

func TestCampaignWhileStillHolding(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	e := NewElection(c.invoker(1), "again", WithCheckInterval(time.Hour))
	t1, err := e.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The term ends locally but the lock is never released (as if Resign
	// could not reach the owner); campaigning again still works.
	t1.end(errResigned)
	t1.wg.Wait()
	t2, err := e.Campaign(ctx)
	if err != nil || t2.Value() != t1.Value() {
		t.Fatalf("second campaign: %v %v (first term %d)", t2, err, t1.Value())
	}
	if err := t2.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if ld, _ := e.Leader(ctx); ld.Elected {
		t.Fatal("still leader after resigning")
	}
}
