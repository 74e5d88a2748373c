//go:build process

package process_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/proctest"
	shoalmaps "github.com/shoalgrid/shoal/maps"
)

// The failure tests below run writers through one client while members are
// killed, paused or restarted, then check with internal/faults that no
// acknowledged write was lost (see load_test.go).

const (
	writers  = 8
	loadTime = 2 * time.Second // load before and after each fault
)

// kill sends SIGKILL to each of procs back to back and waits for them to
// die.
func kill(t *testing.T, ctx context.Context, procs ...*proctest.Proc) time.Time {
	t.Helper()
	start := time.Now()
	for _, p := range procs {
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		if code, err := p.Wait(ctx); err != nil || code != -1 {
			t.Fatalf("%s after SIGKILL: exit code %d, %v", p.Name, code, err)
		}
	}
	return start
}

// TestKillNineUnderLoad kills one of three members (default profile: one
// synchronous backup) while eight writers overwrite 200 keys through one
// client: no acknowledged write may be lost, and the callers see no error.
// The client is seeded with n1 only; the victim is another member, or n1
// itself (the seed, and the oldest member: the coordinator).
func TestKillNineUnderLoad(t *testing.T) {
	for _, victim := range []int{2, 0} {
		name := "member"
		if victim == 0 {
			name = "seed"
		}
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t, 90*time.Second)
			procs := startCluster(t, ctx, 3)
			waitSettled(t, ctx, procs...)
			c := dial(t, ctx, procs[0])
			l := startLoad(t, ctx, c, writers, 0)
			runFor(ctx, loadTime)

			gone := procs[victim]
			rest := without(procs, gone)
			killed := kill(t, ctx, gone)
			watch := watchSettled(ctx, killed, rest...)
			runFor(ctx, loadTime)
			l.Stop()
			res := (<-watch).must(t, "kill -9 "+gone.Name)
			t.Logf("kill -9 of %s: survivors %v settled (table %d, members 2, unsynced backups 0) %v after the kill; load stopped %v after it",
				gone.Name, names(rest), res.sts[0].Table.Version, res.took.Round(time.Millisecond), l.stopped.Sub(killed).Round(time.Millisecond))
			l.verify(t, ctx)
		})
	}
}

// TestKillTwoWithTwoBackups kills two of five members at once; with
// --backup-count 2 every partition keeps a replica.
func TestKillTwoWithTwoBackups(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	procs := startCluster(t, ctx, 5, "--backup-count", "2")
	sts := waitSettled(t, ctx, procs...)
	if sts[0].TableBackups != 2 {
		t.Fatalf("table_backups %d, want 2", sts[0].TableBackups)
	}
	c := dial(t, ctx, procs[0])
	l := startLoad(t, ctx, c, writers, 0)
	runFor(ctx, loadTime)

	gone := []*proctest.Proc{procs[1], procs[3]}
	rest := slices.DeleteFunc(slices.Clone(procs), func(p *proctest.Proc) bool { return slices.Contains(gone, p) })
	killed := kill(t, ctx, gone...)
	watch := watchSettled(ctx, killed, rest...)
	runFor(ctx, loadTime)
	l.Stop()
	res := (<-watch).must(t, "kill -9 of two")
	t.Logf("kill -9 of %v: survivors %v settled (table %d) %v after the kills",
		names(gone), names(rest), res.sts[0].Table.Version, res.took.Round(time.Millisecond))
	l.verify(t, ctx)
}

// TestReReplication kills one of four members, waits until the survivors
// have copied new backups of everything (unsynced_backups 0 everywhere, the
// same table), then kills another: the second crash loses nothing either,
// which it would if the first had left partitions without a synced backup.
//
// Quorum is off: two of four members lost leave no majority, and the
// default rule would (rightly) stop the survivors; see partition_test.go.
func TestReReplication(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	procs := startCluster(t, ctx, 4, "--quorum", "off")
	waitSettled(t, ctx, procs...)
	c := dial(t, ctx, procs[0])
	l := startLoad(t, ctx, c, writers, 0)
	runFor(ctx, loadTime)

	alive := procs
	for _, victim := range []*proctest.Proc{procs[3], procs[1]} {
		alive = without(alive, victim)
		killed := kill(t, ctx, victim)
		res := (<-watchSettled(ctx, killed, alive...)).must(t, "kill -9 "+victim.Name)
		t.Logf("kill -9 of %s under load: survivors %v re-replicated and settled (table %d) %v after the kill; backup records replayed so far %v",
			victim.Name, names(alive), res.sts[0].Table.Version, res.took.Round(time.Millisecond), backupTotals(res.sts))
		runFor(ctx, loadTime/2)
	}
	l.verify(t, ctx)
}

