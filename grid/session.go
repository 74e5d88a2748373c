package grid

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/sysop"
)

// Sessions. Every process that invokes (each member, each client) has a
// session: its invoker Origin. The session's record lives in the built-in
// _session service on partition session % count, written as a pure state
// over the op.Exec seam like any structure: a heartbeat extends the
// record's expiry; a replicated timer on the owner expires it; the record
// then remembers the session as ended (a tombstone, so a late heartbeat
// gets op.ErrSessionExpired and the process takes a new session) and as
// "to broadcast" until the member core has delivered op.OpSessionEnded to
// every partition of every service whose states implement
// op.SessionListener. A member declared dead by gossip has its session
// ended at once by the coordinator. A closing connection proves nothing
// and ends no session.

// Operations of the _session service (Key is the session id in hex).
const (
	// sessHeartbeat creates or extends session Key with TTL Num
	// milliseconds; op.ErrSessionExpired if it already ended.
	sessHeartbeat = sysop.SessionHeartbeat
	// sessEnd ends session Key now (its member was declared dead).
	sessEnd uint8 = 2
	// sessBroadcastDone records that OpSessionEnded for session Key
	// reached every listener.
	sessBroadcastDone uint8 = 3
)

// sessionTombstone is how long an ended session is remembered (minimum;
// ten TTLs when longer).
const sessionTombstone = time.Minute

type sessionService struct{}

func (sessionService) Name() string { return sysop.SessionService }
func (sessionService) NewState(int32) op.State {
	return &sessionState{Live: map[uint64]*sessionRec{}, Ended: map[uint64]int64{}}
}
func (sessionService) Mutates(uint8) bool { return true }

func sessionPartition(id uint64, count int) int32 { return sysop.SessionPartition(id, count) }

type sessionRec struct {
	Expiry int64 `json:"e"`
	TTL    int64 `json:"t"` // nanoseconds
}

// sessionState is the pure state of the sessions of one partition.
type sessionState struct {
	Live map[uint64]*sessionRec `json:"live"`
	// Ended maps ended sessions to when their tombstone may go.
	Ended map[uint64]int64 `json:"ended"`
	// Pending lists ended sessions not yet broadcast, in order.
	Pending []uint64 `json:"pending"`
}

var (
	_ op.Executor  = (*sessionState)(nil)
	_ op.OwnerHook = (*sessionState)(nil)
)

func (st *sessionState) Apply(now time.Time, req *op.Request) *op.Response {
	var x op.Exec
	x.Reset(now, req.Partition, true, req)
	return st.Execute(&x, req)
}

func sessionKey(id uint64) string { return strconv.FormatUint(id, 16) }

func (st *sessionState) Execute(x *op.Exec, req *op.Request) *op.Response {
	var id uint64
	if req.Op < op.OpReservedMin {
		var err error
		if id, err = strconv.ParseUint(req.Key, 16, 64); err != nil {
			return &op.Response{Code: op.CodeBadRequest, Msg: fmt.Sprintf("session id %q", req.Key)}
		}
	}
	now := x.Now.UnixNano()
	switch req.Op {
	case sessHeartbeat:
		if _, ended := st.Ended[id]; ended {
			return &op.Response{Code: op.CodeSessionExpired, Msg: fmt.Sprintf("session %x has ended", id)}
		}
		ttl := time.Duration(max(req.Num, 1)) * time.Millisecond
		rec := st.Live[id]
		if rec == nil {
			rec = &sessionRec{}
			st.Live[id] = rec
			x.Timer("", "e"+req.Key, x.Now.Add(ttl))
		}
		rec.Expiry, rec.TTL = x.Now.Add(ttl).UnixNano(), int64(ttl)
		return &op.Response{Num: rec.Expiry}
	case sessEnd:
		if _, ended := st.Ended[id]; ended {
			return &op.Response{}
		}
		// Ended even if no heartbeat reached the record yet: a member that
		// died right after starting may hold things already.
		st.end(x, id)
		return &op.Response{Found: true}
	case sessBroadcastDone:
		for i, p := range st.Pending {
			if p == id {
				st.Pending = append(st.Pending[:i], st.Pending[i+1:]...)
				break
			}
		}
		return &op.Response{}
	case op.OpTimer:
		if req.Key == "" {
			return &op.Response{}
		}
		switch req.Key[:1] {
		case "e":
			id, err := strconv.ParseUint(req.Key[1:], 16, 64)
			rec := st.Live[id]
			if err != nil || rec == nil {
				return &op.Response{}
			}
			if now < rec.Expiry {
				x.Timer("", req.Key, time.Unix(0, rec.Expiry)) // extended since
				return &op.Response{}
			}
			st.end(x, id)
		case "t":
			id, err := strconv.ParseUint(req.Key[1:], 16, 64)
			if until, ok := st.Ended[id]; err == nil && ok && now >= until {
				delete(st.Ended, id)
			}
		}
		return &op.Response{}
	}
	return &op.Response{}
}

