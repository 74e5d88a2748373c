//go:build process

package process_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shoalgrid/shoal/internal/proctest"
	shoalmaps "github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/partition"
)

const partitions = partition.DefaultCount

func TestMain(m *testing.M) {
	if os.Getenv(consumerEnv) != "" {
		os.Exit(heldConsumer()) // a child process of TestConsumerKilledHoldingDeliveries
	}
	if os.Getenv(claimerEnv) != "" {
		os.Exit(idemClaimer()) // a child process of TestIdemClaimsKillNine
	}
	// Compile gridnode before the first test starts its clock.
	if _, err := proctest.Prebuild(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	proctest.Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// stable fetches every proc's status and returns them if the procs form
// exactly one cluster at rest: each sees exactly procs as members, all
// follow the same table version, and that table gives every partition an
// owner among procs, each owning some, matching the target assignment (no
// migration pending). Otherwise it returns why not.
func stable(ctx context.Context, procs []*proctest.Proc) ([]proctest.Status, error) {
	var names []string
	for _, p := range procs {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	sts := make([]proctest.Status, len(procs))
	for i, p := range procs {
		st, err := p.Status(ctx)
		if err != nil {
			return nil, err
		}
		sts[i] = st
		var seen []string
		for _, m := range st.Members {
			seen = append(seen, m.Name)
		}
		if !slices.Equal(seen, names) {
			return nil, fmt.Errorf("%s sees members %v, want %v", p.Name, seen, names)
		}
		if st.Table.Version != sts[0].Table.Version || st.TableVersion != st.Table.Version {
			return nil, fmt.Errorf("%s follows table %d (stats %d), %s follows %d", p.Name, st.Table.Version, st.TableVersion, procs[0].Name, sts[0].Table.Version)
		}
		sum := 0
		for _, n := range st.Table.Owners {
			sum += n
		}
		owners := slices.Sorted(maps.Keys(st.Table.Owners))
		if !slices.Equal(owners, names) || sum != partitions || st.Table.Unowned != 0 {
			return nil, fmt.Errorf("%s: table %d owners %v (sum %d, unowned %d), want %d partitions over %v", p.Name, st.Table.Version, st.Table.Owners, sum, st.Table.Unowned, partitions, names)
		}
		for n, c := range st.Table.Owners {
			if c == 0 {
				return nil, fmt.Errorf("%s: %s owns no partition in table %d", p.Name, n, st.Table.Version)
			}
		}
	}
	var ms []partition.Member
	for _, m := range sts[0].Members {
		ms = append(ms, partition.Member{Name: m.Name, Addr: m.Addr, Zone: m.Zone, Host: m.Host})
	}
	target, err := partition.Assign(ms, partitions, 0, partition.PerMember)
	if err != nil {
		return nil, err
	}
	for p, owner := range sts[0].Table.Assignment {
		if want, _ := target.Owner(int32(p)); owner != want.Name {
			return nil, fmt.Errorf("table %d: partition %d owned by %s, target %s (migration pending)", sts[0].Table.Version, p, owner, want.Name)
		}
	}
	if len(sts[0].Table.Assignment) != partitions {
		return nil, fmt.Errorf("assignment lists %d partitions, want %d", len(sts[0].Table.Assignment), partitions)
	}
	return sts, nil
}

// waitStable waits until stable holds and returns the statuses.
func waitStable(t *testing.T, ctx context.Context, procs ...*proctest.Proc) []proctest.Status {
	t.Helper()
	var sts []proctest.Status
	err := proctest.Poll(ctx, 50*time.Millisecond, func(ctx context.Context) error {
		var err error
		sts, err = stable(ctx, procs)
		return err
	})
	if err != nil {
		t.Fatalf("cluster of %d did not converge: %v", len(procs), err)
	}
	return sts
}

// startCluster starts n members n1..nn, each joining n1, and waits until
// they are ready.
func startCluster(t *testing.T, ctx context.Context, n int, extra ...string) []*proctest.Proc {
	t.Helper()
	var procs []*proctest.Proc
	for i := range n {
		var seeds []*proctest.Proc
		if i > 0 {
			seeds = procs[:1]
		}
		procs = append(procs, proctest.Member(t, "n"+strconv.Itoa(i+1), seeds, extra...))
	}
	for _, p := range procs {
		if err := p.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return procs
}

func logOwners(t *testing.T, st proctest.Status) {
	t.Helper()
	t.Logf("table version %d, owners %v", st.Table.Version, st.Table.Owners)
}

func without(procs []*proctest.Proc, gone *proctest.Proc) []*proctest.Proc {
	return slices.DeleteFunc(slices.Clone(procs), func(p *proctest.Proc) bool { return p == gone })
}

// TestThreeMembersWithContractFlags starts three members with exactly the
// documented flags and checks they form one cluster.
func TestThreeMembersWithContractFlags(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	gossip := []int{proctest.FreePort(t), proctest.FreePort(t), proctest.FreePort(t)}
	data := []int{proctest.FreePort(t), proctest.FreePort(t), proctest.FreePort(t)}
	var procs []*proctest.Proc
	for i := range 3 {
		args := []string{
			"--name", fmt.Sprintf("n%d", i+1),
			"--bind", fmt.Sprintf("127.0.0.1:%d", gossip[i]),
			"--addr", fmt.Sprintf("127.0.0.1:%d", data[i]),
		}
		if i > 0 {
			args = append(args, "--join", fmt.Sprintf("127.0.0.1:%d", gossip[0]))
		}
		procs = append(procs, proctest.Start(t, fmt.Sprintf("n%d", i+1), args...))
	}
	start := time.Now()
	sts := waitStable(t, ctx, procs...)
	t.Logf("3 members stable %v after start", time.Since(start).Round(time.Millisecond))
	logOwners(t, sts[0])
	for i, st := range sts {
		if st.Name != procs[i].Name || st.Addr != procs[i].DataAddr || !st.Ready || st.PartitionsOwned != st.Table.Owners[st.Name] {
			t.Errorf("%s status: %+v", procs[i].Name, st.Stats)
		}
		for _, m := range st.Members {
			if m.Name == procs[i].Name && m.Gossip != procs[i].GossipAddr {
				t.Errorf("%s gossips at %s, want %s", m.Name, m.Gossip, procs[i].GossipAddr)
			}
		}
	}
	// The oldest member coordinates; which one that is depends on how fast
	// each process started, so only count them.
	var coordinators []string
	for _, st := range sts {
		if st.Coordinator {
			coordinators = append(coordinators, st.Name)
		}
	}
	if len(coordinators) != 1 {
		t.Errorf("coordinators %v, want exactly one", coordinators)
	}
}

func TestFiveMembersFormOneCluster(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	start := time.Now()
	procs := startCluster(t, ctx, 5)
	sts := waitStable(t, ctx, procs...)
	t.Logf("5 members stable %v after start", time.Since(start).Round(time.Millisecond))
	logOwners(t, sts[0])
}

// TestGracefulLeave sends SIGTERM to one of three members holding 1000
// entries: it must hand its partitions over, exit 0, and leave the other
// two with every partition and every entry, in both profiles (reliable:
// its backups are promoted and new backups copied; performance: no backups,
// so its partitions are copied to their new owners before it leaves).
func TestGracefulLeave(t *testing.T) {
	for _, profile := range []string{"reliable", "performance"} {
		for _, leaver := range []int{2, 0} {
			name := profile + "/member"
			if leaver == 0 {
				name = profile + "/coordinator"
			}
			t.Run(name, func(t *testing.T) {
				ctx := ctxT(t, 60*time.Second)
				procs := startCluster(t, ctx, 3, "--profile", profile)
				waitSettled(t, ctx, procs...)
				gone := procs[leaver]
				rest := without(procs, gone)
				c := dial(t, ctx, rest[0])
				m := shoalmaps.New(c, "leave")
				const entries = 1000
				for i := range entries {
					if err := m.Put(ctx, strconv.Itoa(i), []byte(strconv.Itoa(i))); err != nil {
						t.Fatal(err)
					}
				}
				before := waitSettled(t, ctx, procs...)
				owned, held := before[leaver].PartitionsOwned, before[leaver].Entries
				var inBefore uint64 // partitions the survivors had received
				for i, st := range before {
					if i != leaver {
						inBefore += st.MigrationsIn
					}
				}

				start := time.Now()
				if err := gone.Term(); err != nil {
					t.Fatal(err)
				}
				code, err := gone.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				exited := time.Since(start)
				if code != 0 {
					t.Fatalf("%s exited with %d after SIGTERM, want 0", gone.Name, code)
				}
				after := waitSettled(t, ctx, rest...)
				converged := time.Since(start)

				moved := 0
				for p := range partitions {
					if before[0].Table.Assignment[p] != after[0].Table.Assignment[p] {
						moved++
					}
				}
				var inAfter uint64
				total := 0
				for _, st := range after {
					inAfter += st.MigrationsIn
					total += st.Entries
				}
				t.Logf("SIGTERM to %s (owned %d of %d partitions, %d entries): exited 0 after %v, survivors settled after %v; %d partitions changed owner; survivors received %d partition copies",
					gone.Name, owned, partitions, held, exited.Round(time.Millisecond), converged.Round(time.Millisecond), moved, inAfter-inBefore)
				logOwners(t, after[0])
				if moved < owned {
					t.Errorf("only %d partitions changed owner, but the leaver owned %d", moved, owned)
				}
				if total != entries {
					t.Errorf("survivors own %d entries, want %d", total, entries)
				}
				missing := 0
				for i := range entries {
					v, found, err := m.Get(ctx, strconv.Itoa(i))
					if err != nil {
						t.Fatal(err)
					}
					if !found || string(v) != strconv.Itoa(i) {
						missing++
					}
				}
				if missing > 0 {
					t.Errorf("%d of %d entries missing or wrong after the graceful leave (dropped, not handed over)", missing, entries)
				}
			})
		}
	}
}

// TestKillNine kills one of three members with SIGKILL: the survivors must
// detect it and give every partition a live owner.
func TestKillNine(t *testing.T) {
	for _, victim := range []int{2, 0} {
		name := "member"
		if victim == 0 {
			name = "coordinator"
		}
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t, 60*time.Second)
			procs := startCluster(t, ctx, 3)
			waitStable(t, ctx, procs...)
			gone := procs[victim]
			rest := without(procs, gone)

			start := time.Now()
			if err := gone.Kill(); err != nil {
				t.Fatal(err)
			}
			if code, err := gone.Wait(ctx); err != nil || code != -1 {
				t.Fatalf("after SIGKILL: exit code %d, %v", code, err)
			}
			// First: every partition owned by a survivor, in a table
			// without the dead member, on both survivors.
			err := proctest.Poll(ctx, 20*time.Millisecond, func(ctx context.Context) error {
				for _, p := range rest {
					st, err := p.Status(ctx)
					if err != nil {
						return err
					}
					if _, still := st.Table.Owners[gone.Name]; still || len(st.Members) != 2 || st.Table.Unowned != 0 {
						return fmt.Errorf("%s: members %d, table %d owners %v", p.Name, len(st.Members), st.Table.Version, st.Table.Owners)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("survivors did not take over %s's partitions: %v", gone.Name, err)
			}
			owned := time.Since(start)
			after := waitStable(t, ctx, rest...)
			t.Logf("kill -9 of %s: every partition owned by a survivor after %v; survivors stable (target table) after %v",
				gone.Name, owned.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			logOwners(t, after[0])
		})
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	dir := t.TempDir()
	badKey := filepath.Join(dir, "bad-key.yaml")
	if err := os.WriteFile(badKey, []byte("name: n1\nnmae: typo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown-flag", []string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{"bad-yaml-key", []string{"--config", badKey}, `unknown key "nmae"`},
		{"missing-config", []string{"--config", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{"bad-value", []string{"--partitions", "-1"}, "want 1..65536"},
	}
	for _, c := range cases {
		p := proctest.Start(t, c.name, c.args...)
		code, err := p.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := p.Output()
		if code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit code %d, output:\n%s\nwant exit 2 and %q", c.name, code, out, c.want)
		}
	}
}

func TestRuntimeFailureExit1(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	first := proctest.Member(t, "first", nil)
	if err := first.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// A second member on the same data address cannot listen.
	p := proctest.Start(t, "taken", "--name", "taken", "--bind", proctest.FreeAddr(t), "--addr", first.DataAddr)
	if code, err := p.Wait(ctx); err != nil || code != 1 {
		t.Fatalf("data address in use: exit code %d (%v), want 1; output:\n%s", code, err, p.Output())
	}
	// Unreachable seeds: the join gives up after --join-timeout.
	p = proctest.Member(t, "lonely", nil, "--join", proctest.FreeAddr(t), "--join-timeout", "1s")
	if code, err := p.Wait(ctx); err != nil || code != 1 {
		t.Fatalf("join of a dead seed: exit code %d (%v), want 1; output:\n%s", code, err, p.Output())
	}
}

// TestSecondSignalExitsAtOnce makes a graceful stop hang (the coordinator
// is frozen, and the leaver suspects it only after many seconds), then
// sends a second SIGTERM, more than a second after the first: the process
// must exit 1 at once.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	n1 := proctest.Member(t, "n1", nil)
	n2 := proctest.Member(t, "n2", []*proctest.Proc{n1}, "--suspicion-mult", "100", "--shutdown-timeout", "50s")
	waitStable(t, ctx, n1, n2)
	if err := n1.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := n2.Term(); err != nil {
		t.Fatal(err)
	}
	err := proctest.Poll(ctx, 20*time.Millisecond, func(context.Context) error {
		if n2.Exited() {
			return fmt.Errorf("n2: %w before the second signal", proctest.ErrExited)
		}
		if !strings.Contains(n2.Output(), "signal received") {
			return fmt.Errorf("n2 has not begun its graceful stop")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A repeat within a second of the first signal is the same request
	// (timeout(1) signals the process and its group; see
	// TestRepeatedSIGTERMStillHandsOver): the second signal that means
	// "now" comes after that gap. This wait is the behaviour under test,
	// not a synchronisation.
	select {
	case <-time.After(1200 * time.Millisecond):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	start := time.Now()
	if err := n2.Term(); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	code, err := n2.Wait(wctx)
	if err != nil {
		t.Fatalf("second SIGTERM: %v", err)
	}
	t.Logf("second SIGTERM: exited %d after %v", code, time.Since(start).Round(time.Millisecond))
	if code != 1 {
		t.Errorf("exit code %d after a second signal, want 1", code)
	}
	if err := n1.Cont(); err != nil {
		t.Fatal(err)
	}
}
