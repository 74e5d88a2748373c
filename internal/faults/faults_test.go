package faults

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

var t0 = time.Unix(1_700_000_000, 0)

// at returns t0 plus n milliseconds.
func at(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

func w(key, value string, from, to int, out Outcome) Op {
	return Op{Kind: Write, Key: key, Value: value, Invoke: at(from), Complete: at(to), Outcome: out}
}

func r(key, value string, from, to int) Op {
	return Op{Kind: Read, Key: key, Value: value, Found: true, Invoke: at(from), Complete: at(to), Outcome: OK}
}

func absent(key string, from, to int) Op {
	return Op{Kind: Read, Key: key, Invoke: at(from), Complete: at(to), Outcome: OK}
}

func TestCheckRegisters(t *testing.T) {
	cases := []struct {
		name                   string
		ops                    []Op
		lost, invented, unread int
	}{
		{"last ack read", []Op{w("k", "1", 1, 2, OK), w("k", "2", 3, 4, OK), r("k", "2", 10, 11)}, 0, 0, 0},
		{"lost write", []Op{w("k", "1", 1, 2, OK), w("k", "2", 3, 4, OK), r("k", "1", 10, 11)}, 1, 0, 0},
		{"lost: absent after an ack", []Op{w("k", "1", 1, 2, OK), absent("k", 10, 11)}, 1, 0, 0},
		{"later unknown write read", []Op{w("k", "1", 1, 2, OK), w("k", "2", 3, 4, Unknown), r("k", "2", 10, 11)}, 0, 0, 0},
		{"later unknown write not applied", []Op{w("k", "1", 1, 2, OK), w("k", "2", 3, 4, Unknown), r("k", "1", 10, 11)}, 0, 0, 0},
		{"two later unknown writes, the first applied", []Op{w("k", "1", 1, 2, OK), w("k", "2", 3, 4, Unknown), w("k", "3", 5, 6, Unknown), r("k", "2", 10, 11)}, 0, 0, 0},
		{"unknown write before the last ack", []Op{w("k", "1", 1, 2, Unknown), w("k", "2", 3, 4, OK), r("k", "1", 10, 11)}, 1, 0, 0},
		{"absent with only unknown writes", []Op{w("k", "1", 1, 2, Unknown), absent("k", 10, 11)}, 0, 0, 0},
		{"absent, never written", []Op{absent("k", 10, 11)}, 0, 0, 0},
		{"invented value", []Op{w("k", "1", 1, 2, OK), r("k", "7", 10, 11)}, 0, 1, 0},
		{"failed write visible", []Op{w("k", "1", 1, 2, OK), w("k", "2", 3, 4, Fail), r("k", "2", 10, 11)}, 0, 1, 0},
		{"read from the future", []Op{w("k", "1", 1, 2, OK), r("k", "2", 3, 4), w("k", "2", 5, 6, OK)}, 0, 1, 0},
		{"another key's value", []Op{w("a", "1", 1, 2, OK), w("b", "2", 1, 2, OK), r("a", "2", 10, 11), r("b", "2", 10, 11)}, 0, 1, 0},
		{"concurrent acked writes, either order", []Op{w("k", "1", 1, 5, OK), w("k", "2", 2, 3, OK), r("k", "1", 10, 11), r("k", "2", 12, 13)}, 0, 0, 0},
		{"read concurrent with a write sees old or new", []Op{w("k", "1", 1, 2, OK), w("k", "2", 5, 8, OK), r("k", "1", 6, 7), r("k", "2", 6, 9)}, 0, 0, 0},
		{"stale read after the write ended", []Op{w("k", "1", 1, 2, OK), w("k", "2", 5, 8, OK), r("k", "1", 9, 10)}, 1, 0, 0},
		{"acked key never read", []Op{w("k", "1", 1, 2, OK), w("j", "1", 1, 2, Unknown)}, 0, 0, 1},
		{"failed reads do not count as reads", []Op{w("k", "1", 1, 2, OK), {Kind: Read, Key: "k", Invoke: at(3), Complete: at(4), Outcome: Unknown}}, 0, 0, 1},
		{"pending ignored", []Op{w("k", "1", 1, 2, OK), {Kind: Write, Key: "k", Value: "2", Invoke: at(3)}, r("k", "1", 10, 11)}, 0, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep := CheckRegisters(c.ops)
			if rep.Lost != c.lost || rep.Invented != c.invented || rep.Unread != c.unread {
				t.Errorf("lost %d invented %d unread %d, want %d %d %d\n%s\n%s", rep.Lost, rep.Invented, rep.Unread, c.lost, c.invented, c.unread, rep, strings.Join(rep.Problems, "\n"))
			}
			if rep.OK() != (c.lost+c.invented+c.unread == 0) {
				t.Errorf("OK() = %v", rep.OK())
			}
			if !rep.OK() && len(rep.Problems) == 0 {
				t.Error("anomalies without a description")
			}
		})
	}
}

