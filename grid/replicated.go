package grid

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/sysop"
)

// Replicated (member-wide) services, op.ReplicatedService: every member
// holds a full copy, answers proxies' calls from it at once and sends each
// change's delta to every other member over the member connections (which
// a cluster key authenticates and TLS encrypts, like all member traffic).
// Anti-entropy repairs what deltas missed (a member that was down, cut
// off, or that just joined): every wideSyncEvery, and when a member joins
// or comes back, a member pulls from a peer: it sends its digest, the peer
// answers with what differs, in messages of at most about wideLimit
// bytes. Deltas are queued per peer (widePeerQueue); a full queue drops
// deltas, which anti-entropy repairs.

const (
	// widePeerQueue bounds the deltas waiting for one peer.
	widePeerQueue = 4096
	// wideSweepEvery is how often deletion markers are garbage-collected.
	wideSweepEvery = 30 * time.Second
	// widePullRounds bounds the pulls of one exchange (each returns more
	// maps while the peer has more that differ).
	widePullRounds = 64
)

// wideService is a member's copy of one replicated service.
type wideService struct {
	name string
	svc  op.ReplicatedService
	grow op.Grower

	mu sync.Mutex // serialises the replica (op.Replica is not safe for concurrent use)
	r  op.Replica
	x  op.Exec
}

// wide holds the member's replicated services and the senders of their
// deltas.
type wide struct {
	svcs  map[string]*wideService
	order []*wideService
	// pull receives members to pull from at once (joins, returns).
	pull chan string

	mu      sync.Mutex
	senders map[string]*wideSender
}

// wideSender sends deltas to one peer, in order, from its own goroutine.
type wideSender struct {
	ch   chan wideDelta
	stop chan struct{}
}

type wideDelta struct {
	service string
	msg     []byte
	// ack, if set, hears whether the peer merged the delta (once).
	ack func(error)
}

// wideWait collects the peers' acknowledgements of one write: the write
// is answered once need of them merged it (the structure's synchronous
// backup count, at most the live peers), or fails when too many failed or
// the backup timeout passed.
type wideWait struct {
	mu      sync.Mutex
	need    int
	total   int
	ok, bad int
	fired   bool
	timer   *time.Timer
	done    func(error)
}

func (w *wideWait) ack(err error) {
	w.mu.Lock()
	if w.fired {
		w.mu.Unlock()
		return
	}
	if err == nil {
		w.ok++
	} else {
		w.bad++
	}
	var res error
	switch {
	case w.ok >= w.need:
	case w.bad > w.total-w.need:
		res = fmt.Errorf("%w: %d of %d members could not take the write (%v)", op.ErrBackupTimeout, w.bad, w.total, err)
	default:
		w.mu.Unlock()
		return
	}
	w.fire(res)
}

// fire answers the write; w.mu is held and released.
func (w *wideWait) fire(err error) {
	w.fired = true
	if w.timer != nil {
		w.timer.Stop()
	}
	w.mu.Unlock()
	w.done(err)
}

func newWide() *wide {
	return &wide{svcs: map[string]*wideService{}, pull: make(chan string, 64), senders: map[string]*wideSender{}}
}

// add registers replicated service rs with member's copy.
func (w *wide) add(rs op.ReplicatedService, member string) {
	ws := &wideService{name: rs.Name(), svc: rs, r: rs.NewReplica(member)}
	ws.grow, _ = rs.(op.Grower)
	w.order = append(w.order, ws)
	w.svcs[ws.name] = ws
}

// wideService returns the replicated service called name, or nil.
func (m *Member) wideService(name string) *wideService {
	if m.wide == nil {
		return nil
	}
	return m.wide.svcs[name]
}

// wideLimit is the most a pull answer carries: half a value, so that the
// answer fits a frame whatever the overheads.
func (m *Member) wideLimit() int { return max(m.cfg.Limits.MaxValueSize/2, 64<<10) }

