// Package quorum decides whether one side of a cluster may serve a
// structure: the split-brain guard. It is pure (no IO, no clock): given a
// member's view of the cluster (the members it sees, the cluster's expected
// size and the members that left gracefully but are still counted) and a
// structure's rule, it says whether operations may proceed and, if not, how
// many members are visible and how many are needed.
//
// The expected size counts the voters: every member an agreed partition
// table included, until it leaves gracefully. It grows as members join, is
// lowered when members leave gracefully (so scaling down keeps the quorum)
// but not when they crash or become unreachable: the members a side cannot
// see may be serving on the other side of a network cut. Only voters count
// as visible, so members joining a cut-off minority cannot give it a
// majority. With the majority rule, at most one side of any cut has quorum.
package quorum

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Mode is the kind of a Rule.
type Mode uint8

// Modes.
const (
	// Off: the structure is served whatever the membership (available, not
	// split-brain safe).
	Off Mode = iota
	// Fixed: at least Rule.Min members must be visible.
	Fixed
	// Majority: more than half of the expected size must be visible.
	Majority
)

// Rule says how many members must be visible for a structure to be served.
type Rule struct {
	Mode Mode
	// Min is the minimum cluster size of a Fixed rule.
	Min int
}

// ErrRule is wrapped by ParseRule's errors.
var ErrRule = errors.New("quorum: invalid rule")

// ParseRule parses "off", "majority" or a minimum size ("3").
func ParseRule(s string) (Rule, error) {
	switch s = strings.TrimSpace(strings.ToLower(s)); s {
	case "off", "none", "0":
		return Rule{Mode: Off}, nil
	case "majority":
		return Rule{Mode: Majority}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 1<<16 {
		return Rule{}, fmt.Errorf("%w: %q: want off, majority or a minimum member count", ErrRule, s)
	}
	return Rule{Mode: Fixed, Min: n}, nil
}

// String returns the rule in ParseRule's syntax.
func (r Rule) String() string {
	switch r.Mode {
	case Fixed:
		return strconv.Itoa(r.Min)
	case Majority:
		return "majority"
	}
	return "off"
}

// Need returns how many members must be visible under r when the cluster's
// expected size is expected (0 for Off).
func (r Rule) Need(expected int) int {
	switch r.Mode {
	case Fixed:
		return r.Min
	case Majority:
		return max(expected, 1)/2 + 1
	}
	return 0
}

// View is what one member knows of the cluster.
type View struct {
	// Live is the number of live members it sees, itself included.
	Live int
	// Expected is the cluster's expected size as last agreed (the
	// partition table's).
	Expected int
	// Left is the number of members counted in Expected that have since
	// left gracefully (the agreed size has not caught up yet).
	Left int
}

// Size returns the expected size the view implies: the agreed size less
// the graceful leaves, never less than the members visible.
func (v View) Size() int {
	return max(v.Expected-v.Left, v.Live, 1)
}

// Decision is the outcome of Check.
type Decision struct {
	// OK is true when operations may proceed.
	OK bool
	// Live is the number of members visible, Need the number required and
	// Expected the expected size used.
	Live, Need, Expected int
}

// Check decides whether a structure under rule r may be served given v.
func Check(r Rule, v View) Decision {
	size := v.Size()
	need := r.Need(size)
	return Decision{OK: v.Live >= need, Live: v.Live, Need: need, Expected: size}
}

// String describes the decision for logs and errors, e.g. "1 of 3 members
// visible, 2 needed".
func (d Decision) String() string {
	return fmt.Sprintf("%d of %d members visible, %d needed", d.Live, d.Expected, d.Need)
}

// NextVoters returns the members the next agreed expected size counts
// (the voters): the previous voters, less those that left gracefully and
// are not live, plus every live member. A crashed or unreachable voter
// stays. The result is sorted and without duplicates.
func NextVoters(prev, live []string, left func(name string) bool) []string {
	isLive := make(map[string]bool, len(live))
	for _, n := range live {
		isLive[n] = true
	}
	out := make([]string, 0, len(prev)+len(live))
	for _, n := range prev {
		if isLive[n] || !left(n) {
			out = append(out, n)
		}
	}
	out = append(out, live...)
	slices.Sort(out)
	return slices.Compact(out)
}

// ViewOf returns the view of a member that sees the live members live,
// given the agreed voters and the members known to have left gracefully:
// only voters count (a member no agreed table included might be joining a
// cut-off minority), against the number of voters less the graceful
// leavers.
func ViewOf(voters, live []string, left func(name string) bool) View {
	isLive := make(map[string]bool, len(live))
	for _, n := range live {
		isLive[n] = true
	}
	v := View{Expected: len(voters)}
	for _, n := range voters {
		switch {
		case isLive[n]:
			v.Live++
		case left(n):
			v.Left++
		}
	}
	return v
}

// Pattern applies Rule to the structures whose name matches Pattern
// (path.Match syntax: "orders.*", "cache-?", or an exact name).
type Pattern struct {
	Pattern string
	Rule    Rule
}

// Rules resolves a structure's rule: the first matching pattern's, else the
// default. It caches resolutions and is safe for concurrent use.
type Rules struct {
	def      Rule
	patterns []Pattern
	cache    sync.Map     // structure name -> Rule
	cached   atomic.Int64 // entries in cache
}

// maxCachedRules bounds the cache of Rules.For: programs that make a
// structure per session or per tenant must not grow it without end; names
// past the bound are matched against the patterns on every call.
const maxCachedRules = 4096

// NewRules returns the rules, or an error for an invalid pattern.
func NewRules(def Rule, patterns []Pattern) (*Rules, error) {
	for _, p := range patterns {
		if _, err := path.Match(p.Pattern, ""); err != nil || p.Pattern == "" {
			return nil, fmt.Errorf("%w: pattern %q is not valid", ErrRule, p.Pattern)
		}
		if p.Rule.Mode == Fixed && p.Rule.Min < 1 {
			return nil, fmt.Errorf("%w: pattern %q: minimum size %d", ErrRule, p.Pattern, p.Rule.Min)
		}
	}
	return &Rules{def: def, patterns: append([]Pattern(nil), patterns...)}, nil
}

// For returns the rule of structure name.
func (rs *Rules) For(name string) Rule {
	if len(rs.patterns) == 0 {
		return rs.def
	}
	if r, ok := rs.cache.Load(name); ok {
		return r.(Rule)
	}
	r := rs.def
	for _, p := range rs.patterns {
		if ok, _ := path.Match(p.Pattern, name); ok {
			r = p.Rule
			break
		}
	}
	if rs.cached.Load() < maxCachedRules {
		if _, loaded := rs.cache.LoadOrStore(name, r); !loaded {
			rs.cached.Add(1)
		}
	}
	return r
}

// Default returns the cluster default rule.
func (rs *Rules) Default() Rule { return rs.def }

// Any reports whether any rule (default or pattern) is not Off: the
// cluster then guards its partition table with a majority too.
func (rs *Rules) Any() bool {
	if rs.def.Mode != Off {
		return true
	}
	for _, p := range rs.patterns {
		if p.Rule.Mode != Off {
			return true
		}
	}
	return false
}
