package maps

import "github.com/shoalgrid/shoal/internal/iheap"

// Access bookkeeping for maps with max-idle or an eviction policy.
//
// Owner and backups must evict and expire the same entries, so every
// decision reads only replicated state: an entry's access time and use
// count change on writes (replicated records) and on the owner's flush
// records (OpTimer, idle.go), which carry the reads the owner served since
// its previous flush. Reads between two flushes are kept on the owner only
// (meta.seen, meta.reads) and count for nothing until flushed.
//
// The choice is exact rather than sampled (Redis samples a few random
// keys): random sampling needs an order of the entries, and a Go map's
// order, or a slice's after local sweeps, differs between members. A heap
// ordered by (access time, key), or by (LFU priority, access time, key),
// is a total order over replicated values, so its minimum is the same
// entry on every member, whatever history built the heap.
//
// LFU is LFU with dynamic aging (as in Squid's LFU-DA): an entry's priority
// is the map's age plus its use count, and evicting an entry raises the
// age to that entry's priority, so entries that were hot long ago do not
// stay forever.

// evictPolicy is a parsed Rule.Eviction.
type evictPolicy uint8

const (
	evictNone evictPolicy = iota
	evictLRU
	evictLFU
)

// dropReason says why the state dropped an entry by itself.
type dropReason uint8

const (
	// dropEvicted: an eviction policy made room (max-entries or the
	// member's memory guard).
	dropEvicted dropReason = iota + 1
	// dropIdle: the entry exceeded the map's max-idle.
	dropIdle
	// dropExpired: the entry's TTL passed (met while choosing a victim).
	dropExpired
)

// drop removes an entry that the state decided to remove by itself (not
// at a caller's request), for the reason why. It is the single place such
// removals go through, so a hook (entry events) can observe them; the
// decision is made alike on owner and backups.
func (s *state) drop(why dropReason, tab *table, key string) {
	var x *expiry
	if tab.exps != nil {
		x = tab.exps[key]
	}
	s.dropped[why]++
	if s.listen != nil {
		s.dropping(why, tab, key)
	}
	s.remove(tab, key, x)
}

// meta is the bookkeeping of one entry of a tracked map.
type meta struct {
	key    string // aliases the current blob's key
	access int64  // last replicated access (write or flushed read), unix nanos
	freq   int64  // uses (writes and flushed reads), for lfu
	prio   int64  // lfu priority: the map's age at the last use + freq
	ai, pi int    // positions in byAccess and byPrio (-1: not there)
	// Owner-local, not replicated until a flush: the last read served
	// since the previous flush and how many reads that was.
	seen  int64
	reads int64
	dirty bool // in policy.dirty
	gone  bool // removed while in policy.dirty
}

// policy is a tracked map's bookkeeping (table.pol).
type policy struct {
	rule  mapRule
	metas map[string]*meta
	// byAccess orders entries by (access, key) when the map has max-idle
	// or policy lru; byPrio by (prio, access, key) for lfu.
	byAccess iheap.Heap[*meta]
	byPrio   iheap.Heap[*meta]
	// dirty lists the entries read since the last flush (owner only).
	dirty []*meta
	// timerAt is when the owner's armed flush timer fires (unix nanos, 0
	// none); owner-local.
	timerAt int64
}

func newPolicy(r mapRule) *policy {
	return &policy{
		rule:     r,
		metas:    make(map[string]*meta, 1),
		byAccess: iheap.New(byAccessLess, func(m *meta, i int) { m.ai = i }),
		byPrio:   iheap.New(byPrioLess, func(m *meta, i int) { m.pi = i }),
	}
}

func (p *policy) usesAccess() bool { return p.rule.idle > 0 || p.rule.evict == evictLRU }
func (p *policy) usesPrio() bool   { return p.rule.evict == evictLFU }

// wrote records a write of key (k aliases the new blob) at now.
func (s *state) wrote(tab *table, k string, now int64, had bool) {
	p := tab.pol
	m := p.metas[k]
	if m == nil {
		m = &meta{key: k, access: now, ai: -1, pi: -1}
		p.metas[k] = m
		p.use(m, s.ages[tab.name], 1)
		if p.usesAccess() {
			p.byAccess.Push(m)
		}
		if p.usesPrio() {
			p.byPrio.Push(m)
		}
		return
	}
	// Re-point the stored key at the new blob so the old one can be freed.
	m.key = k
	p.metas[k] = m
	m.access = max(m.access, now)
	p.use(m, s.ages[tab.name], 1)
	p.fix(m)
}

