package quorum

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestCheck(t *testing.T) {
	maj, off, two := Rule{Mode: Majority}, Rule{Mode: Off}, Rule{Mode: Fixed, Min: 2}
	for _, c := range []struct {
		name       string
		r          Rule
		v          View
		ok         bool
		need, size int
	}{
		{"alone from the start", maj, View{Live: 1, Expected: 1}, true, 1, 1},
		{"three of three", maj, View{Live: 3, Expected: 3}, true, 2, 3},
		{"majority side of three", maj, View{Live: 2, Expected: 3}, true, 2, 3},
		{"cut-off member of three", maj, View{Live: 1, Expected: 3}, false, 2, 3},
		{"two crashed of three", maj, View{Live: 1, Expected: 3}, false, 2, 3},
		{"scaled down 3 to 1 gracefully", maj, View{Live: 1, Expected: 3, Left: 2}, true, 1, 1},
		{"one left gracefully, one crashed", maj, View{Live: 1, Expected: 3, Left: 1}, false, 2, 2},
		{"3 of 5", maj, View{Live: 3, Expected: 5}, true, 3, 5},
		{"2 of 5", maj, View{Live: 2, Expected: 5}, false, 3, 5},
		{"2 of 4: no side of an even split", maj, View{Live: 2, Expected: 4}, false, 3, 4},
		{"grown beyond the agreed size", maj, View{Live: 4, Expected: 3}, true, 3, 4},
		{"no table yet", maj, View{Live: 1}, true, 1, 1},
		{"off", off, View{Live: 1, Expected: 5}, true, 0, 5},
		{"fixed met", two, View{Live: 2, Expected: 5}, true, 2, 5},
		{"fixed not met", two, View{Live: 1, Expected: 1}, false, 2, 1},
	} {
		d := Check(c.r, c.v)
		if d.OK != c.ok || d.Need != c.need || d.Expected != c.size || d.Live != c.v.Live {
			t.Errorf("%s: Check(%v, %+v) = %+v; want ok %v need %d size %d", c.name, c.r, c.v, d, c.ok, c.need, c.size)
		}
	}
	if got := Check(maj, View{Live: 1, Expected: 3}).String(); got != "1 of 3 members visible, 2 needed" {
		t.Errorf("String = %q", got)
	}
}

func TestVoters(t *testing.T) {
	set := func(names ...string) func(string) bool {
		return func(n string) bool { return slices.Contains(names, n) }
	}
	none := set()
	for _, c := range []struct {
		name         string
		prev, live   []string
		left         func(string) bool
		want         []string
		viewLive     int
		viewExpected int
		viewLeft     int
		ok           bool // majority
	}{
		// no voters yet: the view counts nobody (members do not guard
		// before the first table)
		{"first table", nil, []string{"a"}, none, []string{"a"}, 0, 0, 0, false},
		{"grew", []string{"a"}, []string{"c", "a", "b"}, none, []string{"a", "b", "c"}, 1, 1, 0, true},
		{"a crash keeps the voter", []string{"a", "b", "c"}, []string{"a", "b"}, none, []string{"a", "b", "c"}, 2, 3, 0, true},
		{"two crashes", []string{"a", "b", "c"}, []string{"a"}, none, []string{"a", "b", "c"}, 1, 3, 0, false},
		{"graceful leave drops it", []string{"a", "b", "c"}, []string{"a", "b"}, set("c"), []string{"a", "b"}, 2, 3, 1, true},
		{"scaled down to one", []string{"a", "b", "c"}, []string{"a"}, set("b", "c"), []string{"a"}, 1, 3, 2, true},
		{"left then back", []string{"a", "b"}, []string{"a", "b"}, set("b"), []string{"a", "b"}, 2, 2, 0, true},
		{"newcomers on a cut-off side", []string{"a", "b", "c"}, []string{"c", "d", "e"}, none, []string{"a", "b", "c", "d", "e"}, 1, 3, 0, false},
		{"replacement of a crashed member", []string{"a", "b", "c"}, []string{"a", "b", "d"}, none, []string{"a", "b", "c", "d"}, 2, 3, 0, true},
		{"even split of four", []string{"a", "b", "c", "d"}, []string{"a", "b"}, none, []string{"a", "b", "c", "d"}, 2, 4, 0, false},
		{"duplicates", []string{"a", "a"}, []string{"a", "a"}, none, []string{"a"}, 2, 2, 0, true},
	} {
		if got := NextVoters(c.prev, c.live, c.left); !slices.Equal(got, c.want) {
			t.Errorf("%s: NextVoters = %v, want %v", c.name, got, c.want)
		}
		v := ViewOf(c.prev, c.live, c.left)
		if v.Live != c.viewLive || v.Expected != c.viewExpected || v.Left != c.viewLeft {
			t.Errorf("%s: ViewOf = %+v, want live %d expected %d left %d", c.name, v, c.viewLive, c.viewExpected, c.viewLeft)
		}
		if d := Check(Rule{Mode: Majority}, v); d.OK != c.ok {
			t.Errorf("%s: majority check of %+v = %v, want %v", c.name, v, d, c.ok)
		}
	}
}

