package locks

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// Lock is a handle on one distributed lock, held on behalf of one holder:
// the invoker's session plus an owner id (random per handle unless
// WithOwner sets it). Goroutines that must exclude each other each need
// their own handle (creating one is free); goroutines that share a handle,
// or handles that share an owner id in one process, are one reentrant
// holder.
//
// A Lock holds no data and no connections: every call becomes one
// op.Request, so the same code works over an embedded member and a remote
// client. Errors wrap the op sentinels (op.ErrNotLockOwner,
// op.ErrSessionExpired, op.ErrTimeout, ...): match them with errors.Is.
type Lock struct {
	inv  op.Invoker
	name string
	o    options
}

// Option configures a Lock, an Election or one call.
type Option func(*options)

type options struct {
	owner    string
	lease    time.Duration
	limit    uint32
	interval time.Duration
	onEvent  func(Event)
}

func (o *options) apply(opts []Option) {
	for _, fn := range opts {
		if fn != nil {
			fn(o)
		}
	}
}

// WithOwner sets the owner id of the holder (at most MaxOwnerLen bytes).
// Handles with the same owner id over the same invoker are one holder.
func WithOwner(id string) Option { return func(o *options) { o.owner = id } }

// WithLease makes an acquisition end by itself d after it is granted (the
// owner decides and replicates the release, no local clock does). Leases
// travel in whole milliseconds, rounded up; 0 means no lease (the lock is
// held until unlocked or the holder's session ends), which is the default;
// a negative d fails the call with op.ErrBadRequest. A re-entry with a
// lease restarts the lease from the re-entry.
func WithLease(d time.Duration) Option { return func(o *options) { o.lease = d } }

// WithReentrancyLimit caps the hold count of the holder: n = 1 makes the
// lock non-reentrant (a second Lock by the holder fails with
// op.ErrBadRequest, a second TryLock returns false). 0, the default, means
// no practical limit.
func WithReentrancyLimit(n int) Option {
	return func(o *options) { o.limit = uint32(min(max(n, 0), maxHolds)) }
}

// New returns the lock called name, reached through inv. Nothing is
// created on the cluster: a lock exists while it is held.
func New(inv op.Invoker, name string, opts ...Option) *Lock {
	l := &Lock{inv: inv, name: name}
	l.o.apply(opts)
	if l.o.owner == "" {
		l.o.owner = randomOwner()
	}
	return l
}

func randomOwner() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// randomAttempt returns a non-zero attempt id.
func randomAttempt() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if a := binary.LittleEndian.Uint64(b[:]); a != 0 {
			return a
		}
	}
}

// Name returns the lock's name.
func (l *Lock) Name() string { return l.name }

// Owner returns the handle's owner id.
func (l *Lock) Owner() string { return l.o.owner }

var errNoLock = fmt.Errorf("%w: nil lock, nil invoker or empty lock name", op.ErrBadRequest)

func leaseMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond != 0 && ms < math.MaxInt64 {
		ms++
	}
	return ms
}

func (l *Lock) request(code uint8, o *options) *op.Request {
	return &op.Request{Service: ServiceName, Name: l.name, Op: code, Partition: -1, Key: l.name, Value: []byte(o.owner)}
}

func (l *Lock) invoke(ctx context.Context, what string, req *op.Request) (*op.Response, error) {
	if l == nil || l.inv == nil || l.name == "" {
		return nil, fmt.Errorf("locks: %s: %w", what, errNoLock)
	}
	resp, err := l.inv.Invoke(ctx, req)
	if err == nil && resp == nil {
		err = fmt.Errorf("%w: no response", op.ErrInternal)
	}
	if err != nil {
		return nil, fmt.Errorf("locks: %s %q: %w", what, l.name, err)
	}
	return resp, nil
}

// Lock acquires the lock, waiting in FIFO order until it is granted or ctx
// ends, and returns the fencing token: greater than every token handed out
// before for this lock. Give the token to every resource the lock guards,
// and let the resource refuse a token lower than one it has seen: that is
// what keeps a holder that lost the lock without knowing (a pause, an
// expired lease or session) from doing harm. A holder that already holds
// the lock re-enters at once and gets the same token.
//
// When ctx ends, the wait is abandoned on the owner; if the lock was
// granted at that very moment, the grant is undone (best effort, see
// OpAbandon).
func (l *Lock) Lock(ctx context.Context, opts ...Option) (uint64, error) {
	tok, _, err := l.acquire(ctx, OpLock, "lock", opts)
	return tok, err
}

