package op

import (
	"context"
	"errors"
	"time"
)

var (
	errDeadline = context.DeadlineExceeded
	errCanceled = context.Canceled
)

// FromContext converts a context's error into the matching sentinel
// (ErrTimeout or ErrCanceled), wrapping the context error so both match.
func FromContext(ctx context.Context) error {
	err := ctx.Err()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return errors.Join(ErrTimeout, err)
	default:
		return errors.Join(ErrCanceled, err)
	}
}

// Remaining returns the time left before ctx's deadline, or zero when ctx has
// none. It never returns a negative duration; an expired context gives a
// minimal positive one so the receiver still sees a deadline.
func Remaining(ctx context.Context, now time.Time) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	if d := dl.Sub(now); d > 0 {
		return d
	}
	return time.Nanosecond
}