// end ends session id: tombstone, broadcast pending, event to the core.
func (st *sessionState) end(x *op.Exec, id uint64) {
	rec := st.Live[id]
	delete(st.Live, id)
	keep := sessionTombstone
	if rec != nil {
		keep = max(keep, 10*time.Duration(rec.TTL))
	}
	st.Ended[id] = x.Now.Add(keep).UnixNano()
	x.Timer("", "t"+sessionKey(id), x.Now.Add(keep))
	st.Pending = append(st.Pending, id)
	x.Emit("", binary.BigEndian.AppendUint64(nil, id))
}

// BecameOwner re-arms expiries, with a grace of one TTL from now (the
// heartbeats may not have reached the partition while it had no owner),
// the tombstones' removal, and re-emits the ended sessions not yet
// broadcast.
func (st *sessionState) BecameOwner(x *op.Exec) {
	for id, rec := range st.Live {
		at := max(rec.Expiry, x.Now.Add(time.Duration(rec.TTL)).UnixNano())
		x.Timer("", "e"+sessionKey(id), time.Unix(0, at))
	}
	for id, until := range st.Ended {
		x.Timer("", "t"+sessionKey(id), time.Unix(0, until))
	}
	for _, id := range st.Pending {
		x.Emit("", binary.BigEndian.AppendUint64(nil, id))
	}
}

func (st *sessionState) Snapshot(time.Time) ([]byte, error) { return json.Marshal(st) }

func (st *sessionState) Restore(_ time.Time, b []byte) error {
	var n sessionState
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("%w: session snapshot: %v", op.ErrBadRequest, err)
	}
	if n.Live == nil {
		n.Live = map[uint64]*sessionRec{}
	}
	if n.Ended == nil {
		n.Ended = map[uint64]int64{}
	}
	*st = n
	return nil
}

// Len counts live and ended sessions (a partition with only tombstones or
// pending broadcasts must still travel in snapshots).
func (st *sessionState) Len() int { return len(st.Live) + len(st.Ended) }

// sessions is a member's session machinery: its own session (the origin
// of its invocations), its heartbeat, and the broadcast of ended sessions.
type sessions struct {
	m  *Member
	id atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]bool
	kick    chan struct{}
	// listeners are the services whose states implement
	// op.SessionListener.
	listeners []string
}

// renew replaces session old with a new random id, unless another
// goroutine already did; it returns the current id.
func (s *sessions) renew(old uint64) uint64 {
	s.id.CompareAndSwap(old, rand.Uint64()|1)
	return s.id.Load()
}

func newSessions(m *Member) *sessions {
	s := &sessions{m: m, pending: map[uint64]bool{}, kick: make(chan struct{}, 1)}
	s.id.Store(rand.Uint64() | 1)
	for _, svc := range m.services {
		if _, ok := svc.NewState(0).(op.SessionListener); ok {
			s.listeners = append(s.listeners, svc.Name())
		}
	}
	return s
}