// applyWide runs a proxy's call on this member's copy and queues the
// delta for the other members. It returns the response, and for a write
// that must wait for other members a non-nil pending: pending(answer)
// sends the delta and calls answer (on some goroutine) once the
// structure's synchronous backup count of other members (Config.Backups,
// StructureBackups: one in the reliable profile, none in the performance
// profile; at most the live peers) merged it, so an acknowledged write
// survives that many crashes; resp is then not final.
func (m *Member) applyWide(ws *wideService, req *op.Request) (resp *op.Response, pending func(answer func(*op.Response))) {
	if req.Op >= op.OpReservedMin {
		return &op.Response{Code: op.CodeUnknownOp, Msg: fmt.Sprintf("operation %d is reserved for the member core", req.Op), TableVersion: m.tableVersion()}, nil
	}
	if m.mem != nil && m.mem.full.Load() && ws.grow != nil && ws.grow.Grows(req.Op) {
		return m.mem.refusal(m.cfg.Name, m.tableVersion()), nil
	}
	ws.mu.Lock()
	ws.x.Reset(time.Now(), -1, true, req)
	resp, delta := ws.r.Apply(&ws.x, req)
	var events []op.Effect
	if len(ws.x.Effects()) > 0 {
		events = slices.Clone(ws.x.Effects())
	}
	ws.mu.Unlock()
	m.publishWide(ws.name, events)
	resp.TableVersion = m.tableVersion()
	if delta == nil {
		return resp, nil
	}
	peers := m.widePeers()
	need := min(m.backups.forName(req.Name).Sync, len(peers))
	if need <= 0 {
		m.sendWide(ws.name, delta, peers, nil)
		return resp, nil
	}
	return resp, func(answer func(*op.Response)) {
		w := &wideWait{need: need, total: len(peers), done: func(err error) {
			if err != nil {
				answer(errResponse(err, m.tableVersion()))
				return
			}
			answer(resp)
		}}
		w.mu.Lock()
		w.timer = time.AfterFunc(m.cfg.BackupTimeout, func() {
			w.mu.Lock()
			if w.fired {
				w.mu.Unlock()
				return
			}
			w.fire(fmt.Errorf("%w: %d of %d members acknowledged the write within %v", op.ErrBackupTimeout, w.ok, w.need, m.cfg.BackupTimeout))
		})
		w.mu.Unlock()
		m.sendWide(ws.name, delta, peers, w.ack)
	}
}

// widePeers lists the other live members.
func (m *Member) widePeers() []string {
	var out []string
	for _, mi := range m.Members() {
		if mi.Name != m.cfg.Name {
			out = append(out, mi.Name)
		}
	}
	return out
}

// publishWide hands the events a replica emitted to the subscribers.
func (m *Member) publishWide(service string, effects []op.Effect) {
	for _, e := range effects {
		if e.Kind == op.EffectEmit {
			m.events.publish(service, e.Name, e.Payload)
		}
	}
}

// mergeWide merges a peer's change message into service's copy.
func (m *Member) mergeWide(service string, msg []byte) error {
	ws := m.wideService(service)
	if ws == nil {
		return op.Errorf(op.CodeUnknownService, "replicated service %s", op.Quote(service))
	}
	ws.mu.Lock()
	ws.x.Reset(time.Now(), -1, false, nil)
	err := ws.r.Merge(&ws.x, msg)
	events := slices.Clone(ws.x.Effects())
	ws.mu.Unlock()
	m.publishWide(service, events)
	if err != nil {
		return fmt.Errorf("%w: replicated %s: %v", op.ErrBadRequest, service, err)
	}
	return nil
}

// handleWideSys serves the replicated services' member operations.
func (m *Member) handleWideSys(req *op.Request) *op.Response {
	cur := m.tableVersion()
	switch req.Op {
	case sysop.ReplDelta:
		if err := m.mergeWide(req.Key, req.Value); err != nil {
			return errResponse(err, cur)
		}
		return &op.Response{TableVersion: cur}
	case sysop.ReplPull:
		ws := m.wideService(req.Key)
		if ws == nil {
			return errResponse(op.Errorf(op.CodeUnknownService, "replicated service %s", op.Quote(req.Key)), cur)
		}
		limit := min(max(int(req.Num), 1<<10), m.wideLimit())
		ws.mu.Lock()
		msg, more, err := ws.r.Diff(time.Now(), req.Value, limit)
		ws.mu.Unlock()
		if err != nil {
			return errResponse(fmt.Errorf("%w: replicated %s digest: %v", op.ErrBadRequest, req.Key, err), cur)
		}
		if len(msg) > m.cfg.Limits.MaxFrameSize-64<<10 {
			// One map (merges are never refused) outgrew a frame: say so
			// rather than break the connection.
			m.log.Warn("replicated map too large for an anti-entropy answer", "service", req.Key, "bytes", len(msg), "max_frame", m.cfg.Limits.MaxFrameSize)
			return errResponse(op.Errorf(op.CodeTooLarge, "replicated %s: a map of %d bytes does not fit a frame of %d", op.Quote(req.Key), len(msg), m.cfg.Limits.MaxFrameSize), cur)
		}
		return &op.Response{Found: more, Value: msg, TableVersion: cur}
	}
	return &op.Response{Code: op.CodeUnknownOp, Msg: fmt.Sprintf("system operation %d", req.Op), TableVersion: cur}
}

