package maps

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// IdemServiceName is the op.Request.Service value of idempotency stores.
const IdemServiceName = "idem"

// Operation codes of the idempotency-store service. Every operation reads
// Name (the store) and Key (the message id, which also routes it). Part of
// the wire protocol: never renumber.
const (
	// OpClaim claims Key if nobody holds it: Num is the TTL in
	// milliseconds (> 0); Aux, when not empty, is uvarint(lease ms) and
	// makes the claim "in progress" until Done, Release, the lease's end or
	// the end of the caller's session. Found: the caller is first. When it
	// is not, Num is 1 for a claim in progress and 2 for a done one.
	OpClaim uint8 = iota + 1
	// OpDone makes the caller's in-progress claim of Key permanent until
	// the TTL (Num, ms; 0 keeps the TTL given at Claim). Found: the caller
	// held it in progress.
	OpDone
	// OpRelease drops the caller's in-progress claim of Key, so a retry
	// can claim it again. Found: the caller held it.
	OpRelease
	// OpForget drops Key whatever its state (operators). Found: it existed.
	OpForget
	// OpStatus reads Key: Found and Num as for a refused OpClaim.
	OpStatus

	idemOpEnd
)

// Claim states (Response.Num of OpStatus and of a refused OpClaim).
const (
	claimInProgress = 1
	claimDone       = 2
)

// idemSweepGrace is how long after its expiry a claim may be reclaimed by
// Sweep. Sweep runs on every replica with its own clock; claims are
// judged by the owner's time in Execute, so a backup whose clock runs
// ahead must not drop a claim the owner still counts as live.
const idemSweepGrace = time.Minute

// IdemService is the idempotency-store service; register it with every
// member (cmd/gridnode does).
type IdemService struct{}

var (
	_ op.Service         = IdemService{}
	_ op.Grower          = IdemService{}
	_ op.Executor        = (*idemState)(nil)
	_ op.SessionListener = (*idemState)(nil)
	_ op.Sweeper         = (*idemState)(nil)
)

// Name returns IdemServiceName.
func (IdemService) Name() string { return IdemServiceName }

// AdminOp reports whether an operation needs the admin role on clusters
// that check client tokens (grid.AdminOps): Forget does.
func (IdemService) AdminOp(o uint8) bool { return o == OpForget }

// Grows reports whether an operation may grow the store (op.Grower): a
// claim, which the member's memory guard refuses when its heap is above the
// limit.
func (IdemService) Grows(o uint8) bool { return o == OpClaim }

// Mutates reports whether an operation may change state.
func (IdemService) Mutates(o uint8) bool { return o != OpStatus }

// NewState returns the empty state of one partition.
func (IdemService) NewState(partition int32) op.State {
	return &idemState{partition: partition, stores: map[string]map[string]*claim{}}
}

type claim struct {
	session  uint64 // holder of an in-progress claim; 0 once done
	leaseEnd int64  // unix nanos; 0 once done
	expire   int64  // unix nanos
	ttl      int64  // nanos, from the Claim
}

type idemState struct {
	partition int32
	stores    map[string]map[string]*claim
	n         int
}

func (s *idemState) Apply(now time.Time, req *op.Request) *op.Response {
	var x op.Exec
	x.Reset(now, s.partition, false, req)
	return s.Execute(&x, req)
}

// live returns the claim of key in store if it still counts at now.
func (s *idemState) live(now int64, store, key string) *claim {
	c := s.stores[store][key]
	if c == nil || now >= c.expire || (c.leaseEnd != 0 && now >= c.leaseEnd) {
		return nil
	}
	return c
}

func (s *idemState) remove(store, key string) {
	m := s.stores[store]
	if _, ok := m[key]; ok {
		delete(m, key)
		s.n--
		if len(m) == 0 {
			delete(s.stores, store)
		}
	}
}

