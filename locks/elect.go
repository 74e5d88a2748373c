package locks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// ErrLeadershipLost is the cause of a term's context when leadership was
// lost: the election lock passed to someone else (the leader's session or
// lease ended, an operator forced it) or the leader could not confirm its
// leadership for two check intervals.
var ErrLeadershipLost = errors.New("locks: leadership lost")

// errResigned is the cause of a term's context after Resign.
var errResigned = errors.New("locks: resigned")

// DefaultCheckInterval is how often a leader confirms that it still holds
// the election lock, unless WithCheckInterval or the invoker says
// otherwise (see Election).
const DefaultCheckInterval = time.Second

// WithCheckInterval sets how often a leader confirms its leadership and an
// observer polls the leader (default: the invoker's session heartbeat if it
// tells, else DefaultCheckInterval). A leader that cannot confirm for two
// intervals steps down.
func WithCheckInterval(d time.Duration) Option { return func(o *options) { o.interval = d } }

// WithEvents calls fn on leadership events of this participant. fn runs on
// the election's goroutines and must not block.
func WithEvents(fn func(Event)) Option { return func(o *options) { o.onEvent = fn } }

// EventKind says what an Event reports.
type EventKind uint8

// Leadership events.
const (
	// BecameLeader: the participant won the election.
	BecameLeader EventKind = iota + 1
	// LostLeadership: the participant's term ended without Resign.
	LostLeadership
	// Resigned: the participant gave leadership up.
	Resigned
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case BecameLeader:
		return "became leader"
	case LostLeadership:
		return "lost leadership"
	case Resigned:
		return "resigned"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is a change of a participant's leadership.
type Event struct {
	Kind EventKind
	// Name is the election's name.
	Name string
	// Term is the term (fencing token) that began or ended.
	Term uint64
	// Err is why a LostLeadership happened.
	Err error
}

// heartbeater is implemented by invokers whose sessions heart-beat: the
// election checks leadership at that pace, never faster.
type heartbeater interface {
	SessionHeartbeat() time.Duration
}

// Election is one participant of a leader election: the leader is whoever
// holds the lock of the election's name, and its term is the lock's
// fencing token, so terms strictly increase from leader to leader and
// serve as fencing tokens for what the leader does. A new leader is
// elected once the old one resigns, or once its session ends (its process
// died, stopped heart-beating for the session TTL, or its member was
// declared dead).
//
// Safety does not rest on timing alone: a leader paused for longer than
// its session TTL still believes it leads until it checks, and a leader
// cut off from the cluster steps down only after two check intervals
// without confirmation, while the cluster may elect another once the
// leader's session TTL has passed since its last heartbeat (with the
// defaults, 1 s checks and a 2 s TTL, the two may overlap by about a
// second). Pass the term to the resources the leader writes and let them
// refuse lower terms.
type Election struct {
	lock *Lock
	o    options
}

// NewElection returns a participant of the election called name, reached
// through inv.
func NewElection(inv op.Invoker, name string, opts ...Option) *Election {
	e := &Election{lock: New(inv, name, opts...)}
	e.o = e.lock.o
	if e.o.interval <= 0 {
		e.o.interval = DefaultCheckInterval
		if hb, ok := inv.(heartbeater); ok && hb.SessionHeartbeat() > 0 {
			e.o.interval = hb.SessionHeartbeat()
		}
	}
	// A participant is one holder and must not re-enter its own term.
	e.lock.o.limit = 1
	return e
}

// Name returns the election's name.
func (e *Election) Name() string { return e.lock.name }

func (e *Election) event(k EventKind, term uint64, err error) {
	if e.o.onEvent != nil {
		e.o.onEvent(Event{Kind: k, Name: e.lock.name, Term: term, Err: err})
	}
}

// Term is one leadership of a participant, from winning the election to
// resigning or losing it.
type Term struct {
	e      *Election
	term   uint64
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Campaign waits until the participant leads (or ctx ends) and returns its
// term. The term lasts until Resign or until leadership is lost, which
// cancels the term's Context with cause ErrLeadershipLost; ctx only bounds
// the wait.
func (e *Election) Campaign(ctx context.Context) (*Term, error) {
	tok, err := e.lock.Lock(ctx)
	if errors.Is(err, op.ErrBadRequest) {
		// The reentrancy limit: this participant still holds the lock
		// (a Resign that could not reach the owner). It still leads.
		if st, serr := e.lock.Status(ctx); serr == nil && st.Mine && !st.LeaseEnded {
			tok, err = st.Token, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("locks: campaign: %w", err)
	}
	t := &Term{e: e, term: tok}
	t.ctx, t.cancel = context.WithCancelCause(context.WithoutCancel(ctx))
	e.event(BecameLeader, tok, nil)
	// Subscribe before returning, so a change right after Campaign
	// returns is seen.
	sctx, scancel := context.WithTimeout(t.ctx, e.o.interval)
	stop, err := e.lock.Watch(sctx, func(c Change) {
		if (c.Kind != Acquired && c.Token == t.term) || (c.Kind == Acquired && c.Token > t.term) {
			t.end(fmt.Errorf("%w: %q %s (term %d, change to token %d)", ErrLeadershipLost, e.lock.name, c.Kind, t.term, c.Token))
		}
	})
	scancel()
	if err != nil {
		stop = func() {}
	}
	t.wg.Add(1)
	go t.watch(stop)
	return t, nil
}

// Value returns the term: the election lock's fencing token.
func (t *Term) Value() uint64 { return t.term }

// Context returns a context that is cancelled when the term ends; its
// cause (context.Cause) wraps ErrLeadershipLost when leadership was lost.
func (t *Term) Context() context.Context { return t.ctx }

// Done is closed when the term ends.
func (t *Term) Done() <-chan struct{} { return t.ctx.Done() }

// Err returns nil while the term lasts, then why it ended.
func (t *Term) Err() error {
	if t.ctx.Err() == nil {
		return nil
	}
	return context.Cause(t.ctx)
}

// Lost reports whether the term ended by losing leadership.
func (t *Term) Lost() bool { return errors.Is(t.Err(), ErrLeadershipLost) }

// end ends the term once with cause and reports the event.
func (t *Term) end(cause error) {
	t.once.Do(func() {
		t.cancel(cause)
		if errors.Is(cause, ErrLeadershipLost) {
			t.e.event(LostLeadership, t.term, cause)
		} else {
			t.e.event(Resigned, t.term, nil)
		}
	})
}

// watch confirms the leadership every check interval until the term ends,
// then ends the event subscription (stop). Where the invoker delivers lock
// events, a change that ends this term (its token released, or a higher
// token acquired) ends it at once (see Campaign).
func (t *Term) watch(stop func()) {
	defer t.wg.Done()
	defer stop()
	iv := t.e.o.interval
	tick := time.NewTicker(iv)
	defer tick.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(t.ctx, iv)
		st, err := t.e.lock.Status(cctx)
		cancel()
		switch {
		case t.ctx.Err() != nil:
			return
		case err == nil && st.Mine && st.Token == t.term && !st.LeaseEnded:
			lastOK = time.Now()
		case err == nil && st.Held:
			t.end(fmt.Errorf("%w: %q is held by %v with term %d (ours %d)", ErrLeadershipLost, t.e.lock.name, st.Holder, st.Token, t.term))
		case err == nil:
			t.end(fmt.Errorf("%w: %q is no longer held (term %d)", ErrLeadershipLost, t.e.lock.name, t.term))
		case errors.Is(err, op.ErrSessionExpired):
			t.end(fmt.Errorf("%w: %w", ErrLeadershipLost, err))
		case time.Since(lastOK) >= 2*iv:
			t.end(fmt.Errorf("%w: not confirmed for %v: %w", ErrLeadershipLost, time.Since(lastOK).Round(time.Millisecond), err))
		}
	}
}

// Resign ends the term and releases the election lock if this term still
// holds it, so another participant leads at once. It waits for the term's
// watcher to stop. Resigning twice, or after losing leadership, is
// harmless.
func (t *Term) Resign(ctx context.Context) error {
	t.end(errResigned)
	t.wg.Wait()
	err := t.e.lock.unlock(ctx, t.term)
	if errors.Is(err, op.ErrNotLockOwner) {
		return nil // lost already (or resigned before)
	}
	return err
}

// Leader is who leads an election.
type Leader struct {
	// Elected reports whether there is a leader.
	Elected bool
	// Holder is the leader.
	Holder Holder
	// Term is the leader's term.
	Term uint64
}

// Leader returns who leads now.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	st, err := e.lock.Status(ctx)
	if err != nil {
		return Leader{}, err
	}
	if !st.Held || st.LeaseEnded {
		return Leader{}, nil
	}
	return Leader{Elected: true, Holder: st.Holder, Term: st.Token}, nil
}

// Observe calls fn with the current leader, then every time the leader or
// its term changes, until ctx ends (it returns ctx's error mapped by
// op.FromContext). It reads the leader every check interval, and at once
// when the invoker delivers a lock event. Failed reads are retried at the
// next interval.
func (e *Election) Observe(ctx context.Context, fn func(Leader)) error {
	tick := time.NewTicker(e.o.interval)
	defer tick.Stop()
	// Lock events, where the invoker delivers them, trigger a read at once.
	hint := make(chan struct{}, 1)
	sctx, scancel := context.WithTimeout(ctx, e.o.interval)
	stop, err := e.lock.Watch(sctx, func(Change) {
		select {
		case hint <- struct{}{}:
		default:
		}
	})
	scancel()
	if err == nil {
		defer stop()
	}
	var last Leader
	first := true
	for {
		cctx, cancel := context.WithTimeout(ctx, e.o.interval)
		ld, err := e.Leader(cctx)
		cancel()
		if err == nil && (first || ld != last) {
			first, last = false, ld
			fn(ld)
		}
		select {
		case <-ctx.Done():
			return op.FromContext(ctx)
		case <-tick.C:
		case <-hint:
		}
	}
}

// Elect campaigns in the election called name until this participant leads
// or ctx ends, then runs work with the term. work's context is cancelled
// when leadership is lost (its cause wraps ErrLeadershipLost) or ctx ends.
// When work returns, Elect resigns and returns work's error; if leadership
// was lost it returns an error wrapping ErrLeadershipLost instead. Elect
// serves one term: a participant that should stand again loops.
//
//	for ctx.Err() == nil {
//		err := locks.Elect(ctx, inv, "poller", poll)
//		...
//	}
func Elect(ctx context.Context, inv op.Invoker, name string, work func(ctx context.Context, term uint64) error, opts ...Option) error {
	e := NewElection(inv, name, opts...)
	t, err := e.Campaign(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancelCause(t.Context())
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	werr := work(wctx, t.Value())
	stop()
	cancel(nil)
	lost := t.Lost()
	cause := t.Err()
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), abandonTimeout)
	defer rcancel()
	rerr := t.Resign(rctx)
	switch {
	case lost:
		return cause
	case werr != nil:
		return werr
	case rerr != nil:
		return fmt.Errorf("locks: resign %q: %w", name, rerr)
	}
	return nil
}
