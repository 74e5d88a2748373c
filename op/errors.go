package op

import (
	"errors"
	"fmt"
)

// Code identifies an error on the wire. The table below is the only mapping
// between codes and sentinel errors: it is fixed at compile time, so no
// process-global registry is needed for errors.Is to work across the wire.
type Code uint16

// Error codes. Values are part of the wire protocol: never renumber.
const (
	OK Code = iota
	CodeInternal
	CodeClosed
	CodeTimeout
	CodeCanceled
	CodeWrongOwner
	CodeStaleTable
	CodeMigrating
	CodeUnknownService
	CodeUnknownOp
	CodeWrongType
	CodeTooLarge
	CodeBadRequest
	CodeUnavailable
	CodeQuorum
	CodeNotLeader
	CodeBackupTimeout
	CodeBackupGap
	CodePartitionLost
	CodeNotLockOwner
	CodeSessionExpired
	CodeQueueFull
	CodeMapFull
	CodeUnauthenticated
	CodeForbidden
	codeEnd
)

// Sentinel errors. Match them with errors.Is; the error values returned by
// Shoal wrap them with context.
var (
	// ErrInternal is an unexpected failure inside a member.
	ErrInternal = errors.New("shoal: internal error")
	// ErrClosed is returned by calls on a closed member or client.
	ErrClosed = errors.New("shoal: closed")
	// ErrTimeout is returned when an operation's deadline passed. For a
	// mutation the outcome is unknown: it may or may not have been applied.
	ErrTimeout = errors.New("shoal: timeout")
	// ErrCanceled is returned when the caller's context was canceled.
	ErrCanceled = errors.New("shoal: canceled")
	// ErrWrongOwner means the receiver does not own the partition at the
	// sender's table version. Invokers retry it after refreshing the table.
	ErrWrongOwner = errors.New("shoal: not the partition owner")
	// ErrStaleTable means the receiver's partition table is older than the
	// sender's. Invokers retry it.
	ErrStaleTable = errors.New("shoal: partition table is stale")
	// ErrMigrating means the partition is being handed to another member.
	// Invokers retry it.
	ErrMigrating = errors.New("shoal: partition is migrating")
	// ErrUnknownService means no service answers Request.Service.
	ErrUnknownService = errors.New("shoal: unknown service")
	// ErrUnknownOp means the service has no such operation.
	ErrUnknownOp = errors.New("shoal: unknown operation")
	// ErrWrongType means a value could not be decoded as the requested type.
	ErrWrongType = errors.New("shoal: wrong type")
	// ErrTooLarge means a key, value or frame exceeds the configured limits.
	ErrTooLarge = errors.New("shoal: too large")
	// ErrBadRequest means a request was malformed.
	ErrBadRequest = errors.New("shoal: bad request")
	// ErrUnavailable means no member could be reached.
	ErrUnavailable = errors.New("shoal: unavailable")
	// ErrQuorum means this side of the cluster is too small to serve the
	// operation.
	ErrQuorum = errors.New("shoal: no quorum")
	// ErrNotCoordinator means a coordinator-only request reached another
	// member. Senders retry it against the current coordinator.
	ErrNotCoordinator = errors.New("shoal: not the coordinator")
	// ErrBackupTimeout means the owner applied a mutation but not every
	// synchronous backup acknowledged it in time. The outcome is unknown:
	// the mutation may survive or be lost if the owner fails now. Retrying
	// it is safe (mutations carry an identity and are not applied twice).
	ErrBackupTimeout = errors.New("shoal: backup did not acknowledge in time (outcome unknown)")
	// ErrBackupGap is a backup's answer to a record that does not follow
	// the last one it applied; the owner resyncs it. Members only.
	ErrBackupGap = errors.New("shoal: backup is missing records")
	// ErrPartitionLost means every replica of a partition was lost.
	ErrPartitionLost = errors.New("shoal: partition lost")
	// ErrNotLockOwner means the caller does not hold the lock it tried to
	// unlock (or its hold was released when its session ended).
	ErrNotLockOwner = errors.New("shoal: not the lock owner")
	// ErrSessionExpired means the caller's session ended (its heartbeats
	// stopped for the session TTL, or its member was declared dead): what
	// it held (locks, deliveries, claims) was released.
	ErrSessionExpired = errors.New("shoal: session expired")
	// ErrQueueFull means a bounded queue is at capacity.
	ErrQueueFull = errors.New("shoal: queue full")
	// ErrMapFull means a map or the member reached its memory bound and the
	// map's eviction policy is none.
	ErrMapFull = errors.New("shoal: map full")
	// ErrUnauthenticated means the peer did not prove who it is (no or a
	// wrong token, cluster key or certificate).
	ErrUnauthenticated = errors.New("shoal: unauthenticated")
	// ErrForbidden means the authenticated peer's role does not allow the
	// operation.
	ErrForbidden = errors.New("shoal: forbidden")
)

