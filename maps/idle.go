package maps

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/op"
)

// Max-idle expiry and the flush of reads, decided by the owner and
// replicated (see evict.go for the bookkeeping).
//
// Reads are not replicated, so the owner keeps the reads it served (per
// entry: the latest and how many) and flushes them with a timer: the timer
// arrives as OpTimer, a sequenced mutation, into which the owner writes
// the reads since the previous flush (Request.Value, the core replicates
// the request as Execute left it). Owner and backups apply the flushed
// reads to the entries' access times and then drop the entries that have
// been idle for the map's max-idle at the record's time. The owner arms
// the timer for the earlier of the next flush (when reads are pending)
// and the moment the least recently used entry becomes idle, but at most
// one record per flush interval: an idle entry goes at most one flush
// interval late. A read of an entry in the last flush interval before a
// failover is lost with the old owner, so that entry may expire up to one
// flush interval early on the new owner.

var (
	_ op.Executor  = (*state)(nil)
	_ op.OwnerHook = (*state)(nil)
	_ op.Evictor   = (*state)(nil)
)

const (
	// flushMin and flushMax bound the flush interval, max-idle/8.
	flushMin = 10 * time.Millisecond
	flushMax = time.Second
	// timerLostAfter is how long past its time an armed timer may stay
	// unfired before the owner arms another (a timer refused while the
	// partition was handed over or quorum was lost is dropped).
	timerLostAfter = 5 * time.Second
	// evictPerWrite is what OpEvict asks for when the core sends none.
	evictPerWrite = 1
)

// flushEvery is the interval at which the owner replicates reads of the map.
func (r mapRule) flushEvery() int64 {
	if r.idle <= 0 {
		return int64(flushMax)
	}
	return int64(min(max(time.Duration(r.idle/8), flushMin), flushMax))
}

// Execute executes one map operation (op.Executor): the map operations,
// OpTimer (flush and max-idle expiry; with Key ttlTimerKey, the TTL expiry
// record of a listened map, expiry.go) and OpEvict. On the owner it arms
// the map's timers when the map has max-idle or an eviction policy, or
// listeners and entries with a TTL.
func (s *state) Execute(x *op.Exec, req *op.Request) *op.Response {
	if req == nil {
		return fail(op.CodeBadRequest, "map: nil request")
	}
	// Entry events (events.go) are emitted through x while it runs.
	s.x = x
	defer func() { s.x = nil }()
	var resp *op.Response
	switch req.Op {
	case op.OpTimer:
		if req.Key == ttlTimerKey {
			return s.ttlTimer(x, req)
		}
		resp = s.timer(x, req)
	case op.OpEvict:
		if req.Name == "" || req.Num < 0 {
			return fail(op.CodeBadRequest, "map: evict: empty map name or negative count")
		}
		t := x.Now.UnixNano()
		s.observe(t)
		n := req.Num
		if n == 0 {
			n = evictPerWrite
		}
		resp = &op.Response{Num: int64(s.evictN(t, req.Name, int(min(n, math.MaxInt32))))}
	default:
		resp = s.Apply(x.Now, req)
	}
	// A refusal changed nothing and must stay free of effects (the core
	// would replicate a failed call that recorded some).
	if x.Owner && s.listen != nil && resp.Code == op.OK && req.Op != op.OpTimer {
		s.armTTL(x, req)
	}
	if x.Owner && len(s.rules) != 0 && resp.Code == op.OK {
		if tab := s.maps[req.Name]; tab != nil && tab.pol != nil {
			s.arm(x, tab)
		}
	}
	return resp
}

// BecameOwner re-arms the timers of the tracked maps and the expiry
// timers of the listened ones (op.OwnerHook).
func (s *state) BecameOwner(x *op.Exec) {
	for _, tab := range s.maps {
		if tab.pol != nil {
			tab.pol.timerAt = 0
			s.arm(x, tab)
		}
		if rec := s.listen[tab.name]; rec != nil {
			rec.ttlAt = 0
			if tab.exps != nil {
				s.armTTLAt(x, rec, tab, earliestOf(s.exp.Items, tab, 0, math.MaxInt64), false)
			}
		}
	}
}

// Evicts reports whether map name has an eviction policy (op.Evictor).
func (s *state) Evicts(name string) bool { return s.evicts(name) }

// arm asks for the map's timer, on the owner, when it has work due: pending
// reads to flush or an entry that becomes idle; nothing when a timer that
// fires soon enough is already armed.
func (s *state) arm(x *op.Exec, tab *table) {
	p := tab.pol
	now := x.Now.UnixNano()
	want := int64(math.MaxInt64)
	if len(p.dirty) > 0 {
		want = now + p.rule.flushEvery()
	}
	if p.rule.idle > 0 && p.byAccess.Len() > 0 {
		a := p.byAccess.Items[0].access
		if a > math.MaxInt64-p.rule.idle {
			a = math.MaxInt64 - p.rule.idle
		}
		// At most one expiry record per flush interval: entries whose
		// deadlines follow closely go together, up to an interval late.
		want = min(want, max(a+p.rule.idle, now+p.rule.flushEvery()))
	}
	if want == math.MaxInt64 {
		return
	}
	if p.timerAt != 0 && p.timerAt <= want && now-p.timerAt < int64(timerLostAfter) {
		return
	}
	p.timerAt = want
	x.Timer(tab.name, "", time.Unix(0, want))
}

