package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

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

// httpOptions are the optional parts of the HTTP server.
type httpOptions struct {
	// pprof mounts net/http/pprof under /debug/pprof/.
	pprof bool
	// started is when the process started, for process_start_time_seconds.
	started time.Time
	// cluster is the cluster's name, for the status page.
	cluster string
	// events are the recent events shown on the status page (may be nil).
	events *eventLog
}

// newHTTPHandler serves health, readiness, status and metrics for the
// member that member returns; it returns nil until the member has started
// (joining may take a while): then /healthz answers 200, /metrics answers
// with shoal_starting 1 and shoal_ready 0 (and the runtime's metrics), and
// the rest 503.
func newHTTPHandler(member func() *grid.Member, o httpOptions) http.Handler {
	if o.started.IsZero() {
		o.started = time.Now()
	}
	mux := http.NewServeMux()
	if o.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	ui := func(w http.ResponseWriter, r *http.Request) {
		serveUI(w, uiData(member(), o.cluster, o.events))
	}
	mux.HandleFunc("GET /{$}", ui)
	mux.HandleFunc("GET /ui", ui)
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
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(metricsPage(member(), o.started))
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
