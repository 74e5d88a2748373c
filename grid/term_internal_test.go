package grid

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/quorum"
)

// bareMember is a member without network or partitions: enough for the
// coordinator's term logic and table adoption.
func bareMember(t *testing.T, name string, count int) *Member {
	return bareMemberRule(t, name, count, quorum.Rule{Mode: quorum.Majority})
}

func bareMemberRule(t *testing.T, name string, count int, rule quorum.Rule) *Member {
	t.Helper()
	cfg, err := Config{Name: name, PartitionCount: count, Quorum: &rule}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := &Member{cfg: cfg, quorum: newQuorumState(cfg), view: map[string]MemberInfo{},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), tableCond: make(chan struct{}), ctx: ctx, cancel: cancel}
	m.coord = newCoordinator(m)
	t.Cleanup(func() { m.closed.Store(true); m.wg.Wait() })
	return m
}

// TestCoordinatorTermsSeparateTwoCoordinators: the gossip views disagree —
// m1 and m2 see the oldest member m0 dead, m0 sees everyone — so m0 and m1
// both coordinate, each with a majority in its own view. Without terms
// both published cur.Version+1 with different contents (m1 without m0, m0
// with everyone) and each member kept whichever reached it first. With
// terms m1 first wins term 2 from m1 and m2; the two coordinators' next
// versions differ, the voters refuse m0's term-1 table, and m0 cannot win
// a term while the others believe m1 coordinates.
func TestCoordinatorTermsSeparateTwoCoordinators(t *testing.T) {
	const count = 4
	names := []string{"m0", "m1", "m2"}
	start := time.Now()
	ms := map[string]*Member{}
	var pms []partition.Member
	for _, n := range names {
		ms[n] = bareMember(t, n, count)
		pms = append(pms, partition.Member{Name: n, Addr: n + ":1"})
	}
	info := func(n string) MemberInfo {
		i := map[string]int{"m0": 0, "m1": 1, "m2": 2}[n]
		return MemberInfo{Name: n, Addr: n + ":1", Started: start.Add(time.Duration(i) * time.Second)}
	}
	for _, m := range ms {
		m.coord.voteTransport = func(_ context.Context, to MemberInfo, req *op.Request) (*op.Response, error) {
			g, pr, tv := ms[to.Name].grantTerm(uint64(req.Num), req.Key, req.TableVersion)
			return &op.Response{Found: g, Num: int64(pr), TableVersion: tv}, nil
		}
	}
	table := func(v uint64, members []partition.Member, replicas [][]string) *partition.Table {
		tb, err := partition.New(v, count, members, replicas)
		if err != nil {
			t.Fatal(err)
		}
		tb.Voters, tb.Epoch = names, 7
		return tb
	}
	// Term 1, won by m0, which published five tables.
	cur := table(partition.VersionOf(1, 5), pms, [][]string{{"m0", "m1"}, {"m1", "m2"}, {"m2", "m0"}, {"m0", "m2"}})
	for _, m := range ms {
		m.votes.promised, m.votes.to = 1, "m0"
		if !m.adopt(cur, "test") {
			t.Fatalf("%s refused the first table", m.cfg.Name)
		}
	}
	ms["m0"].coord.terms.term = 1
	// The views disagree.
	for _, n := range names {
		ms["m0"].view[n] = info(n)
	}
	for _, m := range []*Member{ms["m1"], ms["m2"]} {
		m.view["m1"], m.view["m2"] = info("m1"), info("m2")
		m.refreshQuorum()
	}
	ms["m0"].refreshQuorum()
	for _, n := range []string{"m0", "m1"} {
		if !ms[n].IsCoordinator() || !ms[n].mayCoordinate() {
			t.Fatalf("%s does not coordinate; the scenario needs two coordinators", n)
		}
	}
	ctx := context.Background()
	c0, c1 := ms["m0"].coord, ms["m1"].coord

	if !c1.needsTerm() {
		t.Fatal("m1 would publish without a term of its own")
	}
	if err := c1.campaign(ctx); err != nil {
		t.Fatalf("m1's campaign: %v", err)
	}
	if c1.terms.term != 2 {
		t.Fatalf("m1 won term %d, want 2", c1.terms.term)
	}
	v0, ok0 := c0.nextVersion()
	v1, ok1 := c1.nextVersion()
	if !ok0 || !ok1 {
		t.Fatalf("next versions: m0 %v, m1 %v", ok0, ok1)
	}
	// The old code numbered both cur.Version+1.
	if v0 == v1 || v0 != cur.Version+1 || v1 != partition.VersionOf(2, 1) {
		t.Fatalf("m0 would publish %s, m1 %s: want %s and 2.1", partition.VersionString(v0), partition.VersionString(v1), partition.VersionString(cur.Version+1))
	}
	fromM0 := table(v0, pms, [][]string{{"m0", "m1"}, {"m1", "m2"}, {"m2", "m0"}, {"m0", "m2"}})
	fromM1 := table(v1, pms[1:], [][]string{{"m1"}, {"m1", "m2"}, {"m2"}, {"m2"}})
	if !ms["m0"].adopt(fromM0, "m0") {
		t.Fatal("m0 refused its own table")
	}
	for _, n := range []string{"m1", "m2"} {
		if !ms[n].adopt(fromM1, "m1") {
			t.Fatalf("%s refused m1's table", n)
		}
	}
	// m0's publication reaches m2 late: refused, as would be an
	// older-numbered one that arrived before m1's.
	if ms["m2"].adopt(fromM0, "m0") {
		t.Fatal("m2 adopted the deposed coordinator's table")
	}
	// A member that granted term 2 refuses every term-1 table, even one
	// newer than its own.
	late := bareMember(t, "m4", count)
	late.votes.promised, late.votes.to = 2, "m1"
	if late.adopt(fromM0, "m0") {
		t.Fatal("a voter of term 2 adopted a term-1 table")
	}

	// m0 learns of term 2 (its publication was refused) and campaigns:
	// m1 and m2 believe m1 coordinates and refuse.
	c0.raiseAbove(2)
	if !c0.needsTerm() {
		t.Fatal("m0 would go on publishing in term 1")
	}
	if err := c0.campaign(ctx); !errors.Is(err, errNoTerm) {
		t.Fatalf("m0's campaign: %v, want %v", err, errNoTerm)
	}
	if _, ok := c0.nextVersion(); ok {
		t.Fatal("m0 may publish without a term")
	}
	// Having lost, m0 withdrew its promise to itself.
	if p := ms["m0"].promisedTerm(); p != 1 {
		t.Fatalf("m0's promise after its lost campaign: %d, want 1", p)
	}

	// Each term is granted once: m2 refuses term 2 to anyone but m1.
	if g, _, _ := ms["m2"].grantTerm(2, "m0", v1); g {
		t.Fatal("m2 granted term 2 twice")
	}
	if g, _, _ := ms["m2"].grantTerm(2, "m1", v1); !g {
		t.Fatal("m2 refused m1 asking again for the term it granted it")
	}
	// A candidate whose table is older is refused and told the newer one.
	if g, _, tv := ms["m2"].grantTerm(5, "m1", cur.Version); g || tv != v1 {
		t.Fatalf("grant to a candidate behind: %v, table %s", g, partition.VersionString(tv))
	}
	// A restarted member (no table yet) grants nothing to a candidate
	// that has one: it may have forgotten a promise.
	fresh := bareMember(t, "m2", count)
	fresh.view["m1"], fresh.view["m2"] = info("m1"), info("m2")
	if g, _, _ := fresh.grantTerm(9, "m1", v1); g {
		t.Fatal("a member without a table granted a term")
	}
	// Nor a term not above its table's.
	if !fresh.adopt(fromM1, "m1") {
		t.Fatal("the restarted member refused the current table")
	}
	if g, _, _ := fresh.grantTerm(2, "m1", v1); g {
		t.Fatal("a term at its table's term was granted")
	}
	if g, _, _ := fresh.grantTerm(3, "m1", v1); !g {
		t.Fatal("the restarted member refused the next term to the coordinator it sees")
	}
}

