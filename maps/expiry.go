package maps

import (
	"github.com/shoalgrid/shoal/internal/iheap"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// Owner-driven TTL expiry of listened maps.
//
// An unlistened map expires by every member's own clock: reads treat an
// expired entry as absent and the sweeper (Sweep) reclaims it, silently and
// cheaply. A listened map (one with a listen record, events.go) must give
// one expired event per expiring entry, numbered like its other changes, so
// there the owner decides when an expired entry leaves: it arms a timer
// (ttlTimerKey) for the earliest expiry among the map's entries; the timer
// arrives as OpTimer, a sequenced mutation, into which the owner writes the
// keys whose expiry passed by the record's time (Request.Value, at most
// ttlPerRecord of them, soonest first). Owner and backups then remove
// those keys and number one expired event for each, whether or not a
// backup still holds the entry, so the numbering stays equal even where a
// replica lost an expired entry earlier (its sweeper, on a clock ahead of
// the owner's, reclaimed it just before the map became listened; or it
// restored a snapshot of an older version, which left expired entries
// out; snapshots now carry a listened map's expired entries, see
// encodeSnapshot). Until then reads treat the entry as absent, as before, and Sweep
// leaves it stored. The owner arms at most one record per ttlEvery (an
// entry's event comes up to ttlEvery after its expiry) unless a record left
// due keys behind, so many entries expiring together take few records.
//
// A write that meets a stored expired entry before the owner's record
// (the key is written again within ttlEvery of its expiry, or Clear) still
// reclaims it on the spot with an unnumbered expired event from the owner:
// a backup may no longer hold such an entry, so numbering it could not be
// replayed alike.

const (
	// ttlTimerKey is the Key of the TTL expiry timer (the max-idle flush
	// timer of the same map has Key "").
	ttlTimerKey = "ttl"
	// ttlEvery is the shortest interval between two expiry records of a
	// map in a partition, while no record left due keys behind.
	ttlEvery = 100 * time.Millisecond
	// ttlPerRecord bounds the keys one expiry record removes.
	ttlPerRecord = 1000
)

// listened reports whether map name has a listen record (its TTL expiry
// is the owner's decision).
func (s *state) listened(name string) bool {
	return s.listen != nil && s.listen[name] != nil
}

// lookupRead is lookup for operations that only read: an expired entry of
// a listened map is absent but stays stored until the owner's expiry
// record removes it (with its event).
func (s *state) lookupRead(now int64, name, key string) (tab *table, b blob, ok bool) {
	if s.listen != nil && s.listen[name] != nil {
		if tab = s.maps[name]; tab != nil && tab.expired(now, key) {
			return tab, blob{}, false
		}
	}
	tab, b, _, ok = s.lookup(now, name, key)
	return tab, b, ok
}

// sweepUnlistened is Sweep while some map is listened: it reclaims up to
// max expired entries of the other maps, visiting only the expired part of
// the heap (listened maps' expired entries wait there for the owner's
// record, at most ttlPerRecord per map per record).
func (s *state) sweepUnlistened(now int64, max int) int {
	var due []*expiry
	collectExpired(s.exp.Items, now, 0, max, func(x *expiry) bool { return s.listen[x.tab.name] == nil }, &due)
	for _, x := range due {
		s.remove(x.tab, x.key, x)
	}
	return len(due)
}

// collectExpired appends to out, up to max of them, the items at or below
// index i that expired by now and satisfy keep.
func collectExpired(h []*expiry, now int64, i, max int, keep func(*expiry) bool, out *[]*expiry) {
	if i >= len(h) || h[i].at > now || len(*out) >= max {
		return
	}
	if keep(h[i]) {
		*out = append(*out, h[i])
	}
	collectExpired(h, now, 2*i+1, max, keep, out)
	collectExpired(h, now, 2*i+2, max, keep, out)
}

// earliestOf returns the earliest expiry among tab's entries at or below
// index i that is before best (best when none): a subtree whose root is
// not before best is skipped, and so is everything below tab's own item.
func earliestOf(h []*expiry, tab *table, i int, best int64) int64 {
	if i >= len(h) || h[i].at >= best {
		return best
	}
	if h[i].tab == tab {
		return h[i].at
	}
	best = earliestOf(h, tab, 2*i+1, best)
	return earliestOf(h, tab, 2*i+2, best)
}

// dueOf returns tab's entries expired by now, soonest first (then by key),
// at most max of them. It walks the heap best first, so it visits the
// expired items it returns and those of other maps that expire sooner,
// not every expired item: a backlog of due entries costs each record
// O(max log max), not a pass over the whole backlog.
func (s *state) dueOf(now int64, tab *table, max int) []*expiry {
	h := s.exp.Items
	var due []*expiry
	// frontier holds the heap indices still to visit, soonest first.
	frontier := iheap.New(func(i, j int) bool { return h[i].at < h[j].at }, nil)
	push := func(i int) {
		if i < len(h) && h[i].at <= now {
			frontier.Push(i)
		}
	}
	push(0)
	for frontier.Len() > 0 && len(due) < max {
		i := frontier.Pop()
		if h[i].tab == tab {
			due = append(due, h[i])
		}
		push(2*i + 1)
		push(2*i + 2)
	}
	slices.SortFunc(due, func(a, b *expiry) int {
		if a.at != b.at {
			if a.at < b.at {
				return -1
			}
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
	return due
}

// dropExpiredSilently removes the expired entries of map name without
// events, alike on every replica: done when the map becomes listened, so
// that from then on owner and backups hold the same expired entries (those
// expiring later), whatever their sweepers reclaimed before.
func (s *state) dropExpiredSilently(now int64, name string) {
	tab := s.maps[name]
	if tab == nil || tab.exps == nil {
		return
	}
	for _, x := range s.dueOf(now, tab, math.MaxInt) {
		s.remove(x.tab, x.key, x)
	}
}

// armTTL asks, on the owner, for the expiry timer of listened map name
// after req changed it, when req may have added an earlier expiry than the
// armed timer's, or that timer looks lost.
func (s *state) armTTL(x *op.Exec, req *op.Request) {
	rec := s.listen[req.Name]
	if rec == nil {
		return
	}
	tab := s.maps[req.Name]
	if tab == nil || tab.exps == nil {
		return
	}
	now := x.Now.UnixNano()
	lost := rec.ttlAt != 0 && now-rec.ttlAt >= int64(timerLostAfter)
	switch {
	case lost || rec.ttlAt == 0 || req.Op == OpPutAll || req.Op == OpMerge || req.Op == OpListen:
		s.armTTLAt(x, rec, tab, earliestOf(s.exp.Items, tab, 0, math.MaxInt64), lost)
	case req.Op == OpPut || req.Op == OpPutIfAbsent || req.Op == OpReplace || req.Op == OpCompareAndSwap || req.Op == OpIncr:
		if e := tab.exps[req.Key]; e != nil {
			s.armTTLAt(x, rec, tab, e.at, false)
		}
	}
}

// armTTLAt arms the expiry timer for an entry expiring at at (MaxInt64:
// none), no sooner than ttlEvery from now, unless an armed timer fires no
// later (and is not lost).
func (s *state) armTTLAt(x *op.Exec, rec *listenRec, tab *table, at int64, lost bool) {
	if at == math.MaxInt64 {
		return
	}
	now := x.Now.UnixNano()
	want := max(at, satAdd(now, int64(ttlEvery)))
	if rec.ttlAt != 0 && rec.ttlAt <= want && !lost {
		return
	}
	rec.ttlAt = want
	x.Timer(tab.name, ttlTimerKey, time.Unix(0, want))
}

// ttlTimer applies an expiry record (OpTimer with ttlTimerKey): on the
// owner it first writes the due keys of the map into req.Value; then owner
// and backups remove them, each with a numbered expired event. Num in the
// response: how many keys the record named.
func (s *state) ttlTimer(x *op.Exec, req *op.Request) *op.Response {
	if req.Name == "" {
		return fail(op.CodeBadRequest, "map: timer: empty map name")
	}
	t := x.Now.UnixNano()
	s.observe(t)
	rec := s.listen[req.Name]
	tab := s.maps[req.Name]
	if x.Owner {
		req.Value = nil
		if rec != nil {
			if req.Num == rec.ttlAt {
				rec.ttlAt = 0 // this is the armed timer: arm the next
			}
			if tab != nil && tab.exps != nil {
				if due := s.dueOf(t, tab, ttlPerRecord); len(due) > 0 {
					keys := make([]string, len(due))
					for i, d := range due {
						keys[i] = d.key
					}
					req.Value = encodeKeys(keys)
				}
			}
		}
	}
	var keys []string
	if len(req.Value) > 0 {
		var err error
		if keys, err = decodeKeys(req.Value); err != nil {
			return fail(op.CodeBadRequest, "map: timer: %v", err)
		}
	}
	s.expiring = true
	for _, k := range keys {
		if tab = s.maps[req.Name]; tab != nil && tab.entries[k].p != nil && tab.expired(t, k) {
			s.drop(dropExpired, tab, k)
		} else if s.listen != nil {
			// This replica lost the entry earlier (see the file
			// comment): keep the owner's numbering.
			s.changed(req.Name, evExpired, k, nil)
		}
	}
	s.expiring = false
	if x.Owner {
		if rec = s.listen[req.Name]; rec != nil {
			if tab = s.maps[req.Name]; tab != nil && tab.exps != nil {
				next := earliestOf(s.exp.Items, tab, 0, math.MaxInt64)
				if len(keys) == ttlPerRecord && next <= t {
					// More are due: the next record right away.
					rec.ttlAt = t
					x.Timer(tab.name, ttlTimerKey, time.Unix(0, t))
				} else {
					s.armTTLAt(x, rec, tab, next, false)
				}
			}
		}
	}
	return &op.Response{Num: int64(len(keys))}
}
