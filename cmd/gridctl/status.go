package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/shoalgrid/shoal/partition"
)

// memberStatus is one member's line of the status report.
type memberStatus struct {
	Name             string `json:"name"`
	Addr             string `json:"addr"`
	Zone             string `json:"zone,omitempty"`
	Host             string `json:"host,omitempty"`
	PartitionsOwned  int    `json:"partitions_owned"`
	PartitionsBackup int    `json:"partitions_backup"`
	// Quorum is the member's own quorum view ("yes 3/3 need 2"), or "?"
	// when it did not report.
	Quorum string `json:"quorum"`
}

// clusterStatus is the status report, as printed by status --json.
type clusterStatus struct {
	Members        []memberStatus `json:"members"`
	TableVersion   uint64         `json:"table_version"`
	PartitionCount int            `json:"partition_count"`
	Safe           bool           `json:"safe"`
	// Why explains an unsafe cluster.
	Why string `json:"why,omitempty"`
	// Replicas is the replica count a partition needs to be safe, and
	// Unsafe how many partitions have fewer; both only for the text report.
	Replicas int `json:"-"`
	Unsafe   int `json:"-"`
}

// statusCmd implements "gridctl status".
func statusCmd(ctx context.Context, e env, g *globals, args []string) error {
	fs := newFlagSet("status")
	pos, err := parseCommand(e, "status", fs, g, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("status", "status takes no arguments, got %q", pos[0])
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	st := statusOf(c.Table())
	// Each member judges its own quorum: a cut-off member says so even
	// when this client still reaches it.
	sts, _ := c.Status(ctx) // members that do not answer show "?"
	for i := range st.Members {
		for _, ms := range sts {
			if ms.Name == st.Members[i].Name {
				st.Members[i].Quorum = quorumText(ms.Quorum, ms.QuorumVisible, ms.ExpectedSize, ms.QuorumNeeded)
			}
		}
	}
	// The members themselves know whether their backups are in sync and
	// how many backups they keep: ask them (the table alone cannot tell).
	safe, why, err := c.Safe(ctx)
	switch {
	case err != nil:
		st.Safe, st.Why = false, err.Error()
	case !safe:
		st.Safe, st.Why = false, why
	}
	if g.json {
		return writeJSON(e.stdout, st)
	}
	return writeStatus(e.stdout, g.cluster, st)
}

// statusOf derives the report from a partition table. Whether the cluster
// is safe is judged from the table alone: the backup count is not
// published, so it is taken as the largest replica count seen minus one
// (a partition that has lost a backup then shows up as short), and a
// partition cannot hold more replicas than there are members. A member
// that crashed but is still in the table is not detected: the table only
// changes once the cluster has noticed.
func statusOf(t *partition.Table) clusterStatus {
	st := clusterStatus{Members: []memberStatus{}}
	if t == nil {
		return st
	}
	st.TableVersion, st.PartitionCount = t.Version, t.Count
	for _, m := range t.Members {
		st.Members = append(st.Members, memberStatus{
			Name:             m.Name,
			Addr:             m.Addr,
			Zone:             m.Zone,
			Host:             m.Host,
			PartitionsOwned:  len(t.Owned(m.Name)),
			PartitionsBackup: len(t.BackedUp(m.Name)),
			Quorum:           "?",
		})
	}
	maxReplicas := 0
	for p := range int32(t.Count) {
		maxReplicas = max(maxReplicas, t.ReplicaCount(p))
	}
	backups := max(maxReplicas-1, 0)
	st.Replicas = min(1+backups, len(t.Members))
	for p := range int32(t.Count) {
		if _, ok := t.Owner(p); !ok || t.ReplicaCount(p) < st.Replicas {
			st.Unsafe++
		}
	}
	st.Safe = st.Unsafe == 0 && st.Replicas > 0
	return st
}

// writeStatus prints the human report: a summary line and an aligned table.
func writeStatus(w io.Writer, cluster string, st clusterStatus) error {
	safe := "yes"
	if !st.Safe {
		safe = fmt.Sprintf("NO (%d partitions below %d replicas)", st.Unsafe, st.Replicas)
		if st.Why != "" {
			safe = "NO (" + st.Why + ")"
		}
	}
	fmt.Fprintf(w, "cluster %s: %d members, table version %s, %d partitions, %d replica(s) each, safe: %s\n\n",
		cluster, len(st.Members), partition.VersionString(st.TableVersion), st.PartitionCount, st.Replicas, safe)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDR\tZONE\tHOST\tOWNED\tBACKUP\tQUORUM")
	for _, m := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", m.Name, m.Addr, dash(m.Zone), dash(m.Host), m.PartitionsOwned, m.PartitionsBackup, m.Quorum)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeJSON prints v as one JSON object followed by a newline.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// quorumText renders a member's quorum view: "yes (3 of 3 visible, 2
// needed)" or "NO (1 of 3 visible, 2 needed)".
func quorumText(ok bool, visible, expected, needed int) string {
	verdict := "yes"
	if !ok {
		verdict = "NO"
	}
	return fmt.Sprintf("%s (%d of %d visible, %d needed)", verdict, visible, expected, needed)
}