// Session returns the member's session id: the Origin of its invocations,
// which structures use to name holders (of a lock, a delivery).
func (m *Member) Session() uint64 { return m.sess.id.Load() }

// ended queues the broadcast of session id's end.
func (s *sessions) ended(payload []byte) {
	if len(payload) != 8 {
		return
	}
	id := binary.BigEndian.Uint64(payload)
	s.mu.Lock()
	s.pending[id] = true
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// heartbeatLoop keeps the member's session alive (every TTL/3); when it
// learns that the session ended, the member takes a new one. An attempt
// waits at most TTL/3 and a failed one is retried promptly, on the table
// the member holds by then: a heartbeat stuck on a cut-off owner for the
// whole TTL would let the record's new owner, which grants one TTL from
// its promotion, expire a live member's session.
func (m *Member) heartbeatLoop() {
	defer m.wg.Done()
	every := m.cfg.SessionTTL / 3
	for {
		id := m.sess.id.Load()
		ctx, cancel := context.WithTimeout(m.ctx, every)
		err := m.heartbeat(ctx, id, m.cfg.SessionTTL)
		cancel()
		wait := every
		if errors.Is(err, op.ErrSessionExpired) {
			nid := m.sess.renew(id)
			m.log.Warn("session expired; new session", "old", sessionKey(id), "new", sessionKey(nid))
			m.metaMu.Lock()
			m.meta.Session = nid
			m.metaMu.Unlock()
			if m.ml != nil {
				_ = m.ml.UpdateNode(time.Second)
			}
			continue
		} else if err != nil && m.ctx.Err() == nil {
			m.log.Debug("session heartbeat", "err", err)
			wait = every / 8
		}
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (m *Member) heartbeat(ctx context.Context, id uint64, ttl time.Duration) error {
	_, err := m.invoke(ctx, &op.Request{Service: sysop.SessionService, Op: sessHeartbeat, Partition: sessionPartition(id, m.cfg.PartitionCount), Key: sessionKey(id), Num: ttl.Milliseconds()}, true)
	return err
}

// endSession ends session id now (its member was declared dead).
func (m *Member) endSession(id uint64) {
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
	defer cancel()
	_, err := m.invoke(ctx, &op.Request{Service: sysop.SessionService, Op: sessEnd, Partition: sessionPartition(id, m.cfg.PartitionCount), Key: sessionKey(id)}, true)
	if err != nil && m.ctx.Err() == nil {
		m.log.Warn("end session of a dead member", "session", sessionKey(id), "err", err)
	}
}

// broadcastLoop delivers op.OpSessionEnded for each ended session to every
// partition of every listening service, then clears the session's
// "pending" mark on its record's owner. Failed broadcasts are retried.
func (m *Member) broadcastLoop() {
	defer m.wg.Done()
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.sess.kick:
		case <-retry.C:
		}
		m.sess.mu.Lock()
		ids := make([]uint64, 0, len(m.sess.pending))
		for id := range m.sess.pending {
			ids = append(ids, id)
		}
		m.sess.mu.Unlock()
		for _, id := range ids {
			if err := m.broadcastEnded(id); err != nil {
				if m.ctx.Err() == nil {
					m.log.Warn("broadcast of an ended session", "session", sessionKey(id), "err", err)
				}
				continue
			}
			m.sess.mu.Lock()
			delete(m.sess.pending, id)
			m.sess.mu.Unlock()
		}
	}
}

func (m *Member) broadcastEnded(id uint64) error {
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
	defer cancel()
	for _, svc := range m.sess.listeners {
		if _, err := m.invokeAll(ctx, &op.Request{Service: svc, Op: op.OpSessionEnded, Num: int64(id)}, true); err != nil {
			return err
		}
	}
	_, err := m.invoke(ctx, &op.Request{Service: sysop.SessionService, Op: sessBroadcastDone, Partition: sessionPartition(id, m.cfg.PartitionCount), Key: sessionKey(id)}, true)
	return err
}
