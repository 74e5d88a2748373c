package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/partition"
)

// httpStopTimeout bounds how long in-flight HTTP requests may finish once
// the member has stopped.
const httpStopTimeout = 5 * time.Second

// run starts the HTTP server (if any) and the member, then waits for the
// first signal on sigs and leaves the cluster gracefully. A signal more
// than signalCoalesce after the first calls exit(1) at once. It returns the
// process exit code.
// mutexProfileFraction is the share of lock contention events sampled
// (1 in N) while --pprof is on.
const mutexProfileFraction = 20

func run(o options, log *slog.Logger, stderr io.Writer, sigs <-chan os.Signal, exit func(int)) int {
	started := time.Now()
	events := newEventLog(50)
	events.add("starting", fmt.Sprintf("gridnode %s starting (cluster %s)", buildVersion(), o.cluster))
	stop, requestStop := context.WithCancel(context.Background())
	defer requestStop()
	done := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		watchSignals(sigs, log, func() { events.add("stopping", "signal received: leaving the cluster gracefully"); requestStop() }, exit, done, time.Now)
	}()
	defer func() {
		close(done)
		<-watcherDone
	}()

	// The HTTP server starts first so that a busy port fails before this
	// member joins (and at once leaves) a cluster, and so that /healthz
	// answers while a slow join is still retrying.
	var member atomic.Pointer[grid.Member]
	var httpDone <-chan struct{}
	httpAddr := ""
	if o.pprof {
		// Sample lock contention too, so /debug/pprof/mutex answers the
		// question profiles of a busy member are usually taken for; one
		// event in mutexProfileFraction costs next to nothing.
		runtime.SetMutexProfileFraction(mutexProfileFraction)
	}
	if o.http != "" {
		hs, err := startHTTP(o.http, newHTTPHandler(member.Load, httpOptions{pprof: o.pprof, started: started, cluster: o.cluster, events: events}), log)
		if err != nil {
			log.Error("cannot start the HTTP server", "err", err)
			return 1
		}
		defer hs.stop(log)
		httpDone, httpAddr = hs.done, hs.addr
	}

	for _, w := range o.sec.warnings {
		log.Warn(w)
	}
	if len(o.sec.keys) == 0 && (o.insecure || o.sec.serverTLS != nil) {
		log.Warn("no --cluster-key-file: any process that reaches the data or gossip port can act as a member (publish tables, drop data); use one outside a trusted network (docs/security.md)")
	}
	cfg := o.gridConfig(log)
	if cfg.MaxMemory > 0 && os.Getenv("GOMEMLIMIT") == "" {
		// The guard keeps live data near MaxMemory; a soft limit of twice
		// that keeps the garbage collector from letting the heap grow to
		// GOGC's twice-the-live-heap plus the overshoot of a sample.
		debug.SetMemoryLimit(2 * cfg.MaxMemory)
	}
	startCtx, cancelStart := context.WithTimeout(stop, o.joinTimeout)
	m, err := grid.Start(startCtx, cfg)
	cancelStart()
	if err != nil {
		switch {
		case stop.Err() != nil:
			log.Info("stopped before the member started", "err", err)
			return 0
		case errors.Is(err, grid.ErrConfig):
			fmt.Fprintf(stderr, "gridnode: %v (see gridnode -h)\n", err)
			return 2
		case errors.Is(err, grid.ErrRefused):
			log.Error("the cluster refused this member: fix its configuration", "err", err)
			fmt.Fprintf(stderr, "gridnode: %v\n", err)
			return 1
		}
		log.Error("cannot start the member", "err", err)
		return 1
	}
	member.Store(m)
	events.add("started", fmt.Sprintf("member %s started: data %s, gossip %s", m.Name(), m.Addr(), m.GossipAddr()))
	memberEvents, unsubscribe := m.Subscribe(64)
	size, coord := len(m.Members()), m.IsCoordinator()
	log.Info("gridnode running: clients connect to the data address",
		"version", buildVersion(), "data", m.Addr(), "gossip", m.GossipAddr(), "http", httpAddr,
		"cluster", o.cluster, "members", size, "coordinator", coord,
		"gomaxprocs", runtime.GOMAXPROCS(0), "sysmon_awake", sysmonAwake(os.Getenv("GODEBUG")),
		"max_memory_bytes", cfg.MaxMemory)
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		logMembership(log, m, memberEvents, size, coord, events)
	}()

	code := 0
	select {
	case <-stop.Done():
	case <-httpDone:
		log.Error("HTTP server failed: leaving the cluster")
		code = 1
	}
	// While leaving, this member's own view of the cluster is no news; the
	// grid logs the hand-over.
	unsubscribe()
	<-logged
	ctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	err = m.Shutdown(ctx)
	cancel()
	if err != nil {
		log.Error("graceful shutdown incomplete", "err", err)
		code = 1
	}
	log.Info("gridnode stopped", "exit_code", code)
	return code
}

