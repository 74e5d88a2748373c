//go:build process

package process_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/internal/netcut"
	"github.com/shoalgrid/shoal/internal/proctest"
	shoallocks "github.com/shoalgrid/shoal/locks"
	shoalmaps "github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	shoalqueues "github.com/shoalgrid/shoal/queues"
	"github.com/shoalgrid/shoal/sysop"
)

// Network-partition tests: members on distinct loopback addresses
// (127.0.0.11, ...), clients on their own (127.0.0.51, ...), and iptables
// rules (internal/netcut) that cut chosen sides. They skip unless run as
// root with iptables (CI installs it).

// partitionOpTimeout is each write's own deadline in these tests.
const partitionOpTimeout = 2 * time.Second

// startClusterAt starts n members n1..nn on netcut.Addr(1..n), each
// joining n1, and waits until they are settled.
func startClusterAt(t *testing.T, ctx context.Context, n int, extra ...string) []*proctest.Proc {
	t.Helper()
	var procs []*proctest.Proc
	for i := range n {
		var seeds []*proctest.Proc
		if i > 0 {
			seeds = procs[:1]
		}
		procs = append(procs, proctest.MemberAt(t, "n"+strconv.Itoa(i+1), netcut.Addr(i+1), seeds, extra...))
	}
	for _, p := range procs {
		if err := p.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitSettled(t, ctx, procs...)
	return procs
}

// dialFrom connects a client whose connections leave from ip.
func dialFrom(t *testing.T, ctx context.Context, ip string, seeds ...*proctest.Proc) *client.Client {
	t.Helper()
	var addrs []string
	for _, s := range seeds {
		addrs = append(addrs, s.DataAddr)
	}
	c, err := client.Dial(ctx, client.Config{Addrs: addrs, LocalIP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ipsOf returns the IPs of procs' data addresses.
func ipsOf(procs ...*proctest.Proc) []string {
	var out []string
	for _, p := range procs {
		h, _, _ := net.SplitHostPort(p.DataAddr)
		out = append(out, h)
	}
	return out
}

// ack is one acknowledged write.
type ack struct {
	key, value string
	start, at  time.Time // when the call began and when it was acknowledged
}

// writerSet runs writers that put unique keys (each written once) until
// stopped, and records every acknowledged write and every error by kind.
type writerSet struct {
	name string
	stop chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	acks   []ack
	quorum int // op.ErrQuorum answers
	other  int // any other error (timeouts, unknown outcomes)
	first  map[string]string
}

// startWriters starts n writers on map name through c; keep filters the
// keys written (nil: all).
func startWriters(ctx context.Context, c *client.Client, label, name string, n int, keep func(string) bool) *writerSet {
	ws := &writerSet{name: label, stop: make(chan struct{}), first: map[string]string{}}
	m := shoalmaps.New(c, name)
	for w := range n {
		ws.wg.Add(1)
		go func() {
			defer ws.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-ws.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				key := fmt.Sprintf("%s-w%d-%d", label, w, i)
				if keep != nil && !keep(key) {
					continue
				}
				val := "v" + key
				start := time.Now()
				cctx, cancel := context.WithTimeout(ctx, partitionOpTimeout)
				err := m.Put(cctx, key, []byte(val))
				cancel()
				ws.mu.Lock()
				switch {
				case err == nil:
					ws.acks = append(ws.acks, ack{key, val, start, time.Now()})
				case errors.Is(err, op.ErrQuorum):
					ws.quorum++
					ws.noteFirst("quorum", err)
				default:
					ws.other++
					ws.noteFirst("other", err)
				}
				ws.mu.Unlock()
			}
		}()
	}
	return ws
}

func (ws *writerSet) noteFirst(kind string, err error) {
	if _, ok := ws.first[kind]; !ok {
		ws.first[kind] = err.Error()
	}
}

// halt stops the writers and waits for them.
func (ws *writerSet) halt() {
	select {
	case <-ws.stop:
	default:
		close(ws.stop)
	}
	ws.wg.Wait()
}

// counts returns the acknowledged writes ending after from (and before
// to, if set), and the ErrQuorum and other errors so far.
func (ws *writerSet) counts(from, to time.Time) (acked, quorum, other int, last time.Time) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, a := range ws.acks {
		if a.at.After(from) && (to.IsZero() || a.at.Before(to)) {
			acked++
			if a.at.After(last) {
				last = a.at
			}
		}
	}
	return acked, ws.quorum, ws.other, last
}

// startedAfter counts the writes whose call began after from and that
// were acknowledged before to: a call in flight when a cut begins may still
// be acknowledged during it, if its backup had applied it already.
func (ws *writerSet) startedAfter(from, to time.Time) int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	n := 0
	for _, a := range ws.acks {
		if a.start.After(from) && a.at.Before(to) {
			n++
		}
	}
	return n
}

// firstAckStartedAfter returns when the first write begun after from was
// acknowledged.
func (ws *writerSet) firstAckStartedAfter(from time.Time) (time.Time, bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	var first time.Time
	for _, a := range ws.acks {
		if a.start.After(from) && (first.IsZero() || a.at.Before(first)) {
			first = a.at
		}
	}
	return first, !first.IsZero()
}

// lost reads back every acknowledged write through c and returns how many
// are missing or changed.
func (ws *writerSet) lost(t *testing.T, ctx context.Context, c *client.Client, name string) (lost, total int) {
	t.Helper()
	m := shoalmaps.New(c, name)
	ws.mu.Lock()
	acks := append([]ack(nil), ws.acks...)
	ws.mu.Unlock()
	for _, a := range acks {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, ok, err := m.Get(cctx, a.key)
		cancel()
		if err != nil {
			t.Fatalf("read back %s: %v", a.key, err)
		}
		if !ok || string(v) != a.value {
			lost++
			if lost <= 5 {
				t.Errorf("%s: acknowledged write %s=%s reads back %q (found %v)", ws.name, a.key, a.value, v, ok)
			}
		}
	}
	return lost, len(acks)
}

// waitQuorum polls p's /status until its quorum flag is want.
func waitQuorum(t *testing.T, ctx context.Context, p *proctest.Proc, want bool) time.Time {
	t.Helper()
	err := proctest.Poll(ctx, 20*time.Millisecond, func(ctx context.Context) error {
		st, err := p.Status(ctx)
		if err != nil {
			return err
		}
		if st.Quorum != want {
			return fmt.Errorf("%s: quorum %v (%d of %d visible, %d needed)", p.Name, st.Quorum, st.QuorumVisible, st.ExpectedSize, st.QuorumNeeded)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// checkNoQuorumSurface checks that a member without quorum says so on
// /readyz and /metrics.
func checkNoQuorumSurface(t *testing.T, ctx context.Context, p *proctest.Proc) {
	t.Helper()
	if code, body, err := p.Readyz(ctx); err != nil || code != 503 || !strings.Contains(body, "no quorum") {
		t.Errorf("%s: /readyz while cut off: %d %q %v, want 503 no quorum", p.Name, code, body, err)
	}
	mt, err := p.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mt["shoal_quorum"] != 0 {
		t.Errorf("%s: shoal_quorum = %v while cut off, want 0", p.Name, mt["shoal_quorum"])
	}
}

// memberConnsBound checks, from /proc/net/tcp, that every TCP connection
// to a member's gossip or data port comes from a member address: a dialer
// that did not bind its member's address would connect from 127.0.0.1,
// and cuts by address would miss its traffic.
func memberConnsBound(t *testing.T, procs ...*proctest.Proc) int {
	t.Helper()
	ports := map[string]bool{}
	ips := map[string]bool{}
	for _, p := range procs {
		for _, a := range []string{p.GossipAddr, p.DataAddr} {
			h, port, _ := net.SplitHostPort(a)
			ports[a] = true
			ips[h] = true
			_ = port
		}
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	seen := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "01" { // established only
			continue
		}
		local, remote := procAddr(f[1]), procAddr(f[2])
		for _, pair := range [][2]string{{local, remote}, {remote, local}} {
			server, peer := pair[0], pair[1]
			if !ports[server] {
				continue
			}
			seen++
			h, _, _ := net.SplitHostPort(peer)
			if !ips[h] {
				t.Errorf("connection to member port %s comes from %s, not a member address", server, peer)
			}
		}
	}
	return seen
}

// procAddr decodes an IPv4 "0B00007F:1F90" address of /proc/net/tcp.
func procAddr(s string) string {
	h, p, ok := strings.Cut(s, ":")
	if !ok || len(h) != 8 {
		return ""
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return ""
	}
	port, _ := strconv.ParseUint(p, 16, 16)
	return net.JoinHostPort(net.IPv4(b[3], b[2], b[1], b[0]).String(), strconv.Itoa(int(port)))
}

// TestPartitionCutOffMember is issue 10's scenario: three members (default
// reliable profile: one synchronous backup, majority quorum), member 3 and
// its client cut from members 1 and 2 and their client. The cut-off
// member acknowledges no write after the window, the majority keeps
// serving, and after the heal every acknowledged write is readable. A map
// without backups (but with the majority rule) measures the window the
// owner lease leaves.
func TestPartitionCutOffMember(t *testing.T) {
	netcut.Skip(t)
	ctx := ctxT(t, 120*time.Second)
	cfg := filepath.Join(t.TempDir(), "gridnode.yaml")
	if err := os.WriteFile(cfg, []byte("structures:\n  - pattern: fast\n    backup-count: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	procs := startClusterAt(t, ctx, 3, "--config", cfg)
	if n := memberConnsBound(t, procs...); n == 0 {
		t.Fatal("no member connection found in /proc/net/tcp")
	} else {
		t.Logf("%d member connections, all from member addresses", n)
	}
	n1, n2, n3 := procs[0], procs[1], procs[2]
	minor := dialFrom(t, ctx, netcut.ClientAddr(1), n3)
	major := dialFrom(t, ctx, netcut.ClientAddr(2), n1)
	table := minor.Table()
	ownedBy3 := func(key string) bool {
		o, _ := table.Owner(partition.ID(key, table.Count))
		return o.Name == n3.Name
	}
	wMinor := startWriters(ctx, minor, "minor", "users", 4, nil)
	wFast := startWriters(ctx, minor, "fast", "fast", 2, ownedBy3)
	wMajor := startWriters(ctx, major, "major", "users", 4, nil)
	defer wMinor.halt()
	defer wFast.halt()
	defer wMajor.halt()
	runFor(ctx, time.Second)

	nc := netcut.New(t)
	if err := nc.Cut(append(ipsOf(n3), netcut.ClientAddr(1)), append(ipsOf(n1, n2), netcut.ClientAddr(2))); err != nil {
		t.Fatal(err)
	}
	cut := time.Now() // the rules are in place
	lost := waitQuorum(t, ctx, n3, false)
	checkNoQuorumSurface(t, ctx, n3)
	checkRelayedRefusal(t, ctx, n3, n1)
	runFor(ctx, 3*time.Second)
	if st, err := n1.Status(ctx); err != nil || !st.Quorum {
		t.Fatalf("n1 during the cut: quorum %v, %v", st.Quorum, err)
	}
	healAt := time.Now()
	if err := nc.Heal(); err != nil {
		t.Fatal(err)
	}
	waitQuorum(t, ctx, n3, true)
	settledAt := time.Now()
	waitSettled(t, ctx, procs...)
	settledAt = time.Now()
	runFor(ctx, time.Second)
	wMinor.halt()
	wFast.halt()
	wMajor.halt()

	// Writes in flight when the rules went in may still complete (their
	// backups had applied them): count the calls begun after the cut.
	acked, minorQ, minorOther, lastUsers := wMinor.counts(cut, healAt)
	minorAfter := wMinor.startedAfter(cut, healAt)
	inflight := acked - minorAfter
	fastAfter, fastQ, _, lastFast := wFast.counts(cut, healAt)
	fastLate := wFast.startedAfter(cut.Add(time.Second), healAt)
	majorDuring, _, _, _ := wMajor.counts(lost, healAt)
	lostUsers, totalUsers := wMinor.lost(t, ctx, major, "users")
	lostMajor, totalMajor := wMajor.lost(t, ctx, major, "users")
	window := time.Duration(0)
	if !lastFast.IsZero() {
		window = lastFast.Sub(cut)
	}
	t.Logf("cut at 0; n3 lost quorum after %v; heal after %v; settled %v after the heal",
		lost.Sub(cut).Round(time.Millisecond), healAt.Sub(cut).Round(time.Millisecond), settledAt.Sub(healAt).Round(time.Millisecond))
	t.Logf("minority client, users (1 sync backup): %d calls begun after the cut acknowledged, %d in flight at the cut acknowledged (the last %v after the cut), %d ErrQuorum, %d other errors (first: %v)",
		minorAfter, inflight, durSince(lastUsers, cut), minorQ, minorOther, wMinor.first)
	t.Logf("minority client, fast (no backup, majority rule, keys owned by n3): %d acknowledged after the cut, the last %v after it (lease window), %d begun later than 1 s after it; %d ErrQuorum",
		fastAfter, window.Round(time.Millisecond), fastLate, fastQ)
	t.Logf("majority client: %d writes acknowledged while n3 was cut off; read back after the heal: %d/%d minority and %d/%d majority writes lost",
		majorDuring, lostUsers, totalUsers, lostMajor, totalMajor)
	if minorAfter != 0 {
		t.Errorf("the cut-off side acknowledged %d users writes begun after the cut", minorAfter)
	}
	// The users writers write keys of every owner: those owned across the
	// cut time out (the client cannot reach them), and with 2 s timeouts a
	// writer may try only a few keys in the cut; the fast writers write
	// keys n3 owns, so between them the minority client must have been
	// refused with ErrQuorum.
	if minorQ+fastQ == 0 {
		t.Error("no ErrQuorum seen by the minority client")
	}
	// The lease is SuspicionMult × ProbeInterval = 400 ms with --gossip
	// fast, counted from the last answered ping (every 100 ms).
	if window > time.Second || fastLate != 0 {
		t.Errorf("the cut-off owner acknowledged writes %v after the cut; the lease should stop it within ~500 ms", window)
	}
	if majorDuring == 0 {
		t.Error("the majority acknowledged no write during the cut")
	}
	if lostUsers+lostMajor != 0 {
		t.Errorf("%d acknowledged writes lost", lostUsers+lostMajor)
	}
}

// checkRelayedRefusal starts a new client beside the cut-off member cut
// (it reaches only cut) and writes a key that other, across the cut, owns:
// the client cannot dial other, relays the call through cut, and gets
// ErrQuorum from it, not a timeout.
func checkRelayedRefusal(t *testing.T, ctx context.Context, cut, other *proctest.Proc) {
	t.Helper()
	c := dialFrom(t, ctx, netcut.ClientAddr(1), cut)
	key := keyOwnedBy(c.Table(), "relay-", other)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	err := shoalmaps.New(c, "users").Put(cctx, key, []byte("v"))
	if !errors.Is(err, op.ErrQuorum) {
		t.Errorf("a new client beside %s writing a key of %s: %v, want ErrQuorum (relayed)", cut.Name, other.Name, err)
		return
	}
	t.Logf("a new client beside %s writing a key of %s: ErrQuorum after %v (relayed through %s)", cut.Name, other.Name, time.Since(start).Round(time.Millisecond), cut.Name)
}

// keyOwnedBy returns the first key prefix0, prefix1, ... whose partition
// member p owns in tab.
func keyOwnedBy(tab *partition.Table, prefix string, p *proctest.Proc) string {
	for i := 0; ; i++ {
		k := prefix + strconv.Itoa(i)
		if o, _ := tab.Owner(partition.ID(k, tab.Count)); o.Name == p.Name {
			return k
		}
	}
}

func durSince(t, since time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Sub(since).Round(time.Millisecond).String()
}

// TestPartitionFiveMembersSplit cuts five members 3/2, each side with its
// own client writing: the minority's writes fail with ErrQuorum, the
// majority's succeed, and after the heal no acknowledged write is lost.
// With two synchronous backups a side of two cannot hold every replica of
// a partition, so the majority always has one (with one backup, partitions
// whose two replicas are both on the minority would be re-created empty by
// the majority: keep as many backups as members a cut may isolate).
func TestPartitionFiveMembersSplit(t *testing.T) {
	netcut.Skip(t)
	ctx := ctxT(t, 120*time.Second)
	procs := startClusterAt(t, ctx, 5, "--backup-count", "2")
	majority, minority := procs[:3], procs[3:]
	cMinor := dialFrom(t, ctx, netcut.ClientAddr(1), minority...)
	cMajor := dialFrom(t, ctx, netcut.ClientAddr(2), majority...)
	wMinor := startWriters(ctx, cMinor, "minor", "users", 4, nil)
	wMajor := startWriters(ctx, cMajor, "major", "users", 4, nil)
	defer wMinor.halt()
	defer wMajor.halt()
	runFor(ctx, time.Second)

	nc := netcut.New(t)
	if err := nc.Cut(append(ipsOf(minority...), netcut.ClientAddr(1)), append(ipsOf(majority...), netcut.ClientAddr(2))); err != nil {
		t.Fatal(err)
	}
	cut := time.Now() // the rules are in place
	for _, p := range minority {
		waitQuorum(t, ctx, p, false)
	}
	checkNoQuorumSurface(t, ctx, minority[0])
	runFor(ctx, 3*time.Second)
	for _, p := range majority {
		if st, err := p.Status(ctx); err != nil || !st.Quorum {
			t.Fatalf("%s during the cut: quorum %v, %v", p.Name, st.Quorum, err)
		}
	}
	healAt := time.Now()
	if err := nc.Heal(); err != nil {
		t.Fatal(err)
	}
	sts := waitSettled(t, ctx, procs...)
	settled := time.Since(healAt)
	runFor(ctx, 500*time.Millisecond)
	wMinor.halt()
	wMajor.halt()
	acked, minorQ, minorOther, _ := wMinor.counts(cut, healAt)
	minorAfter := wMinor.startedAfter(cut, healAt)
	inflight := acked - minorAfter
	majorDuring, _, majorOther, _ := wMajor.counts(cut, healAt)
	lostMinor, totalMinor := wMinor.lost(t, ctx, cMajor, "users")
	lostMajor, totalMajor := wMajor.lost(t, ctx, cMajor, "users")
	t.Logf("5 members split 3/2: minority acknowledged %d writes begun after the cut (and %d in flight at it), %d ErrQuorum, %d other errors; majority acknowledged %d during the cut (%d errors); settled %v after the heal at table %d; lost %d/%d minority and %d/%d majority writes",
		minorAfter, inflight, minorQ, minorOther, majorDuring, majorOther, settled.Round(time.Millisecond), sts[0].Table.Version, lostMinor, totalMinor, lostMajor, totalMajor)
	if minorAfter != 0 {
		t.Errorf("the minority acknowledged %d writes begun after the cut", minorAfter)
	}
	if minorQ == 0 {
		t.Error("the minority's writes never failed with ErrQuorum")
	}
	if majorDuring == 0 {
		t.Error("the majority acknowledged no write during the cut")
	}
	if lostMinor+lostMajor != 0 {
		t.Errorf("%d acknowledged writes lost", lostMinor+lostMajor)
	}
}

// TestPartitionLoops repeats cut/heal on three members with writers on
// both sides: isolating the coordinator (n1), isolating another member,
// and an asymmetric cut (n3's packets to n1 and n2 dropped, theirs to n3
// delivered), in turn. After every heal the cluster must settle (one
// table version everywhere, backups in sync) and, at the end, no
// acknowledged write may be lost. SHOAL_PARTITION_LOOPS sets the number of
// loops (default 3; make soak-partition runs 10).
func TestPartitionLoops(t *testing.T) {
	netcut.Skip(t)
	loops := 3
	if v := os.Getenv("SHOAL_PARTITION_LOOPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SHOAL_PARTITION_LOOPS=%q: want a positive number", v)
		}
		loops = n
	}
	ctx := ctxT(t, time.Duration(loops)*40*time.Second+60*time.Second)
	procs := startClusterAt(t, ctx, 3)
	// Each side has a client: the one next to the isolated member is
	// cut with it.
	cA := dialFrom(t, ctx, netcut.ClientAddr(1), procs...)
	cB := dialFrom(t, ctx, netcut.ClientAddr(2), procs...)
	wA := startWriters(ctx, cA, "a", "users", 3, nil)
	wB := startWriters(ctx, cB, "b", "users", 3, nil)
	defer wA.halt()
	defer wB.halt()
	nc := netcut.New(t)
	kinds := []string{"isolate n1 (coordinator)", "isolate n2", "asymmetric: n3 cannot reach n1, n2"}
	// reports[i] is the number of merge reports procs[i] should have
	// emitted: one per heal after which it was the losing side (it owned
	// partitions there), none otherwise.
	reports := make([]uint64, len(procs))
	for i := range loops {
		kind := kinds[i%len(kinds)]
		runFor(ctx, 500*time.Millisecond)
		var alone, rest []*proctest.Proc
		switch i % len(kinds) {
		case 0:
			alone, rest = procs[:1], procs[1:]
		case 1:
			alone, rest = procs[1:2], []*proctest.Proc{procs[0], procs[2]}
		case 2:
			alone, rest = procs[2:], procs[:2]
		}
		var err error
		if i%len(kinds) == 2 {
			err = nc.OneWay(append(ipsOf(alone...), netcut.ClientAddr(1)), append(ipsOf(rest...), netcut.ClientAddr(2)))
		} else {
			err = nc.Cut(append(ipsOf(alone...), netcut.ClientAddr(1)), append(ipsOf(rest...), netcut.ClientAddr(2)))
		}
		if err != nil {
			t.Fatal(err)
		}
		cut := time.Now() // the rules are in place
		// The majority must notice and carry on.
		if err := proctest.Poll(ctx, 20*time.Millisecond, func(ctx context.Context) error {
			st, err := rest[0].Status(ctx)
			if err != nil {
				return err
			}
			if len(st.Members) != 2 || !st.Quorum {
				return fmt.Errorf("%s sees %d members, quorum %v", rest[0].Name, len(st.Members), st.Quorum)
			}
			return nil
		}); err != nil {
			t.Fatalf("loop %d (%s): %v", i+1, kind, err)
		}
		detectedAt := time.Now()
		detected := detectedAt.Sub(cut)
		// The majority serves during the cut: client B gets a write begun
		// after the detection acknowledged (its writers' calls stuck on
		// the cut-off member are retried on the new owners once the
		// cluster's new table reaches the client).
		var served time.Duration
		if err := proctest.Poll(ctx, 10*time.Millisecond, func(context.Context) error {
			at, ok := wB.firstAckStartedAfter(detectedAt)
			if !ok {
				return fmt.Errorf("client B has no acknowledged write begun after the majority saw the cut (%v ago)", time.Since(detectedAt).Round(time.Millisecond))
			}
			served = at.Sub(detectedAt)
			return nil
		}); err != nil {
			t.Fatalf("loop %d (%s): %v", i+1, kind, err)
		}
		runFor(ctx, time.Second)
		healAt := time.Now()
		if err := nc.Heal(); err != nil {
			t.Fatal(err)
		}
		sts := waitSettled(t, ctx, procs...)
		// The merge report matches what happened: the cut-off member
		// (the losing side) reports, with nothing stored (the map has a
		// quorum rule: discard), and nobody else does.
		for j, p := range procs {
			if p == alone[0] {
				reports[j]++
			}
		}
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		err = proctest.Poll(rctx, 20*time.Millisecond, func(ctx context.Context) error {
			for j, p := range procs {
				st, err := p.Status(ctx)
				if err != nil {
					return err
				}
				if st.MergeReports != reports[j] || st.MergeStored != 0 {
					return fmt.Errorf("%s: %d merge reports (want %d), %d entries stored by merges (want 0)", p.Name, st.MergeReports, reports[j], st.MergeStored)
				}
			}
			return nil
		})
		rcancel()
		if err != nil {
			t.Errorf("loop %d (%s): %v", i+1, kind, err)
		}
		_, qA, otherA, _ := wA.counts(cut, healAt)
		acksA := wA.startedAfter(cut, healAt)
		acksB, _, _, _ := wB.counts(cut, healAt)
		t.Logf("loop %d (%s): detected in %v, client B served again %v after that, settled %v after the heal at table %d; client A's calls begun during the cut acknowledged: %d (ErrQuorum so far %d, other errors %d), client B %d",
			i+1, kind, detected.Round(time.Millisecond), served.Round(time.Millisecond), time.Since(healAt).Round(time.Millisecond), sts[0].Table.Version, acksA, qA, otherA, acksB)
		// Client A sits with the cut-off member: nothing it writes
		// during the cut may be acknowledged, except through the
		// asymmetric cut, where its requests still reach the majority
		// but no answer comes back.
		if acksA != 0 {
			t.Errorf("loop %d (%s): the cut-off side acknowledged %d writes", i+1, kind, acksA)
		}
	}
	wA.halt()
	wB.halt()
	lostA, totalA := wA.lost(t, ctx, cB, "users")
	lostB, totalB := wB.lost(t, ctx, cB, "users")
	t.Logf("%d loops: lost %d/%d writes of client A and %d/%d of client B", loops, lostA, totalA, lostB, totalB)
	if lostA+lostB != 0 {
		t.Errorf("%d acknowledged writes lost", lostA+lostB)
	}
}

// TestPartitionPerformanceProfileMerge cuts one of three members of a
// performance-profile cluster (no backups, quorum off): both sides take
// every partition and serve. Each side writes keys of its own and keys
// both sides write, to three maps with the three merge policies. At the
// heal the isolated member's side loses, and its entries are merged into
// the winners by each map's policy: discard (the winner's values only),
// put-if-absent (the loser's keys the winner lacks are added) and
// pass-through (the loser's values win) and latest (per key the later
// write wins, whichever side took it). The merge is counted.
func TestPartitionPerformanceProfileMerge(t *testing.T) {
	netcut.Skip(t)
	ctx := ctxT(t, 90*time.Second)
	cfg := filepath.Join(t.TempDir(), "gridnode.yaml")
	if err := os.WriteFile(cfg, []byte("structures:\n  - pattern: pia\n    merge: put-if-absent\n  - pattern: pt\n    merge: pass-through\n  - pattern: lt\n    merge: latest\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A longer suspicion: a false failure between n1 and n2 during the cut
	// (CPU starvation) would make them a split of their own, whose heal
	// merges by the same policies and muddles the expected values.
	procs := startClusterAt(t, ctx, 3, "--profile", "performance", "--config", cfg, "--suspicion-mult", "5")
	n3 := procs[2]
	cMinor := dialFrom(t, ctx, netcut.ClientAddr(1), n3)
	cMajor := dialFrom(t, ctx, netcut.ClientAddr(2), procs[0])
	nc := netcut.New(t)
	if err := nc.Cut(append(ipsOf(n3), netcut.ClientAddr(1)), append(ipsOf(procs[:2]...), netcut.ClientAddr(2))); err != nil {
		t.Fatal(err)
	}
	// Both sides take over every partition and serve.
	for _, p := range procs {
		want := 2
		if p == n3 {
			want = 1
		}
		if err := proctest.Poll(ctx, 20*time.Millisecond, func(ctx context.Context) error {
			st, err := p.Status(ctx)
			if err != nil {
				return err
			}
			if len(st.Members) != want || !st.Quorum || st.Table.Unowned != 0 || len(st.Table.Owners) != want {
				return fmt.Errorf("%s: %d members, quorum %v, table members %v", p.Name, len(st.Members), st.Quorum, st.Table.Owners)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	const n = 40
	write := func(c *client.Client, m, key, val string) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := shoalmaps.New(c, m).Put(cctx, key, []byte(val)); err != nil {
			t.Fatalf("put %s/%s=%s during the cut: %v", m, key, val, err)
		}
	}
	policies := []string{"disc", "pia", "pt", "lt"}
	for _, m := range policies {
		for i := range n {
			write(cMinor, m, fmt.Sprintf("both-%d", i), "minor")
			write(cMajor, m, fmt.Sprintf("both-%d", i), "major")
			write(cMinor, m, fmt.Sprintf("minor-%d", i), "minor")
			write(cMajor, m, fmt.Sprintf("major-%d", i), "major")
		}
	}
	// For latest, keys whose later write is the losing side's.
	for i := range n {
		write(cMajor, "lt", fmt.Sprintf("later-%d", i), "major")
		write(cMinor, "lt", fmt.Sprintf("later-%d", i), "minor")
	}
	// Queue items offered on both sides, and one lock granted on both.
	for i := range n {
		for side, c := range map[string]*client.Client{"minor": cMinor, "major": cMajor} {
			if err := shoalqueues.New(c, "jobs").Offer(ctx, []byte(fmt.Sprintf("%s-%d", side, i))); err != nil {
				t.Fatalf("offer during the cut: %v", err)
			}
		}
	}
	lockMinor, lockMajor := shoallocks.New(cMinor, "L"), shoallocks.New(cMajor, "L")
	tokMinor, okMinor, err := lockMinor.TryLock(ctx)
	if err != nil || !okMinor {
		t.Fatalf("lock on the minority side: %v %v", okMinor, err)
	}
	tokMajor, okMajor, err := lockMajor.TryLock(ctx)
	if err != nil || !okMajor {
		t.Fatalf("lock on the majority side: %v %v", okMajor, err)
	}
	// The merge report reaches a client of the losing member (which stays
	// connected to it through the cut and the heal).
	reports := make(chan []byte, 8)
	stopReports, err := cMinor.SubscribeEvents(ctx, sysop.Service, sysop.MergeStream, func(b []byte) { reports <- b })
	if err != nil {
		t.Fatal(err)
	}
	defer stopReports()
	if err := nc.Heal(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, ctx, procs...)
	// n3 lost: it merges 2n pia entries (n stored: its own keys), 2n pt
	// entries (all stored), 3n lt entries (2n stored: its own keys and
	// the later writes) and n queue items (all appended), and discards
	// the rest.
	var st proctest.Status
	if err := proctest.Poll(ctx, 50*time.Millisecond, func(ctx context.Context) error {
		var err error
		st, err = n3.Status(ctx)
		if err != nil {
			return err
		}
		if st.MergeStored != 6*n || st.MergeReports != 1 {
			return fmt.Errorf("%s: merge_stored %d, merge_discarded %d, merge_reports %d; want %d stored, 1 report", n3.Name, st.MergeStored, st.MergeDiscarded, st.MergeReports, 6*n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{ // map -> key prefix -> value (or "" for absent)
		"disc": {"both": "major", "minor": "", "major": "major"},
		"pia":  {"both": "major", "minor": "minor", "major": "major"},
		"pt":   {"both": "minor", "minor": "minor", "major": "major"},
		"lt":   {"both": "major", "minor": "minor", "major": "major", "later": "minor"},
	}
	wrong := 0
	for _, m := range policies {
		mp := shoalmaps.New(cMajor, m)
		for prefix, w := range want[m] {
			for i := range n {
				key := fmt.Sprintf("%s-%d", prefix, i)
				v, ok, err := mp.Get(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if got := map[bool]string{true: string(v), false: ""}[ok]; got != w {
					wrong++
					if wrong <= 5 {
						t.Errorf("after the heal, %s/%s = %q, want %q", m, key, got, w)
					}
				}
			}
		}
	}
	t.Logf("quorum off: %s lost the heal: %d entries of its side dropped, %d merged back by policy (discard/put-if-absent/pass-through/latest/append), %d of %d keys read wrong",
		n3.Name, st.MergeDiscarded, st.MergeStored, wrong, 3*3*n+4*n)
	if !strings.Contains(n3.Output(), `msg="merge after a split" member=n3 service=map structure=pia policy=put-if-absent entries=80 stored=40 discarded=40`) {
		t.Errorf("%s did not log the pia merge counts", n3.Name)
	}

	// The queue holds every item offered on either side, once: the
	// majority's, then the minority's appended.
	var items []string
	for {
		it, ok, err := shoalqueues.New(cMajor, "jobs").Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		items = append(items, string(it))
	}
	var wantItems []string
	for _, side := range []string{"major", "minor"} {
		for i := range n {
			wantItems = append(wantItems, fmt.Sprintf("%s-%d", side, i))
		}
	}
	if !slices.Equal(items, wantItems) {
		t.Errorf("queue after the heal (%d items): %v\nwant %v", len(items), items, wantItems)
	}
	// The lock: the minority's grant is revoked, and a later grant's token
	// is above both. (The majority's grant is not required to hold: its
	// client's session record may have lived in a partition the cut-off
	// member owned, which the majority started again empty, ending the
	// session and its holds.)
	if err := lockMinor.Unlock(ctx); !errors.Is(err, op.ErrNotLockOwner) {
		t.Errorf("the minority's holder unlocking after the heal: %v, want ErrNotLockOwner", err)
	}
	if lst, err := lockMajor.Status(ctx); err != nil {
		t.Fatal(err)
	} else if lst.Held {
		if lst.Token != tokMajor {
			t.Errorf("lock after the heal held with token %d, want the majority's %d", lst.Token, tokMajor)
		}
		if err := lockMajor.Unlock(ctx); err != nil {
			t.Fatalf("unlock: %v", err)
		}
	}
	tokAfter, ok, err := lockMajor.TryLock(ctx)
	if err != nil || !ok || tokAfter <= max(tokMinor, tokMajor) {
		t.Errorf("lock after the heal: token %d (%v, %v), want above %d and %d", tokAfter, ok, err, tokMinor, tokMajor)
	}

	// The merge report says what happened.
	var rep *sysop.MergeReport
	select {
	case b := <-reports:
		if rep, err = sysop.DecodeMergeReport(b); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("no merge report")
	}
	got := map[string]sysop.MergeCount{}
	for _, mc := range rep.Structures {
		got[mc.Service+"/"+mc.Structure] = mc
	}
	for k, w := range map[string]sysop.MergeCount{
		"map/disc":   {Policy: "discard", Entries: 2 * n, Discarded: 2 * n},
		"map/pia":    {Policy: "put-if-absent", Entries: 2 * n, Stored: n, Discarded: n},
		"map/pt":     {Policy: "pass-through", Entries: 2 * n, Stored: 2 * n},
		"map/lt":     {Policy: "latest", Entries: 3 * n, Stored: 2 * n, Discarded: n},
		"queue/jobs": {Policy: "append", Entries: n, Stored: n},
		"lock/L":     {Policy: "revoke", Entries: 1, Discarded: 1},
	} {
		g := got[k]
		if g.Policy != w.Policy || g.Entries != w.Entries || g.Stored != w.Stored || g.Discarded != w.Discarded || g.FailedPartitions != 0 {
			t.Errorf("merge report for %s: %+v, want %+v", k, g, w)
		}
	}
	t.Logf("merge report of %s: %+v", rep.Member, rep)
}
