//go:build process

package process_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/maps"
)

// claimerEnv makes the test binary an idempotency claimer process (see
// idemClaimer).
const claimerEnv = "SHOAL_TEST_IDEM_CLAIMER"

// idemIDs is the number of message ids every claimer process claims.
const idemIDs = 10_000

// idemClaimer is a child process of TestIdemClaimsKillNine. Its
// environment gives "addrs store order" (addrs comma-separated, the first
// dialed first; order "asc", "desc" or a shuffle seed). It claims ids
// m-0..m-<idemIDs-1> of the store with 8 goroutines and prints one line per
// answer: "R id 1" (first), "R id 0" (duplicate) or "E id message" (an
// error), then "end".
func idemClaimer() int {
	var addrs, name, order string
	if _, err := fmt.Sscan(os.Getenv(claimerEnv), &addrs, &name, &order); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addrs: strings.Split(addrs, ",")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	ids := make([]int, idemIDs)
	for i := range ids {
		ids[i] = i
	}
	switch order {
	case "asc":
	case "desc":
		for i := range ids {
			ids[i] = idemIDs - 1 - i
		}
	default:
		seed, err := strconv.ParseUint(order, 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		r := rand.New(rand.NewPCG(seed, seed))
		r.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	}
	store := maps.NewIdempotencyStore(c, name, time.Hour)
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(ids)) {
					return
				}
				id := fmt.Sprintf("m-%d", ids[i])
				cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
				first, err := store.Claim(cctx, id)
				ccancel()
				mu.Lock()
				switch {
				case err != nil:
					fmt.Fprintf(out, "E %s %s\n", id, strings.ReplaceAll(err.Error(), "\n", " "))
				case first:
					fmt.Fprintf(out, "R %s 1\n", id)
				default:
					fmt.Fprintf(out, "R %s 0\n", id)
				}
				if i%64 == 0 {
					_ = out.Flush()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Fprintln(out, "end")
	if err := out.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// idemTally is what the parent learned from the claimers.
type idemTally struct {
	mu      sync.Mutex
	firsts  map[string]int // id -> acknowledged first == true answers
	dups    map[string]int // id -> acknowledged duplicate answers
	errs    map[string]int // id -> errors
	lines   int
	samples []string // a few error messages
}

// TestIdemClaimsKillNine is the idempotency acceptance check: three client
// processes claim the same 10,000 ids concurrently (in different orders,
// 8 goroutines each) while a member they do not dial first is killed with
// SIGKILL. Among acknowledged answers every id must have at most one
// first == true, and an id with none must have had an error (its first
// claim may have been applied with the answer lost); errors are never
// counted as duplicates.
func TestIdemClaimsKillNine(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	procs := startCluster(t, ctx, 3)
	waitSettled(t, ctx, procs...)
	addrs := procs[0].DataAddr + "," + procs[1].DataAddr + "," + procs[2].DataAddr
	victim := procs[2]

	tally := &idemTally{firsts: map[string]int{}, dups: map[string]int{}, errs: map[string]int{}}
	progress := make(chan struct{}, 1)
	start := time.Now()
	var readers sync.WaitGroup
	var cmds []*exec.Cmd
	for _, order := range []string{"asc", "desc", "7"} {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s orders-in %s", claimerEnv, addrs, order))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		cmds = append(cmds, cmd)
		readers.Go(func() { tally.read(t, order, out, progress) })
	}

	// Kill the victim once the claimers are about a sixth of the way.
	var killedAt time.Duration
	for killedAt == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("claimers made no progress before the kill")
		case <-progress:
		}
		tally.mu.Lock()
		n := tally.lines
		tally.mu.Unlock()
		if n >= 3*idemIDs/6 {
			kill(t, ctx, victim)
			killedAt = time.Since(start)
			t.Logf("kill -9 %s after %d answers, %v", victim.Name, n, killedAt.Round(time.Millisecond))
		}
	}
	readers.Wait()
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("claimer: %v", err)
		}
	}
	took := time.Since(start)

	// Every id must still be remembered, done, on the survivors.
	c := dial(t, ctx, without(procs, victim)...)
	store := maps.NewIdempotencyStore(c, "orders-in", time.Hour)
	var forgotten atomic.Int64
	var next atomic.Int64
	var checkers sync.WaitGroup
	for range 8 {
		checkers.Go(func() {
			for i := next.Add(1) - 1; i < idemIDs; i = next.Add(1) - 1 {
				id := fmt.Sprintf("m-%d", i)
				seen, done, err := store.Seen(ctx, id)
				if err != nil || !seen || !done {
					if forgotten.Add(1) <= 5 {
						t.Errorf("after the run, id %s: seen %v, done %v, %v", id, seen, done, err)
					}
				}
			}
		})
	}
	checkers.Wait()

	tally.mu.Lock()
	defer tally.mu.Unlock()
	var firsts, dups, errs, twoFirsts, noFirst, noFirstNoErr int
	for i := range idemIDs {
		id := fmt.Sprintf("m-%d", i)
		f, d, e := tally.firsts[id], tally.dups[id], tally.errs[id]
		firsts += f
		dups += d
		errs += e
		if f+d+e != 3 {
			t.Errorf("id %s: %d answers (first %d, duplicate %d, error %d), want 3", id, f+d+e, f, d, e)
		}
		switch {
		case f > 1:
			twoFirsts++
			if twoFirsts <= 5 {
				t.Errorf("id %s claimed first %d times (duplicates %d, errors %d)", id, f, d, e)
			}
		case f == 0:
			noFirst++
			if e == 0 {
				noFirstNoErr++
				if noFirstNoErr <= 5 {
					t.Errorf("id %s: no caller was first and none had an error (duplicates %d)", id, d)
				}
			}
		}
	}
	t.Logf("3 processes x %d ids, kill -9 of %s at %v, all answered in %v: firsts %d, duplicates %d, errors %d; ids with >1 first %d, ids with no acknowledged first %d (all with an error: %v); ids not remembered as done afterwards %d",
		idemIDs, victim.Name, killedAt.Round(time.Millisecond), took.Round(time.Millisecond), firsts, dups, errs, twoFirsts, noFirst, noFirstNoErr == 0, forgotten.Load())
	for _, s := range tally.samples {
		t.Logf("error sample: %s", s)
	}
	if firsts < idemIDs/2 {
		t.Errorf("only %d firsts of %d ids: the test exercised little", firsts, idemIDs)
	}
}

// read consumes one claimer's output.
func (tl *idemTally) read(t *testing.T, who string, r interface{ Read([]byte) (int, error) }, progress chan<- struct{}) {
	sc := bufio.NewScanner(r)
	ended := false
	for sc.Scan() {
		line := sc.Text()
		if line == "end" {
			ended = true
			continue
		}
		kind, rest, _ := strings.Cut(line, " ")
		id, val, _ := strings.Cut(rest, " ")
		tl.mu.Lock()
		tl.lines++
		switch {
		case kind == "R" && val == "1":
			tl.firsts[id]++
		case kind == "R" && val == "0":
			tl.dups[id]++
		case kind == "E":
			tl.errs[id]++
			if len(tl.samples) < 5 {
				tl.samples = append(tl.samples, who+": "+rest)
			}
		default:
			t.Errorf("claimer %s: bad line %q", who, line)
		}
		tl.mu.Unlock()
		select {
		case progress <- struct{}{}:
		default:
		}
	}
	if !ended {
		t.Errorf("claimer %s stopped early: %v", who, sc.Err())
	}
}