func TestCheckRegistersTallies(t *testing.T) {
	rep := CheckRegisters([]Op{
		w("a", "1", 1, 2, OK), w("a", "2", 3, 4, Unknown), w("a", "3", 5, 6, Fail), r("a", "2", 10, 11),
		w("b", "1", 1, 2, OK), r("b", "1", 10, 11), r("b", "1", 12, 13),
	})
	if rep.Keys != 2 || rep.WritesOK != 2 || rep.WritesUnknown != 1 || rep.WritesFailed != 1 || rep.Reads != 3 || !rep.OK() {
		t.Errorf("report %+v", rep)
	}
	if s := rep.String(); !strings.Contains(s, "2 keys") || !strings.Contains(s, "0 lost, 0 invented") {
		t.Errorf("String() = %q", s)
	}
	var many []Op
	for i := range 2 * MaxProblems {
		k := fmt.Sprint(i)
		many = append(many, w(k, "1", 1, 2, OK), r(k, "0", 10, 11))
	}
	if rep := CheckRegisters(many); rep.Invented != 2*MaxProblems || len(rep.Problems) != MaxProblems {
		t.Errorf("invented %d, %d problems", rep.Invented, len(rep.Problems))
	}
}

func TestCheckCounter(t *testing.T) {
	cases := []struct {
		final, acked, unknown int64
		lost, extra           int64
	}{
		{10, 10, 0, 0, 0},
		{12, 10, 2, 0, 0},
		{11, 10, 2, 0, 0},
		{9, 10, 2, 1, 0},
		{13, 10, 2, 0, 1},
		{11, 10, 0, 0, 1},
	}
	for _, c := range cases {
		rep := CheckCounter(c.final, c.acked, c.unknown)
		if rep.Lost != c.lost || rep.Extra != c.extra || rep.OK() != (c.lost == 0 && c.extra == 0) {
			t.Errorf("CheckCounter(%d, %d, %d) = %s", c.final, c.acked, c.unknown, rep)
		}
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{fmt.Errorf("maps: put: %w", op.ErrTimeout), Unknown},
		{op.FromContext(expired()), Unknown},
		{fmt.Errorf("x: %w", op.ErrBackupTimeout), Unknown},
		{fmt.Errorf("client: %w", op.ErrUnavailable), Unknown},
		{op.ErrClosed, Unknown},
		{context.Canceled, Unknown},
		{errors.New("something unexpected"), Unknown},
		{fmt.Errorf("x: %w", op.ErrBadRequest), Fail},
		{fmt.Errorf("x: %w", op.ErrTooLarge), Fail},
		{op.ErrWrongType, Fail},
		{op.ErrUnknownOp, Fail},
	}
	for _, c := range cases {
		if got := Classify(c.err); got != c.want {
			t.Errorf("Classify(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func expired() context.Context {
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	cancel()
	return ctx
}

func TestHistoryRecords(t *testing.T) {
	h := NewHistory()
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprint("k", p)
			for i := range 50 {
				err := error(nil)
				if i == 49 && p == 0 {
					err = fmt.Errorf("put: %w", op.ErrTimeout)
				}
				h.Invoke(p, Write, key, fmt.Sprint(i)).End(err)
			}
			h.Invoke(p, Read, key, "ignored").EndRead("48", true, nil)
		}()
	}
	wg.Wait()
	c := h.Counts()
	if c.Writes != 200 || c.Reads != 4 || c.OK != 203 || c.Unknown != 1 || c.Fail != 0 || c.Pending != 0 {
		t.Errorf("counts %+v", c)
	}
	if errs := h.Errors(); len(errs) != 1 || errs[0].Key != "k0" || errs[0].Value != "49" || !strings.Contains(errs[0].String(), "unknown") {
		t.Errorf("errors %v", errs)
	}
	// p0's last write is unknown: reading the one before is allowed; p1..p3
	// read 48 but acknowledged 49: lost.
	rep := CheckRegisters(h.Ops())
	if rep.Lost != 3 || rep.Invented != 0 || rep.Keys != 4 {
		t.Errorf("report %s\n%s", rep, strings.Join(rep.Problems, "\n"))
	}

	// A read that finds nothing records no value; a pending call stays
	// pending.
	h = NewHistory()
	h.Invoke(0, Read, "k", "").EndRead("junk", false, nil)
	h.Invoke(0, Write, "k", "1")
	ops := h.Ops()
	if ops[0].Value != "" || ops[0].Found || ops[0].Outcome != OK || ops[1].Outcome != Pending || ops[0].Complete.Before(ops[0].Invoke) {
		t.Errorf("ops %+v", ops)
	}
	if s := ops[0].String(); !strings.Contains(s, "absent") {
		t.Errorf("String() = %q", s)
	}
}

func TestEndTwicePanics(t *testing.T) {
	c := NewHistory().Invoke(0, Write, "k", "v")
	c.End(nil)
	defer func() {
		if recover() == nil {
			t.Error("second End did not panic")
		}
	}()
	c.End(nil)
}