// sendWide queues a delta for peers; ack (if set) hears from each.
func (m *Member) sendWide(service string, msg []byte, peers []string, ack func(error)) {
	for _, name := range peers {
		s := m.wideSenderFor(name)
		if s == nil {
			if ack != nil {
				ack(m.errClosed())
			}
			continue
		}
		select {
		case s.ch <- wideDelta{service, msg, ack}:
		default:
			m.counters.wideDropped.Add(1)
			if ack != nil {
				ack(fmt.Errorf("%w: the queue to %s is full", op.ErrUnavailable, name))
			}
		}
	}
}

// wideSenderFor returns the sender to member name, starting it.
func (m *Member) wideSenderFor(name string) *wideSender {
	m.wide.mu.Lock()
	defer m.wide.mu.Unlock()
	if s := m.wide.senders[name]; s != nil {
		return s
	}
	s := &wideSender{ch: make(chan wideDelta, widePeerQueue), stop: make(chan struct{})}
	if !m.spawn(func() { m.runWideSender(name, s) }) {
		return nil
	}
	m.wide.senders[name] = s
	return s
}

// dropWideSender stops the sender to a member that left or failed; its
// queued deltas are dropped (the member pulls when it comes back).
func (m *Member) dropWideSender(name string) {
	m.wide.mu.Lock()
	s := m.wide.senders[name]
	delete(m.wide.senders, name)
	m.wide.mu.Unlock()
	if s != nil {
		close(s.stop)
	}
}

// drain fails the acknowledgements of the deltas still queued on a
// stopped sender (their writes wait for other members or time out).
func (s *wideSender) drain(err error) {
	for {
		select {
		case d := <-s.ch:
			if d.ack != nil {
				d.ack(err)
			}
		default:
			return
		}
	}
}

// runWideSender sends the queued deltas to member name. Sends are
// pipelined on the peer's connection; a delta that cannot be sent (no
// connection, the peer refused it) is dropped: anti-entropy repairs it.
func (m *Member) runWideSender(name string, s *wideSender) {
	for {
		var d wideDelta
		select {
		case <-s.stop:
			s.drain(fmt.Errorf("%w: member %s left", op.ErrUnavailable, name))
			return
		case <-m.ctx.Done():
			s.drain(m.errClosed())
			return
		case d = <-s.ch:
		}
		ack := func(err error) {
			if err != nil {
				m.counters.wideDropped.Add(1)
				m.log.Debug("replicated delta not delivered", "peer", name, "err", err)
			}
			if d.ack != nil {
				d.ack(err)
			}
		}
		mi, ok := m.memberInfo(name)
		if !ok {
			ack(fmt.Errorf("%w: member %s left", op.ErrUnavailable, name))
			continue
		}
		ctx, cancel := context.WithTimeout(m.ctx, 2*time.Second)
		c, err := m.peers.get(ctx, mi.Name, mi.Addr)
		cancel()
		if err != nil {
			ack(err)
			continue
		}
		req := &op.Request{Service: sysService, Op: sysop.ReplDelta, Partition: -1, Key: d.service, Value: d.msg}
		if err := c.Go(req, func(resp *op.Response, err error) {
			if err == nil {
				err = resp.Err()
			}
			ack(err)
		}); err != nil {
			ack(err)
		}
	}
}

// memberInfo returns live member name as this member sees it.
func (m *Member) memberInfo(name string) (MemberInfo, bool) {
	m.viewMu.Lock()
	defer m.viewMu.Unlock()
	mi, ok := m.view[name]
	return mi, ok
}

