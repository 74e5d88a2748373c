package grid

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// latencyBoundCount is the number of bounded buckets of a latency
// histogram (a last bucket takes the rest).
const latencyBoundCount = 16

// latencyBounds returns the upper bounds of the latency histogram's
// buckets, in nanoseconds. They follow Prometheus's usual 1-2.5-5 steps,
// from 50µs (a local get) to 5s (a write waiting out its backup timeout).
func latencyBounds() [latencyBoundCount]int64 {
	return [latencyBoundCount]int64{
		50e3, 100e3, 250e3, 500e3,
		1e6, 2.5e6, 5e6, 10e6, 25e6, 50e6, 100e6, 250e6, 500e6,
		1e9, 2.5e9, 5e9,
	}
}

// LatencyBounds returns the upper bounds of the buckets of OpLatency.Buckets
// (the last bucket, beyond them, is +Inf).
func LatencyBounds() []time.Duration {
	out := make([]time.Duration, latencyBoundCount)
	for i, b := range latencyBounds() {
		out[i] = time.Duration(b)
	}
	return out
}

// OpNamer is implemented by services that name their operation codes (for
// metrics); other services' operations are named by number.
type OpNamer interface {
	// OpName returns the name of operation op, or "" if it has none.
	OpName(op uint8) string
}

// OpLatency is the latency histogram of one operation of one service, as
// executed on this member: from the request reaching the member that owns
// its partition until its response is ready (for a mutation, once its
// synchronous backups acknowledged it).
type OpLatency struct {
	// Service is the structure kind ("map").
	Service string
	// Op is the operation's name ("put"), or its number.
	Op string
	// Buckets counts the requests per bucket (not cumulated); bucket i
	// holds latencies up to LatencyBounds()[i], the last one the rest.
	Buckets []uint64
	// Count is the number of requests, Sum their total latency.
	Count uint64
	Sum   time.Duration
}

// opHist is one operation's histogram: atomic counters only, so recording
// takes no lock and allocates nothing.
type opHist struct {
	buckets [latencyBoundCount + 1]atomic.Uint64
	count   atomic.Uint64
	sum     atomic.Uint64 // nanoseconds
}

// latencies holds the histograms of every service's operations, created on
// first use (one allocation per operation code ever seen).
type latencies struct {
	bounds   [latencyBoundCount]int64
	services []string
	names    [][256]string
	hists    [][256]atomic.Pointer[opHist]
}

func newLatencies(services []string, namer func(svc int, op uint8) string) *latencies {
	l := &latencies{
		bounds:   latencyBounds(),
		services: services,
		names:    make([][256]string, len(services)),
		hists:    make([][256]atomic.Pointer[opHist], len(services)),
	}
	for s := range services {
		for o := range 256 {
			name := namer(s, uint8(o))
			if name == "" {
				name = strconv.Itoa(o)
			}
			l.names[s][o] = name
		}
	}
	return l
}

// observe records one request of service index svc (out-of-range indexes
// are ignored) and operation o that took d.
func (l *latencies) observe(svc int, o uint8, d time.Duration) {
	if svc < 0 || svc >= len(l.hists) {
		return
	}
	p := &l.hists[svc][o]
	h := p.Load()
	if h == nil {
		h = &opHist{}
		if !p.CompareAndSwap(nil, h) {
			h = p.Load()
		}
	}
	ns := int64(d)
	i := 0
	for i < latencyBoundCount && ns > l.bounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.count.Add(1)
	h.sum.Add(uint64(max(ns, 0)))
}

// snapshot returns the histograms that recorded anything, by service then
// operation code. Each is read counter by counter while others may still
// add to it, so Count may differ from the buckets' sum by the requests in
// between.
func (l *latencies) snapshot() []OpLatency {
	var out []OpLatency
	for s := range l.hists {
		for o := range l.hists[s] {
			h := l.hists[s][o].Load()
			if h == nil {
				continue
			}
			ol := OpLatency{Service: l.services[s], Op: l.names[s][o], Buckets: make([]uint64, len(h.buckets))}
			for i := range h.buckets {
				ol.Buckets[i] = h.buckets[i].Load()
			}
			ol.Count = h.count.Load()
			ol.Sum = time.Duration(h.sum.Load())
			out = append(out, ol)
		}
	}
	return out
}

// OpLatencies returns the latency histograms of the operations executed on
// this member's partitions (see OpLatency), for metrics.
func (m *Member) OpLatencies() []OpLatency { return m.latency.snapshot() }

// observeLatency records the latency of req, executed on this member since
// start, unless it was refused before execution (another owner, a stale or
// migrating partition, an unknown service): those are routing, not work.
func (m *Member) observeLatency(req *op.Request, code op.Code, start time.Time) {
	switch code {
	case op.CodeWrongOwner, op.CodeStaleTable, op.CodeMigrating, op.CodeUnknownService:
		return
	}
	if svc, ok := m.svcIndex[req.Service]; ok {
		m.latency.observe(svc, req.Op, time.Since(start))
	}
}

// newMemberLatencies creates the histograms of the member's services.
func newMemberLatencies(services []op.Service) *latencies {
	names := make([]string, len(services))
	for i, s := range services {
		names[i] = s.Name()
	}
	return newLatencies(names, func(svc int, o uint8) string {
		if n, ok := services[svc].(OpNamer); ok {
			return n.OpName(o)
		}
		return ""
	})
}