func (s *idemState) Execute(x *op.Exec, req *op.Request) *op.Response {
	if req == nil {
		return fail(op.CodeBadRequest, "idem: nil request")
	}
	now := x.Now.UnixNano()
	if req.Op == op.OpSessionEnded {
		s.sessionEnded(uint64(req.Num))
		return &op.Response{}
	}
	if req.Op == 0 || req.Op >= idemOpEnd {
		return fail(op.CodeUnknownOp, "idem: unknown operation %d", req.Op)
	}
	if req.Name == "" {
		return fail(op.CodeBadRequest, "idem: empty store name")
	}
	switch req.Op {
	case OpStatus:
		c := s.live(now, req.Name, req.Key)
		if c == nil {
			return &op.Response{}
		}
		return &op.Response{Found: true, Num: claimState(c)}
	case OpForget:
		_, ok := s.stores[req.Name][req.Key]
		s.remove(req.Name, req.Key)
		return &op.Response{Found: ok}
	case OpClaim:
		if req.Num <= 0 {
			return fail(op.CodeBadRequest, "idem: claim needs a positive TTL, got %d ms", req.Num)
		}
		var lease int64
		if len(req.Aux) > 0 {
			v, n := binary.Uvarint(req.Aux)
			if n != len(req.Aux) || v == 0 || v > uint64(req.Num) {
				return fail(op.CodeBadRequest, "idem: bad lease (it must be > 0 and at most the TTL)")
			}
			lease = int64(v) * int64(time.Millisecond)
		}
		if c := s.live(now, req.Name, req.Key); c != nil {
			return &op.Response{Num: claimState(c)}
		}
		ttl := satMul(req.Num, int64(time.Millisecond))
		c := &claim{ttl: ttl, expire: satAdd(now, ttl)}
		if lease > 0 {
			c.session, c.leaseEnd = req.Origin, now+lease
		}
		m := s.stores[req.Name]
		if m == nil {
			m = map[string]*claim{}
			s.stores[req.Name] = m
		}
		if _, ok := m[req.Key]; !ok {
			s.n++
		}
		m[req.Key] = c
		return &op.Response{Found: true}
	case OpDone, OpRelease:
		c := s.live(now, req.Name, req.Key)
		if c == nil || c.leaseEnd == 0 || c.session != req.Origin {
			return &op.Response{}
		}
		if req.Op == OpRelease {
			s.remove(req.Name, req.Key)
			return &op.Response{Found: true}
		}
		if req.Num < 0 {
			return fail(op.CodeBadRequest, "idem: negative TTL %d ms", req.Num)
		}
		if req.Num > 0 {
			c.ttl = satMul(req.Num, int64(time.Millisecond))
		}
		c.session, c.leaseEnd, c.expire = 0, 0, satAdd(now, c.ttl)
		return &op.Response{Found: true}
	}
	return fail(op.CodeUnknownOp, "idem: unknown operation %d", req.Op)
}

func claimState(c *claim) int64 {
	if c.leaseEnd != 0 {
		return claimInProgress
	}
	return claimDone
}

func satMul(a, b int64) int64 {
	if a > 0 && a > (1<<63-1)/b {
		return 1<<63 - 1
	}
	return a * b
}

func satAdd(a, b int64) int64 {
	if b > 0 && a > 1<<63-1-b {
		return 1<<63 - 1
	}
	return a + b
}

// sessionEnded frees the in-progress claims of a dead session, so the
// message can be claimed (and processed) again.
func (s *idemState) sessionEnded(session uint64) {
	stores := make([]string, 0, len(s.stores))
	for name := range s.stores {
		stores = append(stores, name)
	}
	slices.Sort(stores)
	for _, name := range stores {
		for key, c := range s.stores[name] {
			if c.leaseEnd != 0 && c.session == session {
				s.remove(name, key)
			}
		}
	}
}

// ListensForSessions marks the state as an op.SessionListener.
func (s *idemState) ListensForSessions() {}

// Sweep reclaims up to max claims that expired more than idemSweepGrace ago.
func (s *idemState) Sweep(now time.Time, max int) int {
	t := now.Add(-idemSweepGrace).UnixNano()
	n := 0
	for name, m := range s.stores {
		for key, c := range m {
			if n >= max {
				return n
			}
			if t >= c.expire || (c.leaseEnd != 0 && t >= c.leaseEnd) {
				s.remove(name, key)
				n++
			}
		}
	}
	return n
}

func (s *idemState) Len() int { return s.n }

const idemSnapshotVersion = 1

// Snapshot encodes every claim, sorted, so equal states give equal bytes.
func (s *idemState) Snapshot(time.Time) ([]byte, error) {
	stores := make([]string, 0, len(s.stores))
	for name := range s.stores {
		stores = append(stores, name)
	}
	slices.Sort(stores)
	b := []byte{idemSnapshotVersion}
	b = binary.AppendUvarint(b, uint64(len(stores)))
	for _, name := range stores {
		m := s.stores[name]
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = binary.AppendUvarint(b, uint64(len(name)))
		b = append(b, name...)
		b = binary.AppendUvarint(b, uint64(len(keys)))
		for _, k := range keys {
			c := m[k]
			b = binary.AppendUvarint(b, uint64(len(k)))
			b = append(b, k...)
			b = binary.AppendUvarint(b, c.session)
			b = binary.AppendVarint(b, c.leaseEnd)
			b = binary.AppendVarint(b, c.expire)
			b = binary.AppendVarint(b, c.ttl)
		}
	}
	return b, nil
}

