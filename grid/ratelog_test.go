package grid

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

type recorder struct{ recs *[]slog.Record }

func (r recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r recorder) Handle(_ context.Context, rec slog.Record) error {
	*r.recs = append(*r.recs, rec)
	return nil
}
func (r recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r recorder) WithGroup(string) slog.Handler      { return r }

func TestRateLimitedHandler(t *testing.T) {
	var recs []slog.Record
	h := newRateLimited(recorder{&recs}, 3, time.Second)
	derived := h.WithAttrs([]slog.Attr{slog.String("k", "v")}) // shares the budget
	t0 := time.Unix(1000, 0)
	log := func(at time.Duration, hh slog.Handler) {
		if err := hh.Handle(context.Background(), slog.NewRecord(t0.Add(at), slog.LevelWarn, "garbage", 0)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		hh := slog.Handler(h)
		if i%2 == 1 {
			hh = derived
		}
		log(time.Duration(i)*time.Millisecond, hh)
	}
	if len(recs) != 3 {
		t.Fatalf("%d records passed in one window, want 3", len(recs))
	}
	log(1500*time.Millisecond, h) // next window: passes, with the count
	if len(recs) != 4 {
		t.Fatalf("%d records, want 4", len(recs))
	}
	var suppressed int64
	recs[3].Attrs(func(a slog.Attr) bool {
		if a.Key == "suppressed" {
			suppressed = a.Value.Int64()
		}
		return true
	})
	if suppressed != 97 {
		t.Errorf("suppressed = %d, want 97", suppressed)
	}
}