// wideOnNode reacts to membership changes (from memberlist's event
// goroutine: never blocks): a member that joins or comes back is pulled
// from at once (it pulls from us when it sees us); a departed member's
// sender stops.
func (m *Member) wideOnNode(t EventType, name string) {
	if m.wide == nil || len(m.wide.order) == 0 || name == m.cfg.Name {
		return
	}
	switch t {
	case MemberJoined:
		select {
		case m.wide.pull <- name:
		default: // the periodic exchange catches up
		}
	case MemberLeft, MemberFailed:
		m.dropWideSender(name)
	}
}

// wideSyncEvery is the anti-entropy period: a few gossip probes.
func (m *Member) wideSyncEvery() time.Duration {
	return max(5*m.cfg.Gossip.ProbeInterval, 100*time.Millisecond)
}

// wideLoop runs anti-entropy and sweeps for the replicated services.
func (m *Member) wideLoop() {
	defer m.wg.Done()
	if len(m.wide.order) == 0 {
		return
	}
	tick := time.NewTicker(m.wideSyncEvery())
	defer tick.Stop()
	lastSweep := time.Now()
	for {
		var peer string
		select {
		case <-m.ctx.Done():
			return
		case peer = <-m.wide.pull:
		case now := <-tick.C:
			if now.Sub(lastSweep) >= wideSweepEvery {
				lastSweep = now
				m.sweepWide(now)
			}
			var names []string
			for _, mi := range m.Members() {
				if mi.Name != m.cfg.Name {
					names = append(names, mi.Name)
				}
			}
			if len(names) == 0 {
				continue
			}
			peer = names[rand.IntN(len(names))]
		}
		if err := m.pullWide(peer); err != nil && m.ctx.Err() == nil {
			m.log.Debug("replicated anti-entropy", "peer", peer, "err", err)
		}
	}
}

func (m *Member) sweepWide(now time.Time) {
	for _, ws := range m.wide.order {
		ws.mu.Lock()
		n := ws.r.Sweep(now)
		ws.mu.Unlock()
		if n > 0 {
			m.log.Debug("replicated markers collected", "service", ws.name, "n", n)
		}
	}
}

// pullWide pulls what member name holds that this member lacks, for every
// replicated service.
func (m *Member) pullWide(name string) error {
	mi, ok := m.memberInfo(name)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	for _, ws := range m.wide.order {
		var last []byte
		for range widePullRounds {
			ws.mu.Lock()
			dig := ws.r.Digest(time.Now())
			ws.mu.Unlock()
			resp, err := m.peers.call(ctx, mi.Name, mi.Addr, &op.Request{Service: sysService, Op: sysop.ReplPull, Partition: -1,
				Key: ws.name, Value: dig, Num: int64(m.wideLimit())})
			if err != nil {
				return err
			}
			if len(resp.Value) > 0 {
				if err := m.mergeWide(ws.name, resp.Value); err != nil {
					return err
				}
				m.counters.widePulled.Add(uint64(len(resp.Value)))
			}
			// Stop when the peer has nothing more, or keeps answering the
			// same (a map that differs only in what merging cannot
			// change here, e.g. the peer's own older entries).
			if !resp.Found || bytes.Equal(resp.Value, last) {
				break
			}
			last = resp.Value
		}
	}
	return nil
}

// wideStructures lists the replicated services' structures on this
// member's copy (for status pages).
func (m *Member) wideStructures() []StructureInfo {
	if m.wide == nil {
		return nil
	}
	var out []StructureInfo
	for _, ws := range m.wide.order {
		ws.mu.Lock()
		l, ok := ws.r.(StructureLister)
		if ok {
			for name, n := range l.Structures() {
				out = append(out, StructureInfo{Service: ws.name, Name: name, Entries: n})
			}
		}
		ws.mu.Unlock()
	}
	return out
}

// SubscribeLocalEvents calls fn with the payload of every event that
// structure name of service emits on this member only (op.LocalEventSource),
// on one goroutine of the subscription, at most once (dropped when fn falls
// 256 events behind). Meant for replicated services, whose events every
// member fires for its own copy. The returned function ends it.
func (m *Member) SubscribeLocalEvents(service, name string, fn func(payload []byte)) (func(), error) {
	if m.closed.Load() {
		return nil, m.errClosed()
	}
	if service == "" || service[0] == '_' {
		return nil, op.Errorf(op.CodeUnknownService, "service %q", service)
	}
	return m.events.add(service, name, fn), nil
}

var _ op.LocalEventSource = (*Member)(nil)
