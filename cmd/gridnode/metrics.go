package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/shoalgrid/shoal/grid"
)

// expo writes the Prometheus text exposition format 0.0.4.
type expo struct{ b bytes.Buffer }

// head writes the HELP and TYPE lines of a metric family.
func (e *expo) head(name, typ, help string) {
	fmt.Fprintf(&e.b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// sample writes one sample; labels are name, value pairs.
func (e *expo) sample(name string, v float64, labels ...string) {
	e.b.WriteString(name)
	if len(labels) > 0 {
		e.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				e.b.WriteByte(',')
			}
			e.b.WriteString(labels[i])
			e.b.WriteString(`="`)
			e.b.WriteString(escapeLabel(labels[i+1]))
			e.b.WriteByte('"')
		}
		e.b.WriteByte('}')
	}
	e.b.WriteByte(' ')
	e.b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	e.b.WriteByte('\n')
}

// metric writes a family with one unlabelled sample.
func (e *expo) metric(name, typ, help string, v float64) {
	e.head(name, typ, help)
	e.sample(name, v)
}

// escapeLabel escapes a label value: backslash, double quote and newline.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsPage renders /metrics: the member's own metrics (only shoal_ready
// 0 and shoal_starting 1 before it has started, while it joins), its
// per-operation latency histograms, the build, the Go runtime and the
// process.
func metricsPage(m *grid.Member, started time.Time) []byte {
	var e expo
	e.metric("shoal_starting", "gauge", "1 while gridnode starts and joins its cluster (the member's other shoal_ metrics are absent), else 0.", b2f(m == nil))
	if m == nil {
		e.metric("shoal_ready", "gauge", "1 if this member follows a partition table that includes it, else 0.", 0)
	} else {
		memberMetrics(&e, m.Stats())
		latencyMetrics(&e, m.OpLatencies())
		if limit, used, full := m.MemoryGuard(); limit > 0 {
			e.metric("shoal_memory_limit_bytes", "gauge", "The memory guard's limit (--max-memory) on the Go heap in use.", float64(limit))
			e.metric("shoal_memory_heap_in_use_bytes", "gauge", "Go heap in use at the memory guard's last sample (every 50 ms).", float64(used))
			e.metric("shoal_memory_full", "gauge", "1 while the heap in use is above --max-memory and writes that may grow state are refused with ErrMapFull, else 0.", b2f(full))
			e.metric("shoal_memory_evicted_total", "counter", "Map entries this member evicted as owner while above --max-memory (maps with an eviction policy).", float64(m.MemoryEvictions()))
		}
	}
	buildMetrics(&e)
	runtimeMetrics(&e)
	processMetrics(&e, started)
	return e.b.Bytes()
}

