package maps

import (
	"fmt"
	"path"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// Rule configures the maps whose names match Pattern (path.Match syntax).
// Every member must be started with the same rules: they are inputs of the
// replicated state machine (owners and backups apply them alike).
type Rule struct {
	// Pattern is a path.Match pattern over map names ("cache-*").
	Pattern string `yaml:"pattern"`
	// DefaultTTL is the TTL of writes that give none (WithTTL absent or
	// <= 0), and of entries Incr creates; 0 = entries never expire.
	DefaultTTL time.Duration `yaml:"default-ttl"`
	// MaxEntries bounds the map's entries, with eviction policy "none": a
	// write that would add a new key to a full map fails with
	// op.ErrMapFull (updates of present keys, deletes and reads keep
	// working). The bound is enforced per partition, as MaxEntries divided
	// by the partition count (rounded up), so that owners decide alone
	// and deterministically: a map whose keys spread unevenly is refused
	// somewhat before it holds MaxEntries in total. 0 = unbounded. With
	// an Eviction policy other than "none", such a write evicts an entry
	// instead of failing.
	MaxEntries int `yaml:"max-entries"`
	// MaxIdle expires an entry that was neither read nor written for that
	// long; 0 = never. The owner decides and replicates the expiry (see
	// docs/architecture.md, "Map expiry, eviction and write timestamps"):
	// an entry goes up to one flush interval (MaxIdle/8, between 10ms and
	// 1s) late, and may go up to one interval early after a failover,
	// because reads reach the backups once per interval.
	MaxIdle time.Duration `yaml:"max-idle"`
	// Eviction is what a full map does with a write of a new key: "none"
	// or "" refuses it with op.ErrMapFull, "lru" evicts the least recently
	// used entry, "lfu" the least frequently used one (with aging). A full
	// map is one at MaxEntries, or any map of a member above its memory
	// guard (grid Config.MaxMemory): maps with a policy evict instead of
	// refusing there too.
	Eviction string `yaml:"eviction"`
}

// Eviction policies (Rule.Eviction).
const (
	EvictNone = "none"
	EvictLRU  = "lru"
	EvictLFU  = "lfu"
)

// defaultPartitionCount is partition.DefaultCount (maps depends on op
// only, see internal/arch).
const defaultPartitionCount = 271

// mapRule is a Rule resolved for one partition's tables.
type mapRule struct {
	ttl   int64       // default TTL, nanoseconds; 0 = none
	max   int         // most live entries per partition; 0 = unbounded
	idle  int64       // max-idle, nanoseconds; 0 = none
	evict evictPolicy // what a full map does
}

// tracked reports whether the map's entries need access bookkeeping
// (policy, see evict.go).
func (r mapRule) tracked() bool { return r.idle > 0 || r.evict != evictNone }

// parseEviction maps a Rule.Eviction name to its policy.
func parseEviction(s string) (evictPolicy, error) {
	switch s {
	case "", EvictNone:
		return evictNone, nil
	case EvictLRU:
		return evictLRU, nil
	case EvictLFU:
		return evictLFU, nil
	}
	return evictNone, fmt.Errorf("eviction policy %q: want none, lru or lfu", s)
}

// ValidateRules checks rules: patterns that path.Match accepts, no
// negative TTL or bound.
func ValidateRules(rules []Rule) error {
	for _, r := range rules {
		if _, err := path.Match(r.Pattern, ""); err != nil || r.Pattern == "" {
			return fmt.Errorf("maps: rule pattern %q is not valid", r.Pattern)
		}
		if r.DefaultTTL < 0 || r.MaxEntries < 0 || r.MaxIdle < 0 {
			return fmt.Errorf("maps: rule %q: negative default TTL, max entries or max idle", r.Pattern)
		}
		if _, err := parseEviction(r.Eviction); err != nil {
			return fmt.Errorf("maps: rule %q: %w", r.Pattern, err)
		}
	}
	return nil
}

// resolveRules turns rules into per-partition rules, first match wins.
func resolveRules(rules []Rule, partitions int) []resolvedRule {
	if len(rules) == 0 {
		return nil
	}
	if partitions <= 0 {
		partitions = defaultPartitionCount
	}
	out := make([]resolvedRule, 0, len(rules))
	for _, r := range rules {
		ev, _ := parseEviction(r.Eviction) // ValidateRules reports a bad one; it acts as none
		mr := mapRule{ttl: int64(max(r.DefaultTTL, 0)), idle: int64(max(r.MaxIdle, 0)), evict: ev}
		if r.MaxEntries > 0 {
			mr.max = (r.MaxEntries + partitions - 1) / partitions
		}
		out = append(out, resolvedRule{pattern: r.Pattern, rule: mr})
	}
	return out
}

type resolvedRule struct {
	pattern string
	rule    mapRule
}

// ruleFor returns the rule of map name (the zero rule when none matches).
// It is called when a map's table is created, not per request.
func (s *state) ruleFor(name string) mapRule {
	for _, r := range s.rules {
		if ok, _ := path.Match(r.pattern, name); ok {
			return r.rule
		}
	}
	return mapRule{}
}

// rule returns the rule of map name: its table's, or a lookup when the map
// has no table yet (the write at hand is about to create it).
func (s *state) rule(tab *table, name string) mapRule {
	if tab != nil {
		return tab.rule
	}
	if len(s.rules) == 0 {
		return mapRule{}
	}
	return s.ruleFor(name)
}

// defaultAt applies the map's default TTL to a write that gave none (at 0).
func (s *state) defaultAt(now int64, name string, at int64) int64 {
	if at != 0 || len(s.rules) == 0 {
		return at
	}
	r := s.rule(s.maps[name], name)
	if r.ttl == 0 {
		return 0
	}
	if now > 0 && r.ttl > 1<<63-1-now {
		return 1<<63 - 1
	}
	return now + r.ttl
}

// roomFor reports whether map name can take adding new keys: n of them
// (assumed absent). Deterministic: it counts live entries at now, which
// owners and backups agree on whatever their sweepers did.
func (s *state) roomFor(now int64, name string, n int) bool {
	if len(s.rules) == 0 || n == 0 {
		return true
	}
	tab := s.maps[name]
	r := s.rule(tab, name)
	if r.max == 0 {
		return true
	}
	if tab == nil {
		return n <= r.max
	}
	return len(tab.entries)+n <= r.max || s.live(now, tab)+n <= r.max
}

// mapFull is the answer to a write of a new key into a full map.
func mapFull(name string, r mapRule) *op.Response {
	return fail(op.CodeMapFull, "map %s holds its maximum of %d entries in this partition (max-entries, eviction policy none)", op.Quote(name), r.max)
}

// refuseNew answers a write of key into map name when that key is new and
// the map is full; nil when the write may go ahead.
func (s *state) refuseNew(now int64, name, key string) *op.Response {
	if s.roomFor(now, name, 1) {
		return nil
	}
	if _, _, _, ok := s.lookup(now, name, key); ok {
		return nil // an update adds nothing
	}
	if s.evictFor(now, name, 1) {
		return nil
	}
	return mapFull(name, s.rule(s.maps[name], name))
}

// refuseNewAll is refuseNew for a put-all: the batch is refused whole when
// its new keys do not all fit.
func (s *state) refuseNewAll(now int64, name string, es []kv) *op.Response {
	if s.roomFor(now, name, len(es)) || s.rule(s.maps[name], name).evict != evictNone {
		return nil // an evicting map makes room key by key
	}
	fresh := make(map[string]struct{}, len(es))
	for _, e := range es {
		if _, _, _, ok := s.lookup(now, name, e.key); !ok {
			fresh[e.key] = struct{}{}
		}
	}
	if s.roomFor(now, name, len(fresh)) {
		return nil
	}
	return mapFull(name, s.rule(s.maps[name], name))
}
