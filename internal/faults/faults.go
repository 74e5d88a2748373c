// Package faults is a small harness for fault-injection tests: record what
// clients did while members were killed, paused or restarted, then check
// that the grid kept its promises.
//
// # Recording
//
// A History records operations. Each one is invoked, then ends exactly once
// as ok, fail or unknown:
//
//	h := faults.NewHistory()
//	call := h.Invoke(worker, faults.Write, key, value)
//	err := m.Put(ctx, key, []byte(value))
//	call.End(err) // ok, fail or unknown, from Classify(err)
//
//	call = h.Invoke(worker, faults.Read, key, "")
//	v, found, err := m.Get(ctx, key)
//	call.EndRead(string(v), found, err)
//
// Classify decides the outcome of an error. An error that does not prove
// the operation was refused before it was applied gives unknown: op.ErrTimeout,
// op.ErrBackupTimeout, op.ErrUnavailable (a client may have sent an earlier
// attempt of the same call before the member became unreachable),
// op.ErrCanceled, op.ErrClosed, context errors, and anything unexpected.
// Only validation errors (op.ErrBadRequest, op.ErrTooLarge, op.ErrWrongType,
// op.ErrUnknownService, op.ErrUnknownOp) give fail.
//
// # Checking registers
//
// CheckRegisters treats every key as a register (Put overwrites, Get reads)
// and checks each successful read against the writes of its key. A read may
// return the value of a write that was acknowledged (ok) or whose outcome is
// unknown, provided the write began before the read ended and no
// acknowledged write of the same key happened entirely between the two
// (began after the write ended and ended before the read began); it may find
// the key absent only if no acknowledged write ended before the read began.
// Anything else is counted:
//
//   - Lost: the read saw an older state, so an acknowledged write is missing
//     (for a final read after the load stopped: the value is not the last
//     acknowledged write, nor a later write whose outcome is unknown).
//   - Invented: the read returned a value no ok or unknown write of that key
//     carried before the read ended (a failed write's value counts here too).
//
// Two assumptions keep the check simple and strict: every key starts absent
// and is never deleted, and each write of a key carries a distinct value
// (write counters). An unknown write is assumed to take effect, if at all,
// before its call returned; a grid that applied a write after the caller had
// given up on it could be reported as having lost a later write.
//
// Keys with an acknowledged write but no successful read are reported as
// Unread, so a test cannot pass by reading nothing.
//
// # Checking counters
//
// CheckCounter checks a counter that workers increment with
// read-then-CompareAndSwap: its final value must be at least the number of
// acknowledged increments (none lost) and at most that plus the number of
// increments whose outcome is unknown (none applied twice, and no
// acknowledgement lost: a CAS applied but reported as failed shows up as a
// value above the acknowledged count).
package faults

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// Kind is what an operation does.
type Kind uint8

// Operation kinds.
const (
	// Write stores Value under Key, replacing what was there.
	Write Kind = iota + 1
	// Read returns the value under Key (Found false: absent).
	Read
)