// signalCoalesce is how long after the first signal a repeat counts as the
// same request: timeout(1), systemd and kill -TERM -PGID signal both the
// process and its group, so one stop request often arrives twice within a
// millisecond. Only a signal after this gap means "exit now".
const signalCoalesce = time.Second

// watchSignals calls stop at the first signal and exit(1) at the next one
// that arrives at least signalCoalesce later (now tells the time), until
// done is closed.
func watchSignals(sigs <-chan os.Signal, log *slog.Logger, stop func(), exit func(int), done <-chan struct{}, now func() time.Time) {
	var first time.Time
	select {
	case s := <-sigs:
		first = now()
		log.Info("signal received: leaving the cluster gracefully (send it again after a second to exit at once)", "signal", s.String())
		stop()
	case <-done:
		return
	}
	for {
		select {
		case s := <-sigs:
			if d := now().Sub(first); d < signalCoalesce {
				log.Info("signal repeated within the coalescing window: still leaving gracefully", "signal", s.String(),
					"after", d.String(), "window", signalCoalesce.String())
				continue
			}
			log.Error("second signal received: exiting at once, partitions not handed over are lost", "signal", s.String())
			exit(1)
			return
		case <-done:
			return
		}
	}
}

// logMembership logs what grid's own per-peer event logs do not say: the
// cluster size as this member sees it, and when this member starts or stops
// coordinating. It records every event, and those, in recent for the status
// page. It returns when events is closed.
func logMembership(log *slog.Logger, m *grid.Member, events <-chan grid.Event, size int, coord bool, recent *eventLog) {
	for ev := range events {
		text := "member " + ev.Member.Name
		switch {
		case ev.Lost != nil:
			text = fmt.Sprintf("%d partitions lost (table version %s): they start again empty", len(ev.Lost.Partitions), partition.VersionString(ev.Lost.Version))
		case ev.Merge != nil:
			text = fmt.Sprintf("merge after a split: let go of %d partitions (%d entries) at table version %s", ev.Merge.Partitions, ev.Merge.Entries, partition.VersionString(ev.Merge.TableVersion))
			for _, mc := range ev.Merge.Structures {
				text += fmt.Sprintf("; %s %s: %s, %d entries, %d stored, %d discarded", mc.Service, mc.Structure, mc.Policy, mc.Entries, mc.Stored, mc.Discarded)
			}
		case ev.Quorum != nil:
			text = "quorum: " + ev.Quorum.String()
		}
		recent.add(ev.Type.String(), text)
		if n := len(m.Members()); n != size {
			size = n
			log.Info("cluster size changed", "members", size)
			recent.add("size", fmt.Sprintf("cluster size now %d", size))
		}
		if c := m.IsCoordinator(); c != coord {
			coord = c
			if c {
				log.Info("this member now coordinates the partition table")
				recent.add("coordinator", "this member now coordinates the partition table")
			} else {
				log.Info("this member no longer coordinates the partition table")
				recent.add("coordinator", "this member no longer coordinates the partition table")
			}
		}
	}
}

// httpServer is the HTTP server for health, status and metrics.
type httpServer struct {
	srv  *http.Server
	addr string
	done chan struct{} // closed when Serve returns
}

// startHTTP listens on addr and serves h until stop.
func startHTTP(addr string, h http.Handler, log *slog.Logger) (*httpServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listen on %s: %w", addr, err)
	}
	hs := &httpServer{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		addr: ln.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(hs.done)
		if err := hs.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server", "err", err)
		}
	}()
	return hs, nil
}

// stop shuts the server down, letting in-flight requests finish briefly.
func (hs *httpServer) stop(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), httpStopTimeout)
	defer cancel()
	if err := hs.srv.Shutdown(ctx); err != nil {
		log.Warn("HTTP server shutdown", "err", err)
	}
	<-hs.done
}

// sysmonAwake reports whether GODEBUG keeps the Go runtime's monitor thread
// from parking (schedtrace set), the tuning README.md recommends on VMs.
// Logged at start so that an operator sees which runtime a member has.
func sysmonAwake(godebug string) bool {
	awake := false
	for _, kv := range strings.Split(godebug, ",") { // the last setting wins, as in the runtime
		if v, ok := strings.CutPrefix(strings.TrimSpace(kv), "schedtrace="); ok {
			n, err := strconv.Atoi(v)
			awake = err == nil && n > 0
		}
	}
	return awake
}
