//go:build process

package process_test

import (
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/proctest"
)

// TestAdmissionRefusedExit1 starts gridnode processes that must not join a
// two-member cluster: another --cluster, a --name already in use, another
// --partitions. Each exits 1 at once (not after --join-timeout) with a
// message naming the reason, and the cluster keeps its two members and the
// member whose name was borrowed keeps its partitions.
func TestAdmissionRefusedExit1(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	procs := startCluster(t, ctx, 2)
	before := waitStable(t, ctx, procs...)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"foreign", []string{"--name", "foreign", "--cluster", "other"}, `is in cluster "shoal", this member in "other"`},
		{"duplicate", []string{"--name", "n2"}, "a member named n2 already runs at"},
		{"partitions", []string{"--name", "sixty", "--partitions", "61"}, "has 271 partitions, this member 61"},
	} {
		args := append([]string{"--bind", proctest.FreeAddr(t), "--addr", proctest.FreeAddr(t),
			"--join", procs[0].GossipAddr, "--join-timeout", "30s"}, c.args...)
		p := proctest.Start(t, c.name, args...)
		start := time.Now()
		code, err := p.Wait(ctx)
		if err != nil || code != 1 {
			t.Fatalf("%s: exit code %d (%v), want 1; output:\n%s", c.name, code, err, p.Output())
		}
		if !strings.Contains(p.Output(), c.want) || !strings.Contains(p.Output(), "refused by the cluster") {
			t.Fatalf("%s: output does not say %q:\n%s", c.name, c.want, p.Output())
		}
		t.Logf("%s refused in %v", c.name, time.Since(start).Round(time.Millisecond))
	}
	after := waitStable(t, ctx, procs...)
	for i := range procs {
		if after[i].PartitionsOwned != before[i].PartitionsOwned {
			t.Errorf("%s owned %d partitions before the refusals, %d after", procs[i].Name, before[i].PartitionsOwned, after[i].PartitionsOwned)
		}
	}
}