// memberMetrics renders grid.Stats.
func memberMetrics(e *expo, s grid.Stats) {
	e.metric("shoal_members", "gauge", "Live members this member's gossip sees, itself included.", float64(s.Members))
	e.metric("shoal_table_version", "gauge", "Version of the partition table this member follows (0: none yet).", float64(s.TableVersion))
	e.metric("shoal_partitions_owned", "gauge", "Partitions this member owns.", float64(s.PartitionsOwned))
	e.metric("shoal_entries", "gauge", "Entries in the partitions this member owns.", float64(s.Entries))
	e.metric("shoal_requests_served_total", "counter", "Requests executed on this member's partitions.", float64(s.RequestsServed))
	e.metric("shoal_migrations_in_total", "counter", "Partitions this member received from others.", float64(s.MigrationsIn))
	e.metric("shoal_migrations_out_total", "counter", "Partitions this member handed to others.", float64(s.MigrationsOut))
	e.metric("shoal_migration_out_bytes_total", "counter", "Bytes of the partition copies this member sent.", float64(s.MigrationBytesOut))
	e.metric("shoal_coordinator", "gauge", "1 if this member publishes the partition tables, else 0.", b2f(s.Coordinator))
	e.metric("shoal_ready", "gauge", "1 if this member follows a partition table that includes it, else 0.", b2f(s.Ready))
	e.metric("shoal_leaving", "gauge", "1 while this member hands its partitions over before leaving, else 0.", b2f(s.Leaving))
	e.metric("shoal_partitions_backup", "gauge", "Partitions this member holds a backup of.", float64(s.PartitionsBackup))
	e.metric("shoal_unsynced_backups", "gauge", "Backups of this member's partitions that do not hold every mutation yet (being copied, catching up, or a record in flight).", float64(s.UnsyncedBackups))
	e.metric("shoal_table_backups", "gauge", "Backups per partition this member's configuration asks for.", float64(s.TableBackups))
	e.metric("shoal_backup_records_total", "counter", "Mutations replayed on this member as a backup.", float64(s.BackupRecords))
	e.metric("shoal_quorum", "gauge", "1 while this member sees a majority of the cluster's expected size (or every quorum rule is off), else 0.", b2f(s.Quorum))
	e.metric("shoal_quorum_visible", "gauge", "Members of the cluster's expected size this member sees, itself included.", float64(s.QuorumVisible))
	e.metric("shoal_expected_size", "gauge", "The cluster's expected size: members agreed, less graceful leaves; crashes do not lower it.", float64(s.ExpectedSize))
	e.metric("shoal_merge_discarded_total", "counter", "Entries discarded because this member owned their partitions on the losing side of a split (the winning side's values were kept).", float64(s.MergeDiscarded))
	e.metric("shoal_merge_stored_total", "counter", "Entries of the losing side of a split that merge policies wrote into the winning side.", float64(s.MergeStored))
	e.metric("shoal_replicated_dropped_total", "counter", "Replicated-map deltas not delivered to a peer (anti-entropy repairs them).", float64(s.ReplicatedDropped))
	e.metric("shoal_replicated_pulled_bytes_total", "counter", "Bytes of replicated-map state merged by anti-entropy pulls.", float64(s.ReplicatedPulled))
	e.metric("shoal_merge_reports_total", "counter", "Merge reports emitted: heals after which this member let go of partitions it owned on the losing side of a split.", float64(s.MergeReports))
	e.metric("shoal_conns_open", "gauge", "Connections open on the data port, handshakes included.", float64(s.ConnsOpen))
	e.metric("shoal_conns_refused_total", "counter", "Connections closed at once for being over the connection limits.", float64(s.ConnsRefused))
	e.metric("shoal_fenced", "gauge", "1 while this member refuses owner operations after a pause, until the coordinator confirms its table, else 0.", b2f(s.Fenced))
}

// latencyMetrics renders the per-operation histograms as one Prometheus
// histogram family, labelled by service and op.
func latencyMetrics(e *expo, ls []grid.OpLatency) {
	const name = "shoal_op_duration_seconds"
	e.head(name, "histogram", "Latency of the operations executed on this member's partitions, from arrival to response (mutations: until their synchronous backups acknowledged), by structure kind and operation.")
	bounds := grid.LatencyBounds()
	for _, l := range ls {
		var cum uint64
		for i, n := range l.Buckets {
			cum += n
			le := "+Inf"
			if i < len(bounds) {
				le = strconv.FormatFloat(bounds[i].Seconds(), 'g', -1, 64)
			}
			e.sample(name+"_bucket", float64(cum), "service", l.Service, "op", l.Op, "le", le)
		}
		e.sample(name+"_sum", l.Sum.Seconds(), "service", l.Service, "op", l.Op)
		// The count is the +Inf bucket, as the format requires, even if
		// requests were recorded while the buckets were being read.
		e.sample(name+"_count", float64(cum), "service", l.Service, "op", l.Op)
	}
}