// TestCoordinatorWithoutTerm: with quorum rules off a coordinator that sees
// no majority of the expected size (a minority side of a split) cannot win
// a term; it coordinates without one, numbering on from the newest table
// it knows, and campaigns once it sees a majority again. A coordinator
// whose side lost voters since it won its term moves to a new one, so
// after a heal its tables rank above those the smaller side published.
func TestCoordinatorWithoutTerm(t *testing.T) {
	const count = 2
	names := []string{"m0", "m1", "m2"}
	start := time.Now()
	m := bareMemberRule(t, "m2", count, quorum.Rule{Mode: quorum.Off})
	var pms []partition.Member
	for _, n := range names {
		pms = append(pms, partition.Member{Name: n, Addr: n + ":1"})
	}
	tb, err := partition.New(partition.VersionOf(4, 9), count, pms, [][]string{{"m0"}, {"m2"}})
	if err != nil {
		t.Fatal(err)
	}
	tb.Voters = names
	if !m.adopt(tb, "test") {
		t.Fatal("table refused")
	}
	m.view["m2"] = MemberInfo{Name: "m2", Addr: "m2:1", Started: start}
	m.refreshQuorum()
	c := m.coord
	if err := c.campaign(context.Background()); err != nil {
		t.Fatalf("campaign on a minority side: %v", err)
	}
	if !c.terms.unelected || c.terms.term != 0 || c.needsTerm() {
		t.Fatalf("after the campaign: unelected %v, term %d, needsTerm %v", c.terms.unelected, c.terms.term, c.needsTerm())
	}
	if v, ok := c.nextVersion(); !ok || v != partition.VersionOf(4, 10) {
		t.Fatalf("next version %s, %v; want 4.10", partition.VersionString(v), ok)
	}
	// The others are visible again: it campaigns (and wins, alone here).
	for i, n := range []string{"m0", "m1"} {
		m.view[n] = MemberInfo{Name: n, Addr: n + ":1", Started: start.Add(time.Duration(i+1) * time.Second)}
	}
	m.refreshQuorum()
	if !c.needsTerm() {
		t.Fatal("a coordinator without a term that sees a majority does not campaign")
	}
	c.voteTransport = func(_ context.Context, to MemberInfo, req *op.Request) (*op.Response, error) {
		return &op.Response{Found: true, Num: req.Num, TableVersion: tb.Version}, nil
	}
	if err := c.campaign(context.Background()); err != nil || c.terms.term != 5 || c.terms.unelected {
		t.Fatalf("campaign with a majority: %v, term %d, unelected %v", err, c.terms.term, c.terms.unelected)
	}
	if c.needsTerm() {
		t.Fatal("a coordinator with a fresh term wants another")
	}
	// A voter is lost: the next publication is in a new term.
	delete(m.view, "m1")
	m.refreshQuorum()
	if !c.needsTerm() {
		t.Fatal("a coordinator that lost voters keeps its term")
	}
}
