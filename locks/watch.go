package locks

import (
	"context"
	"fmt"

	"github.com/shoalgrid/shoal/op"
)

// ChangeKind says what happened to a lock.
type ChangeKind uint8

// Lock changes.
const (
	// Acquired: a holder was granted the lock.
	Acquired ChangeKind = ChangeKind(eventAcquired)
	// Released: its holder unlocked it.
	Released ChangeKind = ChangeKind(eventReleased)
	// Expired: its holder's lease ended.
	Expired ChangeKind = ChangeKind(eventExpired)
	// SessionEnded: its holder's session ended.
	SessionEnded ChangeKind = ChangeKind(eventSessionEnded)
	// Forced: an operator force-unlocked it.
	Forced ChangeKind = ChangeKind(eventForced)
)

// String names the kind.
func (k ChangeKind) String() string {
	switch k {
	case Acquired:
		return "acquired"
	case Released:
		return "released"
	case Expired:
		return "lease expired"
	case SessionEnded:
		return "session ended"
	case Forced:
		return "force-unlocked"
	}
	return fmt.Sprintf("change(%d)", uint8(k))
}

// Change is a lock changing hands, as the owner emitted it.
type Change struct {
	Kind   ChangeKind
	Holder Holder
	Token  uint64
}

// ErrNoEvents is returned by Watch when the invoker does not deliver
// structure events.
var ErrNoEvents = fmt.Errorf("%w: the invoker does not deliver structure events", op.ErrBadRequest)

// Watch calls fn for every change of the lock (acquired, released, lease
// expired, session ended, force-unlocked) until the returned function is
// called. Delivery is best effort and at most once (see the invoker's
// SubscribeEvents): treat changes as hints and read Status for the truth.
// ctx bounds the registration only. It fails with ErrNoEvents when the
// invoker cannot deliver events.
func (l *Lock) Watch(ctx context.Context, fn func(Change)) (func(), error) {
	if l == nil || l.inv == nil || l.name == "" {
		return nil, fmt.Errorf("locks: watch: %w", errNoLock)
	}
	sub, ok := l.inv.(op.EventSource)
	if !ok {
		return nil, fmt.Errorf("locks: watch %q: %w", l.name, ErrNoEvents)
	}
	stop, err := sub.SubscribeEvents(ctx, ServiceName, l.name, func(p []byte) {
		if e, err := decodeEvent(p); err == nil {
			fn(Change{Kind: ChangeKind(e.kind), Holder: Holder{Session: e.session, Owner: e.owner}, Token: uint64(e.token)})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("locks: watch %q: %w", l.name, err)
	}
	return stop, nil
}