// buildMetrics renders shoal_build_info.
func buildMetrics(e *expo) {
	revision := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	e.head("shoal_build_info", "gauge", "Always 1; the labels say which gridnode build runs.")
	e.sample("shoal_build_info", 1, "version", buildVersion(), "revision", revision, "goversion", runtime.Version())
}

// runtimeSample is one runtime/metrics value exported as a go_ family.
type runtimeSample struct{ key, name, typ, help string }

// runtimeSamples returns the runtime/metrics read for the go_ families.
func runtimeSamples() []runtimeSample {
	return []runtimeSample{
		{"/sched/goroutines:goroutines", "go_goroutines", "gauge", "Goroutines that currently exist."},
		{"/sched/gomaxprocs:threads", "go_gomaxprocs", "gauge", "GOMAXPROCS: threads that may run Go code at once."},
		{"/memory/classes/heap/objects:bytes", "go_heap_objects_bytes", "gauge", "Bytes of live and not yet swept heap objects."},
		{"/memory/classes/total:bytes", "go_memory_total_bytes", "gauge", "All memory mapped by the Go runtime."},
		{"/gc/heap/goal:bytes", "go_gc_heap_goal_bytes", "gauge", "Heap size at which the next GC cycle starts."},
		{"/gc/cycles/total:gc-cycles", "go_gc_cycles_total", "counter", "Completed GC cycles."},
		{"/gc/heap/allocs:bytes", "go_heap_allocs_bytes_total", "counter", "Bytes allocated on the heap since start."},
		{"/cpu/classes/gc/total:cpu-seconds", "go_gc_cpu_seconds_total", "counter", "Estimated CPU time spent in the GC."},
	}
}

// runtimeMetrics renders the Go runtime's metrics.
func runtimeMetrics(e *expo) {
	rs := runtimeSamples()
	samples := make([]metrics.Sample, len(rs))
	for i, r := range rs {
		samples[i].Name = r.key
	}
	metrics.Read(samples)
	for i, r := range rs {
		var v float64
		switch samples[i].Value.Kind() {
		case metrics.KindUint64:
			v = float64(samples[i].Value.Uint64())
		case metrics.KindFloat64:
			v = samples[i].Value.Float64()
		default:
			continue // not supported by this Go version
		}
		e.metric(r.name, r.typ, r.help, v)
	}
	e.metric("go_threads", "gauge", "OS threads created by the Go runtime.", float64(pprof.Lookup("threadcreate").Count()))
	e.head("go_info", "gauge", "Always 1; the label is the Go version.")
	e.sample("go_info", 1, "version", runtime.Version())
}

// processMetrics renders the process_ families that this platform can
// tell (see process_*.go).
func processMetrics(e *expo, started time.Time) {
	e.metric("process_start_time_seconds", "gauge", "Start time of the process, in seconds since the Unix epoch.", float64(started.UnixNano())/1e9)
	p := readProcess()
	if p.cpu >= 0 {
		e.metric("process_cpu_seconds_total", "counter", "User and system CPU time of the process.", p.cpu)
	}
	if p.rss >= 0 {
		e.metric("process_resident_memory_bytes", "gauge", "Resident memory of the process.", p.rss)
	}
	if p.openFDs >= 0 {
		e.metric("process_open_fds", "gauge", "Open file descriptors.", p.openFDs)
	}
	if p.maxFDs >= 0 {
		e.metric("process_max_fds", "gauge", "Limit on open file descriptors.", p.maxFDs)
	}
}

// processInfo is what readProcess found; -1 where unknown.
type processInfo struct{ cpu, rss, openFDs, maxFDs float64 }

// readProcFDs counts /proc/self/fd (Linux), or returns -1.
func readProcFDs() float64 {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return float64(len(ents))
}

// readProcRSS reads the resident set from /proc/self/statm (Linux), or
// returns -1.
func readProcRSS() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return -1
	}
	pages, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		return -1
	}
	return pages * float64(os.Getpagesize())
}
