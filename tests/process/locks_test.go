//go:build process

package process_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/internal/proctest"
	"github.com/shoalgrid/shoal/locks"
	shoalmaps "github.com/shoalgrid/shoal/maps"
)

// gridctlBin compiles gridctl into a directory of the test.
func gridctlBin(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gridctl")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", path, "github.com/shoalgrid/shoal/cmd/gridctl").CombinedOutput()
	if err != nil {
		t.Fatalf("go build gridctl: %v\n%s", err, out)
	}
	return path
}

func dataAddrs(procs []*proctest.Proc) string {
	var as []string
	for _, p := range procs {
		as = append(as, p.DataAddr)
	}
	return strings.Join(as, ",")
}

// gridctlProc is one gridctl process; it and its children form a process
// group, killed when the test ends.
type gridctlProc struct {
	cmd  *exec.Cmd
	out  strings.Builder
	mu   sync.Mutex
	done chan struct{}
	code int
}

func startGridctl(t *testing.T, bin string, args ...string) *gridctlProc {
	t.Helper()
	g := &gridctlProc{done: make(chan struct{})}
	g.cmd = exec.Command(bin, args...)
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w := &lockedWriter{g: g}
	g.cmd.Stdout, g.cmd.Stderr = w, w
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = g.cmd.Wait()
		g.code = g.cmd.ProcessState.ExitCode()
		close(g.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		<-g.done
		if t.Failed() {
			t.Logf("--- gridctl %s ---\n%s", strings.Join(args, " "), g.output())
		}
	})
	return g
}

type lockedWriter struct{ g *gridctlProc }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.g.mu.Lock()
	defer w.g.mu.Unlock()
	return w.g.out.Write(p)
}

func (g *gridctlProc) output() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.out.String()
}

func (g *gridctlProc) wait(t *testing.T, ctx context.Context) int {
	t.Helper()
	select {
	case <-g.done:
		return g.code
	case <-ctx.Done():
		t.Fatalf("gridctl did not exit; output:\n%s", g.output())
		return -1
	}
}

// interval is one critical section recorded by a lock run command.
type interval struct {
	token      uint64
	start, end int64
}

func readIntervals(t *testing.T, path string) []interval {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	open := map[uint64]int64{}
	var out []interval
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var what string
		var tok uint64
		var at int64
		if _, err := fmt.Sscan(sc.Text(), &what, &tok, &at); err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		if what == "start" {
			open[tok] = at
		} else {
			out = append(out, interval{token: tok, start: open[tok], end: at})
		}
	}
	slices.SortFunc(out, func(a, b interval) int { return int(a.start - b.start) })
	return out
}

// TestLockRunNeverOverlaps starts concurrent "gridctl lock run" processes on
// one lock: their critical sections (recorded by the commands themselves)
// never overlap, and tokens increase in the order the sections ran.
func TestLockRunNeverOverlaps(t *testing.T) {
	ctx := ctxT(t, 120*time.Second)
	bin := gridctlBin(t)
	procs := startCluster(t, ctx, 3)
	waitSettled(t, ctx, procs...)
	log := filepath.Join(t.TempDir(), "sections")
	script := `echo "start $SHOAL_FENCE $(date +%s%N)" >> ` + log + `; sleep 0.2; echo "end $SHOAL_FENCE $(date +%s%N)" >> ` + log
	const runs = 6
	var gs []*gridctlProc
	for i := range runs {
		gs = append(gs, startGridctl(t, bin, "--addr", procs[i%3].DataAddr, "lock", "run", "shared", "--wait", "60s", "--", "sh", "-c", script))
	}
	for _, g := range gs {
		if code := g.wait(t, ctx); code != 0 {
			t.Fatalf("gridctl exited %d:\n%s", code, g.output())
		}
	}
	ivs := readIntervals(t, log)
	if len(ivs) != runs {
		t.Fatalf("%d sections recorded, want %d: %+v", len(ivs), runs, ivs)
	}
	for i := 1; i < len(ivs); i++ {
		if ivs[i].start < ivs[i-1].end {
			t.Fatalf("sections overlap: %+v then %+v", ivs[i-1], ivs[i])
		}
		if ivs[i].token <= ivs[i-1].token {
			t.Fatalf("token %d after %d", ivs[i].token, ivs[i-1].token)
		}
	}
}

