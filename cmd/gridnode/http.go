package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/shoalgrid/shoal/grid"
)

// statusDoc is the JSON document of GET /status: the member's grid.Stats
// (replication included: partitions_backup, unsynced_backups,
// backup_records, fenced, table_backups), plus "members", the member list
// itself, and a summary of the partition table. The parts are read one after
// another, not as one atomic snapshot.
type statusDoc struct {
	grid.Stats
	Members []memberDoc `json:"members"`
	Table   tableDoc    `json:"table"`
}

// memberDoc is one member as this member's gossip sees it.
type memberDoc struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Gossip  string `json:"gossip"`
	Zone    string `json:"zone"`
	Host    string `json:"host"`
	Leaving bool   `json:"leaving"`
}

// tableDoc summarises the partition table the member follows.
type tableDoc struct {
	Version    uint64 `json:"version"`
	Partitions int    `json:"partitions"`
	// Owners counts the partitions each member of the table owns
	// (members owning none are listed with 0).
	Owners map[string]int `json:"owners"`
	// Unowned counts partitions without an owner.
	Unowned int `json:"unowned"`
	// Assignment is the owner of each partition, by partition id; only
	// with ?assignment=true, since it is long.
	Assignment []string `json:"assignment,omitempty"`
}

// newHTTPHandler serves health, readiness, status and metrics for the
// member that member returns; it returns nil until the member has started
// (joining may take a while), and then only /healthz answers 200.
func newHTTPHandler(member func() *grid.Member) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		m := member()
		switch {
		case m == nil:
			writeText(w, http.StatusServiceUnavailable, "starting\n")
		case !m.HasQuorum():
			writeText(w, http.StatusServiceUnavailable, fmt.Sprintf("not ready: no quorum (%s)\n", m.QuorumView()))
		case m.Stats().Ready:
			writeText(w, http.StatusOK, "ready\n")
		default:
			writeText(w, http.StatusServiceUnavailable, "not ready: no partition table includes this member yet\n")
		}
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		m := member()
		if m == nil {
			writeText(w, http.StatusServiceUnavailable, "starting\n")
			return
		}
		withAssignment := false
		if v := r.URL.Query().Get("assignment"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				writeText(w, http.StatusBadRequest, "assignment: want true or false\n")
				return
			}
			withAssignment = b
		}
		b, err := json.MarshalIndent(status(m, withAssignment), "", "  ")
		if err != nil {
			writeText(w, http.StatusInternalServerError, fmt.Sprintf("encode status: %v\n", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(b, '\n'))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		m := member()
		if m == nil {
			writeText(w, http.StatusServiceUnavailable, "starting\n")
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(metrics(m.Stats()))
	})
	return mux
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

// status builds the /status document of m.
func status(m *grid.Member, withAssignment bool) statusDoc {
	doc := statusDoc{Stats: m.Stats(), Members: []memberDoc{}, Table: tableDoc{Owners: map[string]int{}}}
	for _, mi := range m.Members() {
		doc.Members = append(doc.Members, memberDoc{
			Name: mi.Name, Addr: mi.Addr, Gossip: mi.GossipAddr,
			Zone: mi.Zone, Host: mi.Host, Leaving: mi.Leaving,
		})
	}
	t := m.Table()
	if t == nil {
		return doc
	}
	doc.Table.Version = t.Version
	doc.Table.Partitions = t.Count
	for _, mb := range t.Members {
		doc.Table.Owners[mb.Name] = 0
	}
	if withAssignment {
		doc.Table.Assignment = make([]string, t.Count)
	}
	for p := range int32(t.Count) {
		o, ok := t.Owner(p)
		if !ok {
			doc.Table.Unowned++
			continue
		}
		doc.Table.Owners[o.Name]++
		if withAssignment {
			doc.Table.Assignment[p] = o.Name
		}
	}
	return doc
}

// metrics renders s in the Prometheus text exposition format 0.0.4.
func metrics(s grid.Stats) []byte {
	var b bytes.Buffer
	metric := func(name, typ, help string, v uint64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", name, help, name, typ, name, v)
	}
	metric("shoal_members", "gauge", "Live members this member's gossip sees, itself included.", uint64(s.Members))
	metric("shoal_table_version", "gauge", "Version of the partition table this member follows (0: none yet).", s.TableVersion)
	metric("shoal_partitions_owned", "gauge", "Partitions this member owns.", uint64(s.PartitionsOwned))
	metric("shoal_entries", "gauge", "Entries in the partitions this member owns.", uint64(s.Entries))
	metric("shoal_requests_served_total", "counter", "Requests executed on this member's partitions.", s.RequestsServed)
	metric("shoal_migrations_in_total", "counter", "Partitions this member received from others.", s.MigrationsIn)
	metric("shoal_migrations_out_total", "counter", "Partitions this member handed to others.", s.MigrationsOut)
	metric("shoal_coordinator", "gauge", "1 if this member publishes the partition tables, else 0.", boolMetric(s.Coordinator))
	metric("shoal_ready", "gauge", "1 if this member follows a partition table that includes it, else 0.", boolMetric(s.Ready))
	metric("shoal_leaving", "gauge", "1 while this member hands its partitions over before leaving, else 0.", boolMetric(s.Leaving))
	metric("shoal_partitions_backup", "gauge", "Partitions this member holds a backup of.", uint64(s.PartitionsBackup))
	metric("shoal_unsynced_backups", "gauge", "Backups of this member's partitions that do not hold every mutation yet (being copied, catching up, or a record in flight).", uint64(s.UnsyncedBackups))
	metric("shoal_table_backups", "gauge", "Backups per partition this member's configuration asks for.", uint64(s.TableBackups))
	metric("shoal_backup_records_total", "counter", "Mutations replayed on this member as a backup.", s.BackupRecords)
	metric("shoal_quorum", "gauge", "1 while this member sees a majority of the cluster's expected size (or every quorum rule is off), else 0.", boolMetric(s.Quorum))
	metric("shoal_quorum_visible", "gauge", "Members of the cluster's expected size this member sees, itself included.", uint64(s.QuorumVisible))
	metric("shoal_expected_size", "gauge", "The cluster's expected size: members agreed, less graceful leaves; crashes do not lower it.", uint64(s.ExpectedSize))
	metric("shoal_merge_discarded_total", "counter", "Entries discarded because this member owned their partitions on the losing side of a split (the winning side's values were kept).", s.MergeDiscarded)
	metric("shoal_merge_stored_total", "counter", "Entries of the losing side of a split that merge policies wrote into the winning side.", s.MergeStored)
	metric("shoal_fenced", "gauge", "1 while this member refuses owner operations after a pause, until the coordinator confirms its table, else 0.", boolMetric(s.Fenced))
	return b.Bytes()
}

func boolMetric(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