// TryLock acquires the lock if it is free (or held by this holder) and
// returns at once: ok is false when another holder has it.
func (l *Lock) TryLock(ctx context.Context, opts ...Option) (token uint64, ok bool, err error) {
	return l.acquire(ctx, OpTryLock, "try-lock", opts)
}

func (l *Lock) acquire(ctx context.Context, code uint8, what string, opts []Option) (uint64, bool, error) {
	if l == nil {
		return 0, false, fmt.Errorf("locks: %s: %w", what, errNoLock)
	}
	o := l.o
	o.apply(opts)
	if o.lease < 0 {
		return 0, false, fmt.Errorf("locks: %s %q: %w: negative lease %v", what, l.name, op.ErrBadRequest, o.lease)
	}
	a := args{limit: o.limit, attempt: randomAttempt()}
	req := l.request(code, &o)
	req.Num = leaseMillis(o.lease)
	req.Aux = encodeArgs(a)
	req.Timeout = op.Remaining(ctx, time.Now())
	resp, err := l.invoke(ctx, what, req)
	if err != nil {
		if unknownOutcome(err) {
			l.abandon(ctx, &o, a)
		}
		return 0, false, err
	}
	if code == OpLock && (!resp.Found || resp.Num <= 0) {
		// Only a member core that ignores Park answers a waiting Lock
		// this way.
		return 0, false, fmt.Errorf("locks: lock %q: %w: not granted and not parked (does the member support waiting calls?)", l.name, op.ErrInternal)
	}
	return uint64(resp.Num), resp.Found, nil
}

// unknownOutcome reports whether a failed acquisition may have reached the
// owner and been granted without the caller learning it.
func unknownOutcome(err error) bool {
	return errors.Is(err, op.ErrTimeout) || errors.Is(err, op.ErrCanceled) ||
		errors.Is(err, op.ErrUnavailable) || errors.Is(err, op.ErrBackupTimeout) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// abandonTimeout bounds the clean-up of an abandoned acquisition.
const abandonTimeout = 3 * time.Second

// abandon undoes acquisition a if the owner waits or granted it.
func (l *Lock) abandon(ctx context.Context, o *options, a args) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abandonTimeout)
	defer cancel()
	req := l.request(OpAbandon, o)
	req.Aux = encodeArgs(args{attempt: a.attempt})
	_, _ = l.invoke(actx, "abandon", req)
}

// Unlock releases one hold of the lock (the last hold frees it and grants
// it to the first waiter). It fails with op.ErrNotLockOwner when this
// holder does not hold the lock, which is also how a holder learns that
// its lease or session ended.
func (l *Lock) Unlock(ctx context.Context) error { return l.unlock(ctx, 0) }

// unlock releases one hold if the holder's token is token (0: any).
func (l *Lock) unlock(ctx context.Context, token uint64) error {
	if l == nil {
		return fmt.Errorf("locks: unlock: %w", errNoLock)
	}
	req := l.request(OpUnlock, &l.o)
	req.Num = int64(token)
	_, err := l.invoke(ctx, "unlock", req)
	return err
}

// Status reads the lock: holder, token, hold count, lease and waiters.
func (l *Lock) Status(ctx context.Context) (Status, error) {
	if l == nil {
		return Status{}, fmt.Errorf("locks: status: %w", errNoLock)
	}
	resp, err := l.invoke(ctx, "status", l.request(OpStatus, &l.o))
	if err != nil {
		return Status{}, err
	}
	st, err := decodeStatus(resp.Value)
	if err != nil {
		return Status{}, fmt.Errorf("locks: status %q: %w", l.name, err)
	}
	return st, nil
}

// IsLocked reports whether anyone holds the lock.
func (l *Lock) IsLocked(ctx context.Context) (bool, error) {
	st, err := l.Status(ctx)
	return st.Held && !st.LeaseEnded, err
}

// IsLockedByMe reports whether this holder holds the lock.
func (l *Lock) IsLockedByMe(ctx context.Context) (bool, error) {
	st, err := l.Status(ctx)
	return st.Mine && !st.LeaseEnded, err
}

// ForceUnlock frees the lock whoever holds it, for operators, and grants
// it to the first waiter. It reports whether a hold was released. The
// holder is not told: its next Unlock fails with op.ErrNotLockOwner and
// its token is lower than the next holder's.
func (l *Lock) ForceUnlock(ctx context.Context) (bool, error) {
	if l == nil {
		return false, fmt.Errorf("locks: force-unlock: %w", errNoLock)
	}
	resp, err := l.invoke(ctx, "force-unlock", l.request(OpForceUnlock, &l.o))
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}