// TestKilledHolderPassesTheLock kills -9 a gridctl holding a lock (and its
// command): the waiting gridctl gets the lock once the holder's session
// expires, and the time it took is reported.
func TestKilledHolderPassesTheLock(t *testing.T) {
	ctx := ctxT(t, 120*time.Second)
	bin := gridctlBin(t)
	procs := startCluster(t, ctx, 3)
	waitSettled(t, ctx, procs...)
	addr := dataAddrs(procs)
	holder := startGridctl(t, bin, "--addr", addr, "lock", "run", "job", "--", "sh", "-c", `echo "holding $SHOAL_FENCE"; sleep 600`)
	c := dial(t, ctx, procs...)
	l := locks.New(c, "job")
	if err := proctest.Poll(ctx, 10*time.Millisecond, func(ctx context.Context) error {
		if st, err := l.Status(ctx); err != nil || !st.Held {
			return fmt.Errorf("not held yet: %+v %v", st, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	first, _ := l.Status(ctx)
	waiter := startGridctl(t, bin, "--addr", addr, "lock", "run", "job", "--", "sh", "-c", `echo "got $SHOAL_FENCE"`)
	if err := proctest.Poll(ctx, 10*time.Millisecond, func(ctx context.Context) error {
		if st, err := l.Status(ctx); err != nil || st.Waiters != 1 {
			return fmt.Errorf("no waiter yet: %+v %v", st, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := syscall.Kill(-holder.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := waiter.wait(t, ctx); code != 0 {
		t.Fatalf("waiter exited %d:\n%s", code, waiter.output())
	}
	took := time.Since(killed)
	out := strings.TrimSpace(waiter.output())
	tok, err := strconv.ParseUint(strings.TrimPrefix(out, "got "), 10, 64)
	if err != nil || tok <= first.Token {
		t.Fatalf("waiter's token %q after the holder's %d", out, first.Token)
	}
	t.Logf("holder killed: the next waiter got the lock after %v", took.Round(time.Millisecond))
	if took > 15*time.Second {
		t.Fatalf("hand-over took %v", took)
	}
}

// TestLockMutualExclusionKillNine runs workers in two clients that
// increment a counter in a map, guarded only by a lock and checked with its
// fencing token, while the member owning the lock is killed with SIGKILL
// and restarted, twice: critical sections never overlap (recorded
// intervals), tokens of successive sections increase, and the counter
// equals the number of completed sections.
func TestLockMutualExclusionKillNine(t *testing.T) {
	ctx := ctxT(t, 150*time.Second)
	procs := startCluster(t, ctx, 3)
	waitSettled(t, ctx, procs...)
	clients := []*client.Client{dial(t, ctx, procs...), dial(t, ctx, procs...)}
	const name = "mutex"
	type section struct {
		token      uint64
		start, end time.Time
	}
	var mu sync.Mutex
	var sections []section
	var completed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		c := clients[w%2]
		wg.Go(func() {
			l := locks.New(c, name)
			m := shoalmaps.New(c, "fenced")
			for {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				tok, err := l.Lock(cctx)
				if err != nil {
					cancel()
					t.Errorf("worker %d: lock: %v", w, err)
					return
				}
				s := section{token: tok, start: time.Now()}
				v, _, err := m.Get(cctx, "n")
				if err == nil {
					n, _ := strconv.Atoi(string(v))
					err = m.Put(cctx, "n", []byte(strconv.Itoa(n+1)))
				}
				s.end = time.Now()
				if err != nil {
					cancel()
					t.Errorf("worker %d: counter: %v", w, err)
					return
				}
				completed.Add(1)
				mu.Lock()
				sections = append(sections, s)
				mu.Unlock()
				err = l.Unlock(cctx)
				cancel()
				if err != nil {
					t.Errorf("worker %d: unlock: %v", w, err)
					return
				}
			}
		})
	}
	for round := range 2 {
		before := completed.Load()
		if err := proctest.Poll(ctx, 10*time.Millisecond, func(context.Context) error {
			if completed.Load() < before+30 {
				return fmt.Errorf("%d sections", completed.Load()-before)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		tab := clients[0].Table()
		o, _ := tab.Owner(clients[0].PartitionOf(name))
		var victim int
		for i, p := range procs {
			if p.Name == o.Name {
				victim = i
			}
		}
		t.Logf("round %d: killing %s, the lock's owner", round, procs[victim].Name)
		kill(t, ctx, procs[victim])
		after := completed.Load()
		if err := proctest.Poll(ctx, 10*time.Millisecond, func(context.Context) error {
			if completed.Load() < after+30 {
				return fmt.Errorf("%d sections since the kill", completed.Load()-after)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		procs[victim] = proctest.Restart(t, procs[victim], without(procs, procs[victim]))
		if err := procs[victim].WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		waitSettled(t, ctx, procs...)
	}
	close(stop)
	wg.Wait()
	slices.SortFunc(sections, func(a, b section) int { return a.start.Compare(b.start) })
	for i := 1; i < len(sections); i++ {
		if sections[i].start.Before(sections[i-1].end) {
			t.Fatalf("sections overlap: %+v then %+v", sections[i-1], sections[i])
		}
		if sections[i].token <= sections[i-1].token {
			t.Fatalf("token %d after %d", sections[i].token, sections[i-1].token)
		}
	}
	v, _, err := shoalmaps.New(clients[0], "fenced").Get(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(string(v)); int64(n) != completed.Load() {
		t.Fatalf("counter %d, completed sections %d", n, completed.Load())
	}
	t.Logf("%d critical sections across 2 kills of the lock's owner, none overlapping", len(sections))
}

// fencedResource is an HTTP resource that remembers the highest fencing
// token it has seen and refuses writes with a lower one (409).
type fencedResource struct {
	mu      sync.Mutex
	highest uint64
	log     []string
}

func (f *fencedResource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, err := strconv.ParseUint(r.URL.Query().Get("token"), 10, 64)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if tok < f.highest {
		f.log = append(f.log, fmt.Sprintf("refused %d", tok))
		http.Error(w, "stale token", http.StatusConflict)
		return
	}
	f.highest = tok
	f.log = append(f.log, fmt.Sprintf("accepted %d", tok))
}

// TestPausedHolderIsFenced pauses (SIGSTOP) a process that holds a lock:
// after its session TTL the lock passes to a waiter, whose token is higher;
// when the paused process resumes, its write with the old token is refused
// by the token-checking resource and its unlock fails.
func TestPausedHolderIsFenced(t *testing.T) {
	ctx := ctxT(t, 120*time.Second)
	procs := startCluster(t, ctx, 3)
	waitSettled(t, ctx, procs...)
	res := &fencedResource{}
	srv := httptest.NewServer(res)
	defer srv.Close()

	bin := filepath.Join(t.TempDir(), "lockholder")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/shoalgrid/shoal/tests/process/lockholder").CombinedOutput(); err != nil {
		t.Fatalf("build lockholder: %v\n%s", err, out)
	}
	holder := exec.Command(bin, dataAddrs(procs), "paused", srv.URL)
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = holder.Process.Kill()
		_ = holder.Wait()
		if t.Failed() {
			t.Logf("lockholder stderr: %s", stderr.String())
		}
	})
	lines := bufio.NewScanner(stdout)
	next := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("lockholder ended: %v; stderr %s", lines.Err(), stderr.String())
		}
		return lines.Text()
	}
	var t1 uint64
	var status int
	if _, err := fmt.Sscanf(next(), "locked %d write %d", &t1, &status); err != nil || status != http.StatusOK {
		t.Fatalf("holder's first write: %d %v", status, err)
	}
	if err := holder.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	c := dial(t, ctx, procs...)
	t2, err := locks.New(c, "paused").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(paused)
	if t2 <= t1 {
		t.Fatalf("new holder's token %d, paused holder's %d", t2, t1)
	}
	resp, err := http.Post(fmt.Sprintf("%s?token=%d", srv.URL, t2), "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("new holder's write: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := holder.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	if line := next(); line != fmt.Sprintf("resumed write %d", http.StatusConflict) {
		t.Fatalf("paused holder's write after resume: %q", line)
	}
	if line := next(); !strings.Contains(line, "not the lock owner") && !strings.Contains(line, "session expired") {
		t.Fatalf("paused holder's unlock after resume: %q", line)
	}
	res.mu.Lock()
	t.Logf("resource log %v; the lock passed %v after the pause", res.log, took.Round(time.Millisecond))
	res.mu.Unlock()
}

// TestElectKillLeader runs three "gridctl elect" processes and kills the
// leader (gridctl and its command) with SIGKILL ten times, starting a new
// candidate each time: a new leader starts after each kill (never before:
// no two leaders overlap), with a higher term, and the time to the new
// leader is reported.
func TestElectKillLeader(t *testing.T) {
	ctx := ctxT(t, 150*time.Second)
	bin := gridctlBin(t)
	procs := startCluster(t, ctx, 3)
	waitSettled(t, ctx, procs...)
	log := filepath.Join(t.TempDir(), "leaders")
	script := `echo "start $SHOAL_TERM $PPID $(date +%s%N)" >> ` + log + `; while :; do sleep 0.05; done`
	candidates := map[int]*gridctlProc{}
	spawn := func() {
		g := startGridctl(t, bin, "--addr", dataAddrs(procs), "elect", "poller", "--", "sh", "-c", script)
		candidates[g.cmd.Process.Pid] = g
	}
	for range 3 {
		spawn()
	}
	type start struct {
		term uint64
		pid  int
		at   int64
	}
	starts := func() []start {
		b, err := os.ReadFile(log)
		if err != nil {
			return nil
		}
		var out []start
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var s start
			if _, err := fmt.Sscanf(l, "start %d %d %d", &s.term, &s.pid, &s.at); err == nil {
				out = append(out, s)
			}
		}
		return out
	}
	waitStarts := func(n int) []start {
		var ss []start
		if err := proctest.Poll(ctx, 5*time.Millisecond, func(context.Context) error {
			if ss = starts(); len(ss) < n {
				return fmt.Errorf("%d leaders so far, want %d", len(ss), n)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return ss
	}
	var worst time.Duration
	for round := range 10 {
		ss := waitStarts(round + 1)
		leader := ss[round]
		g := candidates[leader.pid]
		if g == nil {
			t.Fatalf("round %d: leader pid %d is not a candidate", round, leader.pid)
		}
		killedAt := time.Now()
		if err := syscall.Kill(-leader.pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-g.done
		delete(candidates, leader.pid)
		spawn()
		ss = waitStarts(round + 2)
		next := ss[round+1]
		took := time.Duration(next.at - killedAt.UnixNano())
		if next.at < killedAt.UnixNano() || next.term <= leader.term {
			t.Fatalf("round %d: leader %+v started before the kill of %+v at %d, or with a lower term", round, next, leader, killedAt.UnixNano())
		}
		worst = max(worst, took)
		t.Logf("round %d: new leader (term %d) %v after killing the leader", round, next.term, took.Round(time.Millisecond))
	}
	if ss := starts(); len(ss) != 11 {
		t.Fatalf("%d leaders, want 11 (one per kill, plus the first)", len(ss))
	}
	t.Logf("worst time to a new leader: %v", worst.Round(time.Millisecond))
}

// TestElectPausedLeader pauses (SIGSTOP) the gridctl elect leader and its
// command: another candidate is elected after the session TTL; when the
// paused leader resumes, it finds its leadership lost, stops its command
// with SIGTERM and exits 1. The time from resume to the old command's stop
// is reported: it is the window in which a resumed old leader's command
// still runs next to the new one (what fencing tokens are for).
func TestElectPausedLeader(t *testing.T) {
	ctx := ctxT(t, 120*time.Second)
	bin := gridctlBin(t)
	procs := startCluster(t, ctx, 3)
	waitSettled(t, ctx, procs...)
	log := filepath.Join(t.TempDir(), "leaders")
	script := `trap 'echo "end $SHOAL_TERM $(date +%s%N)" >> ` + log + `; exit 0' TERM; echo "start $SHOAL_TERM $PPID $(date +%s%N)" >> ` + log + `; while :; do sleep 0.05; done`
	first := startGridctl(t, bin, "--addr", dataAddrs(procs), "elect", "paused", "--", "sh", "-c", script)
	lines := func() []string {
		b, _ := os.ReadFile(log)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	waitLines := func(n int) []string {
		var ls []string
		if err := proctest.Poll(ctx, 5*time.Millisecond, func(context.Context) error {
			if ls = lines(); len(ls) < n || ls[0] == "" {
				return fmt.Errorf("log %q", ls)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return ls
	}
	var t1 uint64
	var pid int
	var at int64
	if _, err := fmt.Sscanf(waitLines(1)[0], "start %d %d %d", &t1, &pid, &at); err != nil || pid != first.cmd.Process.Pid {
		t.Fatalf("first leader line %q (pid %d): %v", lines()[0], first.cmd.Process.Pid, err)
	}
	second := startGridctl(t, bin, "--addr", dataAddrs(procs), "elect", "paused", "--", "sh", "-c", script)
	if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	var t2 uint64
	if _, err := fmt.Sscanf(waitLines(2)[1], "start %d %d %d", &t2, &pid, &at); err != nil || pid != second.cmd.Process.Pid || t2 <= t1 {
		t.Fatalf("second leader line %q: %v (first term %d)", lines()[1], err, t1)
	}
	elected := time.Since(paused)
	resumed := time.Now()
	if err := syscall.Kill(-first.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if code := first.wait(t, ctx); code != 1 || !strings.Contains(first.output(), "leadership lost") {
		t.Fatalf("resumed old leader exited %d:\n%s", code, first.output())
	}
	ls := waitLines(3)
	var t3 uint64
	var end int64
	if _, err := fmt.Sscanf(ls[2], "end %d %d", &t3, &end); err != nil || t3 != t1 {
		t.Fatalf("third line %q: %v", ls[2], err)
	}
	t.Logf("new leader %v after the pause; the resumed old leader's command stopped %v after SIGCONT",
		elected.Round(time.Millisecond), time.Duration(end-resumed.UnixNano()).Round(time.Millisecond))
}