func TestParseRule(t *testing.T) {
	for in, want := range map[string]Rule{
		"off": {Mode: Off}, "majority": {Mode: Majority}, " Majority ": {Mode: Majority},
		"3": {Mode: Fixed, Min: 3}, "0": {Mode: Off},
	} {
		got, err := ParseRule(in)
		if err != nil || got != want {
			t.Errorf("ParseRule(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseRule(got.String()); err != nil || back != got {
			t.Errorf("ParseRule(%q.String()) = %v, %v", in, back, err)
		}
	}
	for _, in := range []string{"", "most", "-1", "2.5", "99999999"} {
		if _, err := ParseRule(in); !errors.Is(err, ErrRule) {
			t.Errorf("ParseRule(%q) error = %v, want ErrRule", in, err)
		}
	}
}

func TestRules(t *testing.T) {
	rs, err := NewRules(Rule{Mode: Majority}, []Pattern{
		{Pattern: "cache-*", Rule: Rule{Mode: Off}},
		{Pattern: "orders.*", Rule: Rule{Mode: Fixed, Min: 3}},
		{Pattern: "cache-important", Rule: Rule{Mode: Majority}}, // shadowed: first match wins
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]Rule{
		"users": {Mode: Majority}, "cache-a": {Mode: Off}, "cache-important": {Mode: Off},
		"orders.eu": {Mode: Fixed, Min: 3}, "orders": {Mode: Majority},
	} {
		for range 2 { // the second lookup comes from the cache
			if got := rs.For(name); got != want {
				t.Errorf("For(%q) = %v, want %v", name, got, want)
			}
		}
	}
	if !rs.Any() {
		t.Error("Any() = false with a majority default")
	}
	offAll, _ := NewRules(Rule{}, []Pattern{{Pattern: "x", Rule: Rule{}}})
	if offAll.Any() {
		t.Error("Any() = true with every rule off")
	}
	someOn, _ := NewRules(Rule{}, []Pattern{{Pattern: "x", Rule: Rule{Mode: Majority}}})
	if !someOn.Any() {
		t.Error("Any() = false with a pattern on")
	}
	for _, bad := range []Pattern{{Pattern: "[", Rule: Rule{}}, {Pattern: "", Rule: Rule{}}, {Pattern: "a", Rule: Rule{Mode: Fixed}}} {
		if _, err := NewRules(Rule{}, []Pattern{bad}); !errors.Is(err, ErrRule) {
			t.Errorf("NewRules(%+v) error = %v, want ErrRule", bad, err)
		}
	}
}

// TestRulesCacheBounded checks that resolving many distinct names (a
// structure per session or tenant) stops growing the cache at its bound
// and still answers right past it.
func TestRulesCacheBounded(t *testing.T) {
	rs, err := NewRules(Rule{Mode: Majority}, []Pattern{{Pattern: "tmp-*", Rule: Rule{Mode: Off}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 * maxCachedRules {
		name := fmt.Sprintf("tmp-%d", i)
		if got := rs.For(name); got.Mode != Off {
			t.Fatalf("For(%q) = %v, want off", name, got)
		}
		if got := rs.For(fmt.Sprintf("s-%d", i)); got.Mode != Majority {
			t.Fatalf("For(s-%d) = %v, want majority", i, got)
		}
	}
	n := 0
	rs.cache.Range(func(any, any) bool { n++; return true })
	if n != maxCachedRules || rs.cached.Load() != maxCachedRules {
		t.Errorf("cache holds %d (counted %d), want %d", n, rs.cached.Load(), maxCachedRules)
	}
}