// TestPausedMemberRejoins freezes one of three members (SIGSTOP) until the
// others declare it dead and move its partitions, while the writers go on;
// then resumes it. It must come back as an ordinary member (no stale owner
// serving: it fences itself until it has the current table), and nothing is
// lost or applied twice: besides the registers, the writers increment a
// counter by read and CompareAndSwap, and the final count must match the
// acknowledged increments.
func TestPausedMemberRejoins(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	procs := startCluster(t, ctx, 3)
	waitSettled(t, ctx, procs...)
	c := dial(t, ctx, procs[0])
	l := startLoad(t, ctx, c, writers, 4)
	runFor(ctx, loadTime)

	paused := procs[2]
	rest := without(procs, paused)
	stopped := time.Now()
	if err := paused.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = paused.Cont() }) // so that the cleanup kill is not held up
	// Declared dead: the others see two members and a table without it.
	err := proctest.Poll(ctx, 20*time.Millisecond, func(ctx context.Context) error {
		for _, p := range rest {
			st, err := p.Status(ctx)
			if err != nil {
				return err
			}
			if _, still := st.Table.Owners[paused.Name]; still || len(st.Members) != 2 {
				return fmt.Errorf("%s: members %d, table %d owners %v", p.Name, len(st.Members), st.Table.Version, st.Table.Owners)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s was not declared dead: %v", paused.Name, err)
	}
	dead := time.Since(stopped)
	runFor(ctx, loadTime/2) // the writers go on without it
	if err := paused.Cont(); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	res := (<-watchSettled(ctx, resumed, procs...)).must(t, "SIGCONT "+paused.Name)
	runFor(ctx, loadTime/2)
	t.Logf("SIGSTOP of %s: declared dead and its partitions moved %v later; after SIGCONT (%v frozen) all three settled (table %d, members 3) in %v",
		paused.Name, dead.Round(time.Millisecond), resumed.Sub(stopped).Round(time.Millisecond), res.sts[0].Table.Version, res.took.Round(time.Millisecond))
	if !res.sts[2].Ready || res.sts[2].PartitionsOwned == 0 {
		t.Errorf("%s after rejoining: %+v, want an ordinary member owning partitions", paused.Name, res.sts[2].Stats)
	}
	if paused.Exited() {
		t.Fatalf("%s exited after SIGCONT", paused.Name)
	}
	t.Logf("%s fenced itself after the pause: %v", paused.Name, strings.Contains(paused.Output(), "fenced: refusing owner operations"))
	l.verify(t, ctx)
}

// TestRollingRestartUnderLoad stops each of three members in turn with
// SIGTERM (it must exit 0 after handing its partitions over) and starts it
// again under the same name and ports, joining a live member, while the
// writers go on: nothing is lost.
func TestRollingRestartUnderLoad(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	procs := startCluster(t, ctx, 3)
	waitSettled(t, ctx, procs...)
	c := dial(t, ctx, procs...)
	l := startLoad(t, ctx, c, writers, 0)
	runFor(ctx, loadTime)

	for i := range procs {
		old := procs[i]
		start := time.Now()
		if err := old.Term(); err != nil {
			t.Fatal(err)
		}
		code, err := old.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 {
			t.Fatalf("%s exited %d after SIGTERM under load, want 0", old.Name, code)
		}
		exited := time.Since(start)
		seed := procs[(i+1)%len(procs)]
		procs[i] = proctest.Restart(t, old, []*proctest.Proc{seed})
		res := (<-watchSettled(ctx, start, procs...)).must(t, "restart "+old.Name)
		t.Logf("rolling restart of %s: exited 0 %v after SIGTERM; restarted (joining %s), all three settled (table %d) %v after SIGTERM",
			old.Name, exited.Round(time.Millisecond), seed.Name, res.sts[0].Table.Version, res.took.Round(time.Millisecond))
		runFor(ctx, loadTime/2)
	}
	l.verify(t, ctx)
}

// TestPerformanceProfileHasNoBackups runs 2000 puts on three members with
// --profile performance: no member holds or receives backups.
func TestPerformanceProfileHasNoBackups(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	procs := startCluster(t, ctx, 3, "--profile", "performance")
	waitSettled(t, ctx, procs...)
	c := dial(t, ctx, procs[0])
	m := shoalmaps.New(c, "perf")
	start := time.Now()
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			var err error
			for i := range 2000 / writers {
				if err = m.Put(ctx, key(w, i), []byte(strconv.Itoa(i))); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	sts := waitSettled(t, ctx, procs...)
	var served, entries uint64
	for i, st := range sts {
		served += st.RequestsServed
		entries += uint64(st.Entries)
		mt, err := procs[i].Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.TableBackups != 0 || st.PartitionsBackup != 0 || st.BackupRecords != 0 || st.UnsyncedBackups != 0 ||
			mt["shoal_backup_records_total"] != 0 || mt["shoal_partitions_backup"] != 0 {
			t.Errorf("%s: table_backups %d partitions_backup %d backup_records %d unsynced %d; metrics backup_records %v partitions_backup %v: want no backups",
				st.Name, st.TableBackups, st.PartitionsBackup, st.BackupRecords, st.UnsyncedBackups, mt["shoal_backup_records_total"], mt["shoal_partitions_backup"])
		}
	}
	t.Logf("performance profile: 2000 puts by %d writers in %v (%.0f/s); members served %d requests, hold %d entries; backup records %v, partitions backed up 0",
		writers, took.Round(time.Millisecond), 2000/took.Seconds(), served, entries, backupTotals(sts))
	if entries != 2000 {
		t.Errorf("%d entries, want 2000", entries)
	}
}