// Restore replaces the state with a snapshot; on error nothing changes.
func (s *idemState) Restore(_ time.Time, snap []byte) error {
	bad := func(what string) error {
		return fmt.Errorf("%w: idem snapshot: %s", op.ErrBadRequest, what)
	}
	if len(snap) == 0 || snap[0] != idemSnapshotVersion {
		return bad("unknown version")
	}
	b := snap[1:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	vi := func() (int64, bool) {
		v, n := binary.Varint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	str := func() (string, bool) {
		n, ok := uv()
		if !ok || n > uint64(len(b)) {
			return "", false
		}
		v := string(b[:n])
		b = b[n:]
		return v, true
	}
	stores := map[string]map[string]*claim{}
	total := 0
	ns, ok := uv()
	if !ok || ns > uint64(len(b)) {
		return bad("store count")
	}
	for range ns {
		name, ok := str()
		nk, ok2 := uv()
		if !ok || !ok2 || nk == 0 || nk > uint64(len(b)/5) || stores[name] != nil {
			return bad("store header")
		}
		m := make(map[string]*claim, nk)
		for range nk {
			k, ok := str()
			if !ok {
				return bad("key")
			}
			var c claim
			var oks [4]bool
			c.session, oks[0] = uv()
			c.leaseEnd, oks[1] = vi()
			c.expire, oks[2] = vi()
			c.ttl, oks[3] = vi()
			if oks != [4]bool{true, true, true, true} || m[k] != nil {
				return bad("claim")
			}
			m[k] = &c
		}
		stores[name] = m
		total += len(m)
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	s.stores, s.n = stores, total
	return nil
}

// IdempotencyStore accepts each message id once, cluster-wide: the
// idempotent receiver of an integration flow. Exactly one of any number of
// concurrent Claims of an id gets first == true; a store that cannot answer
// (no quorum, a timeout) returns an error, never "duplicate", so a caller
// never drops a message it was not sure about.
type IdempotencyStore struct {
	inv  op.Invoker
	name string
	ttl  time.Duration
}

// NewIdempotencyStore returns the store called name; ids are remembered for
// ttl after they are claimed (or marked done).
func NewIdempotencyStore(inv op.Invoker, name string, ttl time.Duration) *IdempotencyStore {
	return &IdempotencyStore{inv: inv, name: name, ttl: ttl}
}

func (s *IdempotencyStore) invoke(ctx context.Context, what string, code uint8, id string, num int64, aux []byte) (*op.Response, error) {
	if s == nil || s.inv == nil || s.name == "" {
		return nil, fmt.Errorf("maps: idempotency %s: %w: nil store or empty name", what, op.ErrBadRequest)
	}
	resp, err := s.inv.Invoke(ctx, &op.Request{Service: IdemServiceName, Name: s.name, Op: code, Partition: -1, Key: id, Num: num, Aux: aux})
	if err == nil && resp == nil {
		err = fmt.Errorf("%w: no response", op.ErrInternal)
	}
	if err != nil {
		return nil, fmt.Errorf("maps: idempotency %s %q in store %q: %w", what, id, s.name, err)
	}
	return resp, nil
}

func millisUp(d time.Duration) int64 {
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// Claim records id as seen and reports whether this caller is the first.
// The claim is final at once (one-phase use).
func (s *IdempotencyStore) Claim(ctx context.Context, id string) (first bool, err error) {
	if s.ttl <= 0 {
		return false, fmt.Errorf("maps: idempotency claim: %w: TTL must be positive", op.ErrBadRequest)
	}
	resp, err := s.invoke(ctx, "claim", OpClaim, id, millisUp(s.ttl), nil)
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}

// ClaimLease claims id "in progress" for lease (two-phase use): finish with
// Done, or Release to let a retry claim it again. If neither comes within
// lease, or the caller's session ends first (its process died), the id can
// be claimed again.
func (s *IdempotencyStore) ClaimLease(ctx context.Context, id string, lease time.Duration) (first bool, err error) {
	if s.ttl <= 0 || lease <= 0 || lease > s.ttl {
		return false, fmt.Errorf("maps: idempotency claim: %w: need 0 < lease <= TTL (lease %v, TTL %v)", op.ErrBadRequest, lease, s.ttl)
	}
	resp, err := s.invoke(ctx, "claim", OpClaim, id, millisUp(s.ttl), binary.AppendUvarint(nil, uint64(millisUp(lease))))
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}

// Done makes this caller's in-progress claim of id permanent until the TTL.
// ok is false when the caller no longer held it (the lease ended).
func (s *IdempotencyStore) Done(ctx context.Context, id string) (ok bool, err error) {
	resp, err := s.invoke(ctx, "done", OpDone, id, millisUp(s.ttl), nil)
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}

// Release drops this caller's in-progress claim of id so that a retry can
// claim it. ok is false when the caller no longer held it.
func (s *IdempotencyStore) Release(ctx context.Context, id string) (ok bool, err error) {
	resp, err := s.invoke(ctx, "release", OpRelease, id, 0, nil)
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}

// Seen reports whether id is claimed, and whether that claim is done
// (false: in progress).
func (s *IdempotencyStore) Seen(ctx context.Context, id string) (seen, done bool, err error) {
	resp, err := s.invoke(ctx, "status", OpStatus, id, 0, nil)
	if err != nil {
		return false, false, err
	}
	return resp.Found, resp.Num == claimDone, nil
}

// Forget drops id whatever its state (an operator's tool).
func (s *IdempotencyStore) Forget(ctx context.Context, id string) (existed bool, err error) {
	resp, err := s.invoke(ctx, "forget", OpForget, id, 0, nil)
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}