// String names the Kind for logs and reports.
func (k Kind) String() string {
	switch k {
	case Write:
		return "write"
	case Read:
		return "read"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Outcome is how an operation ended.
type Outcome uint8

// Outcomes.
const (
	// Pending: invoked, not ended yet.
	Pending Outcome = iota
	// OK: acknowledged; for a write, it was applied.
	OK
	// Fail: refused; for a write, it was certainly not applied.
	Fail
	// Unknown: it may or may not have been applied.
	Unknown
)

// String names the Outcome for logs and reports.
func (o Outcome) String() string {
	switch o {
	case Pending:
		return "pending"
	case OK:
		return "ok"
	case Fail:
		return "fail"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Op is one recorded operation.
type Op struct {
	// Process is the worker that issued it (for logs).
	Process int
	Kind    Kind
	Key     string
	// Value is what a write wrote, or what a successful read returned.
	Value string
	// Found is whether a successful read found the key.
	Found bool
	// Invoke and Complete are when the call began and returned.
	Invoke, Complete time.Time
	Outcome          Outcome
	// Err is the call's error, if any.
	Err error
}

// String names the Op for logs and reports.
func (o Op) String() string {
	v := fmt.Sprintf("%q", o.Value)
	if o.Kind == Read && o.Outcome == OK && !o.Found {
		v = "absent"
	}
	s := fmt.Sprintf("p%d %s %q %s %s", o.Process, o.Kind, o.Key, v, o.Outcome)
	if o.Err != nil {
		s += fmt.Sprintf(" (%v)", o.Err)
	}
	return s
}

// History is a concurrent record of operations. The zero value is not
// usable; call NewHistory.
type History struct {
	mu  sync.Mutex
	ops []Op
	now func() time.Time
}

// NewHistory returns an empty history.
func NewHistory() *History { return &History{now: time.Now} }

// Call is an invoked operation; end it with End or EndRead, once.
type Call struct {
	h *History
	i int
}

// Invoke records the start of an operation and returns its Call. For a
// read, value is ignored.
func (h *History) Invoke(process int, kind Kind, key, value string) *Call {
	h.mu.Lock()
	defer h.mu.Unlock()
	if kind == Read {
		value = ""
	}
	h.ops = append(h.ops, Op{Process: process, Kind: kind, Key: key, Value: value, Invoke: h.now()})
	return &Call{h: h, i: len(h.ops) - 1}
}

// End records the end of a write (or of a read that failed), classifying
// err with Classify, and returns the outcome.
func (c *Call) End(err error) Outcome {
	return c.finish(Classify(err), err, "", false)
}

// EndRead records the end of a read: the value it returned and whether it
// found the key, or its error.
func (c *Call) EndRead(value string, found bool, err error) Outcome {
	return c.finish(Classify(err), err, value, found)
}

// EndAs records the end of an operation with an outcome the caller decided.
func (c *Call) EndAs(outcome Outcome, err error) Outcome {
	return c.finish(outcome, err, "", false)
}

func (c *Call) finish(out Outcome, err error, value string, found bool) Outcome {
	h := c.h
	h.mu.Lock()
	defer h.mu.Unlock()
	o := &h.ops[c.i]
	if o.Outcome != Pending {
		panic(fmt.Sprintf("faults: operation %s ended twice", o))
	}
	o.Complete, o.Outcome, o.Err = h.now(), out, err
	if o.Kind == Read && out == OK {
		o.Value, o.Found = value, found
		if !found {
			o.Value = ""
		}
	}
	return out
}

// Ops returns a copy of the operations recorded so far, in invocation
// order.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// Counts tallies operations by kind and outcome.
type Counts struct {
	Writes, Reads              int
	OK, Fail, Unknown, Pending int
}

// Counts returns the tallies of the history.
func (h *History) Counts() Counts {
	var c Counts
	for _, o := range h.Ops() {
		switch o.Kind {
		case Write:
			c.Writes++
		case Read:
			c.Reads++
		}
		switch o.Outcome {
		case OK:
			c.OK++
		case Fail:
			c.Fail++
		case Unknown:
			c.Unknown++
		default:
			c.Pending++
		}
	}
	return c
}

// Errors returns the operations that ended with an error.
func (h *History) Errors() []Op {
	var out []Op
	for _, o := range h.Ops() {
		if o.Err != nil {
			out = append(out, o)
		}
	}
	return out
}

// definite are the errors that prove a request was refused before it was
// applied.
var definite = []error{op.ErrBadRequest, op.ErrTooLarge, op.ErrWrongType, op.ErrUnknownService, op.ErrUnknownOp}

// Classify returns OK for a nil error, Fail for an error proving the
// operation was refused before it was applied, and Unknown for any other.
func Classify(err error) Outcome {
	if err == nil {
		return OK
	}
	switch {
	case errors.Is(err, op.ErrTimeout), errors.Is(err, op.ErrBackupTimeout), errors.Is(err, op.ErrUnavailable),
		errors.Is(err, op.ErrCanceled), errors.Is(err, op.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return Unknown
	}
	for _, d := range definite {
		if errors.Is(err, d) {
			return Fail
		}
	}
	return Unknown
}

// Report is the result of CheckRegisters.
type Report struct {
	// Keys is the number of keys with at least one operation.
	Keys int
	// Writes counts writes by outcome; Reads counts successful reads.
	WritesOK, WritesUnknown, WritesFailed, Reads int
	// Lost counts reads that missed an acknowledged write.
	Lost int
	// Invented counts reads of a value no possible write carried.
	Invented int
	// Unread counts keys with an acknowledged write but no successful read.
	Unread int
	// Problems describes the first MaxProblems anomalies.
	Problems []string
}

// MaxProblems bounds Report.Problems.
const MaxProblems = 20

// OK reports whether no read lost a write or invented a value, and every
// acknowledged key was read.
func (r Report) OK() bool { return r.Lost == 0 && r.Invented == 0 && r.Unread == 0 }

// String names the Report for logs and reports.
func (r Report) String() string {
	return fmt.Sprintf("%d keys, writes %d ok / %d unknown / %d failed, %d reads: %d lost, %d invented, %d unread",
		r.Keys, r.WritesOK, r.WritesUnknown, r.WritesFailed, r.Reads, r.Lost, r.Invented, r.Unread)
}

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < MaxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// CheckRegisters checks the reads of ops against the writes, key by key
// (see the package documentation for the rule). Pending operations are
// ignored.
func CheckRegisters(ops []Op) Report {
	var r Report
	byKey := map[string][]Op{}
	for _, o := range ops {
		if o.Outcome == Pending {
			continue
		}
		byKey[o.Key] = append(byKey[o.Key], o)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	r.Keys = len(keys)
	for _, k := range keys {
		checkKey(&r, k, byKey[k])
	}
	return r
}

func checkKey(r *Report, key string, ops []Op) {
	var writes, acked []Op
	reads := 0
	for _, o := range ops {
		switch {
		case o.Kind == Write && o.Outcome == OK:
			writes = append(writes, o)
			acked = append(acked, o)
			r.WritesOK++
		case o.Kind == Write && o.Outcome == Unknown:
			writes = append(writes, o)
			r.WritesUnknown++
		case o.Kind == Write:
			r.WritesFailed++
		}
	}
	// supersededBefore reports whether an acknowledged write began after w
	// ended (zero w: the initial absent state) and ended before t.
	supersededBefore := func(w *Op, t time.Time) bool {
		for _, a := range acked {
			if (w == nil || a.Invoke.After(w.Complete)) && a.Complete.Before(t) {
				return true
			}
		}
		return false
	}
	for _, rd := range ops {
		if rd.Kind != Read || rd.Outcome != OK {
			continue
		}
		reads++
		r.Reads++
		if !rd.Found {
			if supersededBefore(nil, rd.Invoke) {
				r.Lost++
				r.problem("key %q: read at %s found it absent, but %s", key, rd.Invoke.Format(time.StampMicro), lastAcked(acked, rd.Invoke))
			}
			continue
		}
		possible, seen := false, false
		for i := range writes {
			w := &writes[i]
			if w.Value != rd.Value || !w.Invoke.Before(rd.Complete) {
				continue
			}
			seen = true
			if !supersededBefore(w, rd.Invoke) {
				possible = true
				break
			}
		}
		switch {
		case possible:
		case seen:
			r.Lost++
			r.problem("key %q: read at %s returned %q, overwritten since: %s", key, rd.Invoke.Format(time.StampMicro), rd.Value, lastAcked(acked, rd.Invoke))
		default:
			r.Invented++
			r.problem("key %q: read at %s returned %q, which no ok or unknown write of the key carried before the read ended", key, rd.Invoke.Format(time.StampMicro), rd.Value)
		}
	}
	if reads == 0 && len(acked) > 0 {
		r.Unread++
		r.problem("key %q: %d acknowledged writes, never read", key, len(acked))
	}
}

// lastAcked describes the last acknowledged write that ended before t.
func lastAcked(acked []Op, t time.Time) string {
	var last *Op
	for i := range acked {
		if a := &acked[i]; a.Complete.Before(t) && (last == nil || a.Complete.After(last.Complete)) {
			last = a
		}
	}
	if last == nil {
		return "no acknowledged write"
	}
	return fmt.Sprintf("write of %q acknowledged at %s", last.Value, last.Complete.Format(time.StampMicro))
}

// CounterReport is the result of CheckCounter.
type CounterReport struct {
	Final, Acked, Unknown int64
	// Lost is how many acknowledged increments are missing.
	Lost int64
	// Extra is how many increments were applied beyond the acknowledged
	// and unknown ones: applied twice, or applied but reported as not.
	Extra int64
}

// CheckCounter checks a counter's final value against the increments that
// were acknowledged and those whose outcome is unknown. It assumes the
// counter started at 0.
func CheckCounter(final, acked, unknown int64) CounterReport {
	r := CounterReport{Final: final, Acked: acked, Unknown: unknown}
	if final < acked {
		r.Lost = acked - final
	}
	if final > acked+unknown {
		r.Extra = final - acked - unknown
	}
	return r
}

// OK reports whether nothing was lost or applied twice.
func (r CounterReport) OK() bool { return r.Lost == 0 && r.Extra == 0 }

// String names the CounterReport for logs and reports.
func (r CounterReport) String() string {
	return fmt.Sprintf("counter %d after %d acknowledged and %d unknown increments: %d lost, %d extra", r.Final, r.Acked, r.Unknown, r.Lost, r.Extra)
}
