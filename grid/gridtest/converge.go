package gridtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// WaitConverged waits until Stable holds for as long as the cluster makes
// progress towards it: a member adopts a newer table, a partition copy
// completes or chunks of one are sent, or the count of backups not in
// sync changes. It fails the test when nothing of that changed for stall
// (the cluster is stuck, whatever the machine's load) or when limit
// passes (it keeps changing without converging). Use it where a large
// migration under CPU load can take longer than WaitStable's fixed 30 s.
func (c *Cluster) WaitConverged(stall, limit time.Duration) {
	c.t.Helper()
	waitConverged(c.t, c.Stable, c.progress, stall, limit)
}

func waitConverged(t testing.TB, stable func() (bool, string), progress func() string, stall, limit time.Duration) {
	t.Helper()
	start := time.Now()
	last, lastAt := progress(), start
	for {
		ok, why := stable()
		if ok {
			return
		}
		now := time.Now()
		if p := progress(); p != last {
			last, lastAt = p, now
		}
		if now.Sub(lastAt) > stall {
			t.Fatalf("cluster not stable and no progress for %v (after %v): %s; progress %s", stall, now.Sub(start).Round(time.Millisecond), why, last)
			return
		}
		if now.Sub(start) > limit {
			t.Fatalf("cluster not stable after %v though still changing: %s; progress %s", limit, why, last)
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// progress summarises what changes while a cluster converges: each live
// member's table version, migration counters and unsynced backups.
func (c *Cluster) progress() string {
	var parts []string
	for _, m := range c.Live() {
		v := uint64(0)
		if t := m.Table(); t != nil {
			v = t.Version
		}
		st := m.Stats()
		parts = append(parts, fmt.Sprintf("%s:v%d/in%d/out%d/%dB/unsynced%d", m.Name(), v, st.MigrationsIn, st.MigrationsOut, st.MigrationBytesOut, st.UnsyncedBackups))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