// timer applies OpTimer: on the owner it first writes the reads since the
// last flush into req.Value (the replicated record); then owner and
// backups apply those reads and drop the entries idle for max-idle.
// Num in the response: how many entries expired.
func (s *state) timer(x *op.Exec, req *op.Request) *op.Response {
	if req.Name == "" {
		return fail(op.CodeBadRequest, "map: timer: empty map name")
	}
	t := x.Now.UnixNano()
	s.observe(t)
	tab := s.maps[req.Name]
	if x.Owner {
		req.Value = nil
		if tab != nil && tab.pol != nil {
			req.Value = tab.pol.flush()
			if req.Num == tab.pol.timerAt {
				tab.pol.timerAt = 0 // this is the armed timer: arm the next
			}
		}
	}
	if len(req.Value) > 0 {
		reads, err := decodeReads(req.Value)
		if err != nil {
			return fail(op.CodeBadRequest, "map: timer: %v", err)
		}
		if tab != nil && tab.pol != nil {
			s.applyReads(t, tab, reads)
		}
	}
	return &op.Response{Num: int64(s.expireIdle(t, req.Name))}
}

// read is one flushed read: an entry's latest read and how many reads.
type read struct {
	key   string
	at    int64
	count int64
}

// flush returns the owner's pending reads as a payload (nil when none) and
// forgets them.
func (p *policy) flush() []byte {
	rs := make([]read, 0, len(p.dirty))
	for _, m := range p.dirty {
		if !m.gone {
			rs = append(rs, read{key: m.key, at: m.seen, count: m.reads})
		}
		m.seen, m.reads, m.dirty = 0, 0, false
	}
	clear(p.dirty)
	p.dirty = p.dirty[:0]
	if len(rs) == 0 {
		return nil
	}
	return encodeReads(rs)
}

// applyReads counts flushed reads as accesses of the live entries they
// name (an entry whose TTL passed meanwhile is skipped alike everywhere).
func (s *state) applyReads(now int64, tab *table, rs []read) {
	p := tab.pol
	age := s.ages[tab.name]
	for _, r := range rs {
		m := p.metas[r.key]
		if m == nil || tab.expired(now, r.key) {
			continue
		}
		m.access = max(m.access, min(r.at, now))
		p.use(m, age, max(r.count, 1))
		p.fix(m)
	}
}

// expireIdle drops the entries of map name idle for its max-idle at now
// and returns how many.
func (s *state) expireIdle(now int64, name string) int {
	n := 0
	for {
		tab := s.maps[name]
		if tab == nil || tab.pol == nil || tab.rule.idle == 0 || tab.pol.byAccess.Len() == 0 {
			return n
		}
		m := tab.pol.byAccess.Items[0]
		if m.access > now-tab.rule.idle {
			return n
		}
		if tab.expired(now, m.key) {
			s.drop(dropExpired, tab, m.key)
			continue
		}
		s.drop(dropIdle, tab, m.key)
		n++
	}
}

// encodeReads writes flushed reads as a msgpack array of [key, at, count].
func encodeReads(rs []read) []byte {
	size := 5
	for _, r := range rs {
		size += 24 + len(r.key)
	}
	return encode(size, func(e *msgpack.Encoder) {
		_ = e.EncodeArrayLen(len(rs))
		for _, r := range rs {
			_ = e.EncodeArrayLen(3)
			_ = e.EncodeString(r.key)
			_ = e.EncodeInt(r.at)
			_ = e.EncodeInt(r.count)
		}
	})
}

// decodeReads decodes an encodeReads payload (peer bytes: every length is
// checked against the payload).
func decodeReads(b []byte) ([]read, error) {
	var rs []read
	err := decodeAll(b, func(d *decoder) error {
		n, err := d.length(d.DecodeArrayLen())
		if err != nil || n < 0 {
			return err
		}
		rs = make([]read, 0, n)
		for range n {
			f, err := d.DecodeArrayLen()
			if err != nil {
				return err
			}
			if f != 3 {
				return fmt.Errorf("read has %d fields, want 3", f)
			}
			k, err := d.string()
			if err != nil {
				return err
			}
			at, err := d.DecodeInt64()
			if err != nil {
				return err
			}
			c, err := d.DecodeInt64()
			if err != nil {
				return err
			}
			if c < 0 {
				return errors.New("negative read count")
			}
			rs = append(rs, read{key: k, at: at, count: c})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode reads: %w", err)
	}
	return rs, nil
}
