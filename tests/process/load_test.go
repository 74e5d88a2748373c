//go:build process

package process_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/internal/faults"
	"github.com/shoalgrid/shoal/internal/proctest"
	shoalmaps "github.com/shoalgrid/shoal/maps"
)

// Load generator and checks shared by the failure tests: writers overwrite
// their own keys with increasing counters through one client, reading each
// key just before overwriting it; every call is recorded in a
// faults.History, and at the end every key is read back and the history
// checked (internal/faults). The reads during the load matter: a write lost
// in a failover is soon overwritten, and the final read alone would miss it.

const (
	loadMap     = "failover"
	counterKey  = "counter"
	opTimeout   = 10 * time.Second // each call's own deadline
	keysPerLoad = 200
)

// dial connects a client to the cluster through seeds' data addresses.
func dial(t *testing.T, ctx context.Context, seeds ...*proctest.Proc) *client.Client {
	t.Helper()
	var addrs []string
	for _, s := range seeds {
		addrs = append(addrs, s.DataAddr)
	}
	c, err := client.Dial(ctx, client.Config{Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// load runs writers against one map until stop.
type load struct {
	m        *shoalmaps.Map
	h        *faults.History
	writers  int
	keysPer  int
	casEvery int // every casEvery-th op of a writer increments the counter (0: never)

	stopOnce sync.Once
	stop     chan struct{}
	wg       sync.WaitGroup
	started  time.Time
	stopped  time.Time

	ops          atomic.Int64 // calls made (writes, gets and CASes)
	opsAtStop    int64
	maxLatency   atomic.Int64 // longest call, in nanoseconds
	deadlineErrs atomic.Int64 // calls that ran out of their own deadline
	otherErrs    atomic.Int64 // any other error
	casAcked     atomic.Int64 // CompareAndSwap calls acknowledged as applied
	casUnknown   atomic.Int64 // CompareAndSwap calls with an unknown outcome

	errMu     sync.Mutex
	firstErrs []string
}

// startLoad starts writers on c, overwriting keysPerLoad keys split
// between them. With casEvery > 0 the counter key is set to 0 first and every
// casEvery-th op of each writer increments it by read and CompareAndSwap.
func startLoad(t *testing.T, ctx context.Context, c *client.Client, writers, casEvery int) *load {
	t.Helper()
	l := &load{
		m:        shoalmaps.New(c, loadMap),
		h:        faults.NewHistory(),
		writers:  writers,
		keysPer:  keysPerLoad / writers,
		casEvery: casEvery,
		stop:     make(chan struct{}),
		started:  time.Now(),
	}
	if casEvery > 0 {
		if err := l.m.Put(ctx, counterKey, []byte("0")); err != nil {
			t.Fatalf("init counter: %v", err)
		}
	}
	for w := range writers {
		l.wg.Add(1)
		go l.writer(w)
	}
	t.Cleanup(l.Stop) // a failed test must not leave writers behind
	return l
}

func key(w, k int) string { return fmt.Sprintf("w%d-k%03d", w, k) }

func (l *load) writer(w int) {
	defer l.wg.Done()
	seq := make([]int, l.keysPer)
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		default:
		}
		if l.casEvery > 0 && n%l.casEvery == l.casEvery-1 {
			l.increment(w)
			continue
		}
		k := n % l.keysPer
		kk := key(w, k)
		// Read the key before overwriting it: the read must return this
		// writer's last acknowledged write (or a later unknown one). A
		// lost write is caught here even though the overwrite that
		// follows would hide it from the final read.
		call := l.h.Invoke(w, faults.Read, kk, "")
		var got []byte
		var found bool
		err := l.do(func(ctx context.Context) error {
			var err error
			got, found, err = l.m.Get(ctx, kk)
			return err
		})
		call.EndRead(string(got), found, err)
		seq[k]++
		v := strconv.Itoa(seq[k])
		call = l.h.Invoke(w, faults.Write, kk, v)
		err = l.do(func(ctx context.Context) error { return l.m.Put(ctx, kk, []byte(v)) })
		call.End(err)
	}
}

// increment reads the counter and swaps it for the next value once.
func (l *load) increment(w int) {
	var cur []byte
	err := l.do(func(ctx context.Context) error {
		v, found, err := l.m.Get(ctx, counterKey)
		if err == nil && !found {
			err = errors.New("counter not found")
		}
		cur = v
		return err
	})
	if err != nil {
		return
	}
	n, err := strconv.ParseInt(string(cur), 10, 64)
	if err != nil {
		l.record(w, fmt.Errorf("counter holds %q", cur), false)
		return
	}
	var swapped bool
	err = l.do(func(ctx context.Context) error {
		var err error
		swapped, err = l.m.CompareAndSwap(ctx, counterKey, cur, []byte(strconv.FormatInt(n+1, 10)))
		return err
	})
	switch {
	case err == nil && swapped:
		l.casAcked.Add(1)
	case err != nil && faults.Classify(err) == faults.Unknown:
		l.casUnknown.Add(1)
	}
}

// do runs one call with its own deadline and counts its error.
func (l *load) do(f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	l.ops.Add(1)
	start := time.Now()
	err := f(ctx)
	if d := int64(time.Since(start)); d > l.maxLatency.Load() {
		l.maxLatency.Store(d) // racy max: good enough for a log line
	}
	if err != nil {
		l.record(-1, err, ctx.Err() != nil)
	}
	return err
}

func (l *load) record(w int, err error, deadline bool) {
	if deadline {
		l.deadlineErrs.Add(1)
	} else {
		l.otherErrs.Add(1)
	}
	l.errMu.Lock()
	defer l.errMu.Unlock()
	if len(l.firstErrs) < 10 {
		l.firstErrs = append(l.firstErrs, fmt.Sprintf("%s: %v", time.Since(l.started).Round(time.Millisecond), err))
	}
}

// Stop stops the writers and waits for their calls in flight.
func (l *load) Stop() {
	l.stopOnce.Do(func() {
		close(l.stop)
		l.wg.Wait()
		l.stopped = time.Now()
		l.opsAtStop = l.ops.Load()
	})
}

// verify stops the load, reads every key back through c and checks the
// history: no acknowledged write lost, no value invented, no error other
// than the callers' own deadlines, and (with the counter) no increment lost
// or applied twice. It returns the report for logging.
func (l *load) verify(t *testing.T, ctx context.Context) faults.Report {
	t.Helper()
	l.Stop()
	var keys []string
	for _, o := range l.h.Ops() {
		keys = append(keys, o.Key)
	}
	keys = slices.Compact(slices.Sorted(slices.Values(keys)))
	for _, k := range keys {
		call := l.h.Invoke(-1, faults.Read, k, "")
		var v []byte
		var found bool
		err := l.do(func(ctx context.Context) error {
			var err error
			v, found, err = l.m.Get(ctx, k)
			return err
		})
		call.EndRead(string(v), found, err)
	}
	rep := faults.CheckRegisters(l.h.Ops())
	c := l.h.Counts()
	secs := l.stopped.Sub(l.started).Seconds()
	t.Logf("load: %d writers, %d calls in %.1fs (%.0f/s, slowest %v); history %d writes, %d reads (%d ok, %d unknown, %d failed); errors: %d own deadline, %d other",
		l.writers, l.opsAtStop, secs, float64(l.opsAtStop)/secs, time.Duration(l.maxLatency.Load()).Round(time.Millisecond),
		c.Writes, c.Reads, c.OK, c.Unknown, c.Fail, l.deadlineErrs.Load(), l.otherErrs.Load())
	t.Logf("check: %s", rep)
	for _, p := range rep.Problems {
		t.Errorf("  %s", p)
	}
	if !rep.OK() {
		t.Errorf("acknowledged writes lost or values invented: %s", rep)
	}
	want := l.keysPer * l.writers // the counter is checked apart
	if len(keys) != want {
		t.Errorf("history covers %d keys, want %d", len(keys), want)
	}
	if l.casEvery > 0 {
		var final int64 = -1
		err := l.do(func(ctx context.Context) error {
			v, found, err := l.m.Get(ctx, counterKey)
			if err == nil && found {
				final, err = strconv.ParseInt(string(v), 10, 64)
			}
			return err
		})
		if err != nil {
			t.Errorf("read counter: %v", err)
		}
		cr := faults.CheckCounter(final, l.casAcked.Load(), l.casUnknown.Load())
		t.Logf("check: %s", cr)
		if !cr.OK() {
			t.Errorf("counter: %s", cr)
		}
	}
	if n := l.otherErrs.Load(); n > 0 {
		t.Errorf("callers saw %d errors other than their own deadlines; first: %q", n, l.firstErrs)
	} else if n := l.deadlineErrs.Load(); n > 0 {
		t.Logf("callers' own deadlines (%v) expired %d times; first: %q", opTimeout, n, l.firstErrs)
	}
	return rep
}

// settled fetches every proc's status and returns them if they form one
// cluster at rest with its replicas in place: stable (see stable), no
// member fenced, every backup synced (unsynced_backups 0 everywhere) and as
// many backup replicas as the table asks for.
func settled(ctx context.Context, procs []*proctest.Proc) ([]proctest.Status, error) {
	sts, err := stable(ctx, procs)
	if err != nil {
		return nil, err
	}
	backups := 0
	for i, st := range sts {
		if st.Fenced || st.UnsyncedBackups != 0 {
			return nil, fmt.Errorf("%s: fenced %v, %d unsynced backups", procs[i].Name, st.Fenced, st.UnsyncedBackups)
		}
		backups += st.PartitionsBackup
	}
	want := partitions * min(sts[0].TableBackups, len(procs)-1)
	if backups != want {
		return nil, fmt.Errorf("table %d: %d backup replicas, want %d", sts[0].Table.Version, backups, want)
	}
	return sts, nil
}

// waitSettled waits until settled holds and returns the statuses.
func waitSettled(t *testing.T, ctx context.Context, procs ...*proctest.Proc) []proctest.Status {
	t.Helper()
	var sts []proctest.Status
	err := proctest.Poll(ctx, 50*time.Millisecond, func(ctx context.Context) error {
		var err error
		sts, err = settled(ctx, procs)
		return err
	})
	if err != nil {
		t.Fatalf("cluster of %d did not settle: %v", len(procs), err)
	}
	return sts
}

// watchSettled polls settled in the background from now on and reports
// how long after since the procs first settled, or the last reason they had
// not when ctx ended.
func watchSettled(ctx context.Context, since time.Time, procs ...*proctest.Proc) <-chan settleResult {
	ch := make(chan settleResult, 1)
	go func() {
		var sts []proctest.Status
		err := proctest.Poll(ctx, 20*time.Millisecond, func(ctx context.Context) error {
			var err error
			sts, err = settled(ctx, procs)
			return err
		})
		ch <- settleResult{took: time.Since(since), sts: sts, err: err}
	}()
	return ch
}

type settleResult struct {
	took time.Duration
	sts  []proctest.Status
	err  error
}

// must fails the test if the procs did not settle.
func (r settleResult) must(t *testing.T, what string) settleResult {
	t.Helper()
	if r.err != nil {
		t.Fatalf("%s: survivors did not settle: %v", what, r.err)
	}
	return r
}

// runFor lets the load run for d (the one kind of sleep these tests do).
func runFor(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func names(procs []*proctest.Proc) []string {
	var out []string
	for _, p := range procs {
		out = append(out, p.Name)
	}
	return out
}

// backupTotals sums backup_records over sts, for logs.
func backupTotals(sts []proctest.Status) map[string]uint64 {
	out := map[string]uint64{}
	for _, st := range sts {
		out[st.Name] = st.BackupRecords
	}
	return out
}