// use counts n uses of m at the map's age.
func (p *policy) use(m *meta, age, n int64) {
	if p.usesPrio() {
		m.freq = min(m.freq+min(n, 1<<40), 1<<40) // far from overflow, still ordered
		m.prio = age + m.freq
	}
}

func (p *policy) fix(m *meta) {
	if m.ai >= 0 {
		p.byAccess.Fix(m.ai)
	}
	if m.pi >= 0 {
		p.byPrio.Fix(m.pi)
	}
}

// read records, on the owner, a read of key at now; the next flush
// replicates it.
func (p *policy) read(key string, now int64) {
	m := p.metas[key]
	if m == nil {
		return
	}
	m.seen = max(m.seen, now)
	m.reads++
	if !m.dirty {
		m.dirty = true
		p.dirty = append(p.dirty, m)
	}
}

// forget drops key's bookkeeping (the entry is being removed).
func (p *policy) forget(key string) {
	m := p.metas[key]
	if m == nil {
		return
	}
	delete(p.metas, key)
	if m.ai >= 0 {
		p.byAccess.Remove(m.ai)
	}
	if m.pi >= 0 {
		p.byPrio.Remove(m.pi)
	}
	m.gone = true
}

// forgetAll drops everything (the map is cleared).
func (p *policy) forgetAll() {
	for _, m := range p.metas {
		m.gone = true
	}
	clear(p.metas)
	p.byAccess.Clear()
	p.byPrio.Clear()
}

// victim returns the entry the policy evicts next, nil when none.
func (p *policy) victim() *meta {
	switch {
	case p.rule.evict == evictLFU && p.byPrio.Len() > 0:
		return p.byPrio.Items[0]
	case p.rule.evict == evictLRU && p.byAccess.Len() > 0:
		return p.byAccess.Items[0]
	}
	return nil
}

// evicts reports whether map name evicts instead of refusing.
func (s *state) evicts(name string) bool {
	if len(s.rules) == 0 {
		return false
	}
	return s.rule(s.maps[name], name).evict != evictNone
}

// evictFor evicts entries of map name until n new keys fit under its
// max-entries, and reports whether they do; false (nothing evicted that
// was live) when the map has no eviction policy.
func (s *state) evictFor(now int64, name string, n int) bool {
	if !s.evicts(name) {
		return false
	}
	for !s.roomFor(now, name, n) {
		tab := s.maps[name]
		if tab == nil || !s.evictOne(now, tab) {
			return false
		}
	}
	return true
}

// evictOne removes the policy's victim of tab; it reports false when tab
// has none. A victim whose TTL passed is reclaimed without counting: the
// choice among live entries is the same on every member, whatever their
// sweepers reclaimed.
func (s *state) evictOne(now int64, tab *table) bool {
	for {
		m := tab.pol.victim()
		if m == nil {
			return false
		}
		empties := len(tab.entries) == 1
		if tab.expired(now, m.key) {
			s.drop(dropExpired, tab, m.key)
			if empties {
				return false
			}
			continue
		}
		if tab.rule.evict == evictLFU {
			if s.ages == nil {
				s.ages = make(map[string]int64)
			}
			s.ages[tab.name] = max(s.ages[tab.name], m.prio)
		}
		s.drop(dropEvicted, tab, m.key)
		return true
	}
}

// evictN evicts up to n live entries of map name by its policy (the
// member's memory guard, op.OpEvict) and returns how many it evicted.
func (s *state) evictN(now int64, name string, n int) int {
	tab := s.maps[name]
	if tab == nil || tab.pol == nil || tab.rule.evict == evictNone {
		return 0
	}
	done := 0
	for done < n {
		if tab = s.maps[name]; tab == nil || !s.evictOne(now, tab) {
			break
		}
		done++
	}
	return done
}

// byAccessLess orders metas by (access, key): least recently used first.
func byAccessLess(a, b *meta) bool {
	if a.access != b.access {
		return a.access < b.access
	}
	return a.key < b.key
}

// byPrioLess orders metas by (prio, access, key): least valuable first.
func byPrioLess(a, b *meta) bool {
	if a.prio != b.prio {
		return a.prio < b.prio
	}
	return byAccessLess(a, b)
}
