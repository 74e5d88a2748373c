package grid

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// rateLimited is a slog.Handler that passes at most limit records per
// window to the handler it wraps and drops the rest, counting them: the
// first record let through after a drop carries the count as "suppressed".
// It guards the log against input an attacker controls: each garbage
// gossip packet made memberlist log a warning (5,091 lines in a second).
type rateLimited struct {
	next  slog.Handler
	state *rateState
}

type rateState struct {
	limit  int
	window time.Duration

	mu         sync.Mutex
	start      time.Time // of the current window
	passed     int       // records let through in the current window
	suppressed int       // records dropped since the last one let through
}

// Rate limits of memberlist's log lines.
const (
	gossipLogLimit  = 10
	gossipLogWindow = time.Second
)

func newRateLimited(next slog.Handler, limit int, window time.Duration) *rateLimited {
	return &rateLimited{next: next, state: &rateState{limit: limit, window: window}}
}

// Enabled reports whether the wrapped handler takes records at level.
func (h *rateLimited) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle passes r on unless this window's budget is spent.
func (h *rateLimited) Handle(ctx context.Context, r slog.Record) error {
	s := h.state
	s.mu.Lock()
	now := r.Time
	if now.IsZero() {
		now = time.Now()
	}
	if now.Sub(s.start) >= s.window || now.Before(s.start) {
		s.start, s.passed = now, 0
	}
	if s.passed >= s.limit {
		s.suppressed++
		s.mu.Unlock()
		return nil
	}
	s.passed++
	dropped := s.suppressed
	s.suppressed = 0
	s.mu.Unlock()
	if dropped > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", dropped))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a handler sharing this one's budget.
func (h *rateLimited) WithAttrs(as []slog.Attr) slog.Handler {
	return &rateLimited{next: h.next.WithAttrs(as), state: h.state}
}

// WithGroup returns a handler sharing this one's budget.
func (h *rateLimited) WithGroup(name string) slog.Handler {
	return &rateLimited{next: h.next.WithGroup(name), state: h.state}
}
