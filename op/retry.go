package op

import (
	"context"
	"errors"
	"time"
)

// Verdict is what an invoker does after one attempt of an invocation.
type Verdict int

// Verdicts.
const (
	// Done: return the response (and its error, if any) to the caller.
	Done Verdict = iota
	// Fail: return the attempt's error; retrying cannot help (too large,
	// the caller's deadline passed, a refused handshake, ...).
	Fail
	// Retry: try again after refreshing routing. Either the operation was
	// not applied (wrong owner, stale table, migrating, unreachable), or it
	// was applied but not confirmed by its backups; requests carry an
	// identity, so a retry is never applied twice.
	Retry
)

// Judge classifies one attempt: resp and err as returned by a connection's
// Call (err covers transport failures only).
func Judge(resp *Response, err error) Verdict {
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return Retry
		}
		return Fail
	}
	// CodeClosed in a response comes from a remote member that is
	// shutting down or crashing: another member will own the partition,
	// and the request's identity makes a retry safe even if that member
	// applied it.
	if resp.Code.Retriable() || resp.Code == CodeBackupTimeout || resp.Code == CodeClosed {
		return Retry
	}
	return Done
}

// Backoff spaces retries: it starts at one millisecond and doubles up to a
// cap. The zero value is ready to use (cap 100 ms).
type Backoff struct {
	next, Max time.Duration
}

// Wait sleeps for the next backoff, returning early when wake is closed
// (e.g. a new partition table arrived) or with ctx's error mapped by
// FromContext when ctx ends.
func (b *Backoff) Wait(ctx context.Context, wake <-chan struct{}) error {
	if b.next == 0 {
		b.next = time.Millisecond
	}
	if b.Max == 0 {
		b.Max = 100 * time.Millisecond
	}
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.Max)
	select {
	case <-ctx.Done():
		return FromContext(ctx)
	case <-wake:
	case <-t.C:
	}
	return nil
}