var codeErrors = [codeEnd]error{
	OK:                  nil,
	CodeInternal:        ErrInternal,
	CodeClosed:          ErrClosed,
	CodeTimeout:         ErrTimeout,
	CodeCanceled:        ErrCanceled,
	CodeWrongOwner:      ErrWrongOwner,
	CodeStaleTable:      ErrStaleTable,
	CodeMigrating:       ErrMigrating,
	CodeUnknownService:  ErrUnknownService,
	CodeUnknownOp:       ErrUnknownOp,
	CodeWrongType:       ErrWrongType,
	CodeTooLarge:        ErrTooLarge,
	CodeBadRequest:      ErrBadRequest,
	CodeUnavailable:     ErrUnavailable,
	CodeQuorum:          ErrQuorum,
	CodeNotLeader:       ErrNotCoordinator,
	CodeBackupTimeout:   ErrBackupTimeout,
	CodeBackupGap:       ErrBackupGap,
	CodePartitionLost:   ErrPartitionLost,
	CodeNotLockOwner:    ErrNotLockOwner,
	CodeSessionExpired:  ErrSessionExpired,
	CodeQueueFull:       ErrQueueFull,
	CodeMapFull:         ErrMapFull,
	CodeUnauthenticated: ErrUnauthenticated,
	CodeForbidden:       ErrForbidden,
}

// Sentinel returns the sentinel error of a code (ErrInternal for an unknown
// code, nil for OK).
func (c Code) Sentinel() error {
	if c >= codeEnd {
		return ErrInternal
	}
	return codeErrors[c]
}

// String returns the sentinel's text.
func (c Code) String() string {
	if c == OK {
		return "ok"
	}
	return c.Sentinel().Error()
}

// Retriable reports whether an invoker should retry an operation that failed
// with this code (after refreshing its table or waiting briefly). These codes
// all mean "the operation was not applied here".
func (c Code) Retriable() bool {
	switch c {
	case CodeWrongOwner, CodeStaleTable, CodeMigrating, CodeNotLeader:
		return true
	}
	return false
}

// CodeOf returns the code of the first sentinel that err wraps, CodeInternal
// if it wraps none, or OK for nil. Context errors map to their sentinels.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	for c := Code(1); c < codeEnd; c++ {
		if errors.Is(err, codeErrors[c]) {
			return c
		}
	}
	switch {
	case errors.Is(err, errDeadline):
		return CodeTimeout
	case errors.Is(err, errCanceled):
		return CodeCanceled
	}
	return CodeInternal
}

// Error builds the error for a code and detail text: it wraps the code's
// sentinel, so errors.Is(Error(CodeTimeout, "x"), ErrTimeout) holds.
func Error(c Code, msg string) error {
	s := c.Sentinel()
	if s == nil {
		return nil
	}
	if msg == "" || msg == s.Error() {
		return s
	}
	return &codeError{sentinel: s, msg: msg}
}

// Errorf is Error with formatting.
func Errorf(c Code, format string, args ...any) error {
	return Error(c, fmt.Sprintf(format, args...))
}

type codeError struct {
	sentinel error
	msg      string
}

func (e *codeError) Error() string { return e.sentinel.Error() + ": " + e.msg }
func (e *codeError) Unwrap() error { return e.sentinel }

// Message returns the detail text to send on the wire for err: its text
// without the sentinel's prefix when it has one.
func Message(err error) string {
	if err == nil {
		return ""
	}
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.msg
	}
	return err.Error()
}
