package grid

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/wire"
)

// memGuard is the member's memory guard (Config.MaxMemory): pauseWatch
// samples the Go heap in use every memSampleEvery and sets full while it is
// above the limit; the owner then refuses the operations that may grow
// state (op.Grower) in slot.execute. Requests read one atomic bool.
type memGuard struct {
	limit uint64
	full  atomic.Bool
	// used is the last sample of the heap in use, in bytes.
	used atomic.Uint64
	// samples are the runtime/metrics the sampler reads (reused: it runs
	// on one goroutine).
	samples []metrics.Sample
	// cycles is the GC cycle count at the last sample, lastGC when it last
	// changed, and collecting is set while a forced collection runs.
	cycles     uint64
	lastGC     time.Time
	collecting atomic.Bool
}

const (
	// memSampleEvery is how often the guard samples the heap (every tick
	// of pauseWatch); reading two runtime metrics costs about a
	// microsecond.
	memSampleEvery = 50 * time.Millisecond
	// memForceGCAfter is how long the guard lets the heap stay above the
	// limit without a collection before it forces one: deletes only lower
	// the heap in use once a collection has run, and a member refusing
	// writes allocates too little to trigger one soon.
	memForceGCAfter = time.Second

	metricHeapObjects = "/memory/classes/heap/objects:bytes"
	metricGCCycles    = "/gc/cycles/total:gc-cycles"
)

func newMemGuard(limit int64) *memGuard {
	if limit <= 0 {
		return nil
	}
	return &memGuard{
		limit:   uint64(limit),
		samples: []metrics.Sample{{Name: metricHeapObjects}, {Name: metricGCCycles}},
	}
}

// sample reads the heap in use and updates full. It reports whether a
// collection should be forced (the heap is above the limit and none ran
// for memForceGCAfter); the caller runs it off its own goroutine.
func (g *memGuard) sample(now time.Time) (forceGC bool) {
	metrics.Read(g.samples)
	var used, cycles uint64
	if s := g.samples[0]; s.Value.Kind() == metrics.KindUint64 {
		used = s.Value.Uint64()
	}
	if s := g.samples[1]; s.Value.Kind() == metrics.KindUint64 {
		cycles = s.Value.Uint64()
	}
	if cycles != g.cycles || g.lastGC.IsZero() {
		g.cycles, g.lastGC = cycles, now
	}
	g.used.Store(used)
	over := used > g.limit
	g.full.Store(over)
	return over && now.Sub(g.lastGC) >= memForceGCAfter && !g.collecting.Load()
}

// refusal is the owner's answer to an operation that may grow state while
// the member is above its limit.
func (g *memGuard) refusal(member string, version uint64) *op.Response {
	return &op.Response{Code: op.CodeMapFull, TableVersion: version,
		Msg: fmt.Sprintf("member %s is above its memory limit (heap in use %s, limit %s): writes that may grow state are refused until deletes free memory; reads and deletes still work",
			member, formatBytes(g.used.Load()), formatBytes(g.limit))}
}

// memSample runs the guard's sampling for pauseWatch, forcing a collection
// on a goroutine of the member's wait group when needed.
func (m *Member) memSample(now time.Time) {
	g := m.mem
	if g == nil || !g.sample(now) {
		return
	}
	if !g.collecting.CompareAndSwap(false, true) {
		return
	}
	m.wg.Add(1) // the caller holds one: Close has not finished waiting
	go func() {
		defer m.wg.Done()
		defer g.collecting.Store(false)
		runtime.GC()
	}()
}

// formatBytes renders n in binary units ("63.2MiB").
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for v := n / unit; v >= unit && exp < 5; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// MemoryGuard reports the memory guard's state: its limit in bytes (0 when
// Config.MaxMemory is off), the heap in use at its last sample, and whether
// the member refuses writes that may grow state.
func (m *Member) MemoryGuard() (limit, heapInUse uint64, full bool) {
	if m.mem == nil {
		return 0, 0, false
	}
	return m.mem.limit, m.mem.used.Load(), m.mem.full.Load()
}

// MemoryEvictions reports how many entries this member evicted as owner
// because it was above its memory guard (structures with an eviction
// policy evict instead of refusing writes).
func (m *Member) MemoryEvictions() uint64 { return m.counters.evicted.Load() }

// memEvictPerWrite is how many entries a write into a structure with an
// eviction policy evicts while the member is above its memory guard: more
// than the one it may add, so the structure shrinks while writes go on.
const memEvictPerWrite = 2

// evictForMemory lets the structure req writes to make room under memory
// pressure, if its state evicts (op.Evictor): it applies op.OpEvict as a
// sequenced mutation before req and reports true; false means the write
// must be refused. s.mu is held.
func (s *slot) evictForMemory(m *Member, b *wire.Batch, cur *partition.Table, req *op.Request, st op.State, now time.Time) bool {
	ev, ok := st.(op.Evictor)
	if !ok || !ev.Evicts(req.Name) {
		return false
	}
	ex, ok := st.(op.Executor)
	if !ok {
		return false
	}
	evict := &op.Request{Service: req.Service, Name: req.Name, Partition: s.id, Op: op.OpEvict, Num: memEvictPerWrite}
	// The write that follows waits for its own acknowledgements, which
	// backups send only after they applied this earlier record.
	if resp, _, _ := s.executeSeam(m, b, cur, evict, ex, true, now); resp != nil && resp.Num > 0 {
		m.counters.evicted.Add(uint64(resp.Num))
	}
	return true
}
