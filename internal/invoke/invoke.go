// Package invoke is the one route-and-retry loop of Shoal's invokers: the
// member (grid) and the client both run their calls through a Loop, which
// checks the request, gives it an identity, routes it by the partition
// table, stamps the table version, judges the answer (op.Judge), refreshes
// the table when an answer shows it is stale and retries until the
// caller's context ends. The IO is the Transport's: the member runs a call
// locally or forwards it to a peer, the client always sends it to the
// owner's connection.
//
// Table refreshes go through x/sync/singleflight: N calls that fail at once
// cause one table read, not N.
//
// The package is a leaf of the core (op, partition and x/sync only), so
// grid and client share it without importing each other.
package invoke

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
)

// Transport is the IO of one invoker. Its methods are called concurrently
// by many calls and must be safe for that.
type Transport interface {
	// Table returns the table to route by (nil before the first one) and
	// a channel that is closed when a newer table is adopted.
	Table() (*partition.Table, <-chan struct{})
	// Precheck may answer a request for structure name before it is
	// routed by t (nil: route it). The member refuses here, fast, on a
	// side of a split without quorum.
	Precheck(name string, t *partition.Table) *op.Response
	// Send runs r, stamped with the table version, on owner: in this
	// process when owner is the local member, else over owner's
	// connection. Its error covers transport failures only, like
	// wire.Conn.Call's. r is passed by value so that the loop's copy
	// stays on its stack (an interface call makes pointers escape): one
	// allocation less per call.
	Send(ctx context.Context, owner partition.Member, r op.Request) (*op.Response, error)
	// Refresh reads a newer table from member from, whose answer carried
	// table version; when from is the zero Member, from any member after
	// a transport failure. An error means no member could be reached:
	// the call fails rather than waiting. ctx is detached from any one
	// caller (see Loop.Life).
	Refresh(ctx context.Context, from partition.Member, version uint64) error
	// Err is non-nil once the invoker is closed: the error calls return.
	Err() error
}

// BatchTransport is a Transport that sends several requests to one member
// in one round trip (one frame); the results are in the order of rs. A
// result's Err covers transport failures only, as in Send.
type BatchTransport interface {
	Transport
	SendMany(ctx context.Context, owner partition.Member, rs []*op.Request) []op.Result
}

// Loop runs calls through a Transport. Set the fields before the first
// call and do not change them after.
type Loop struct {
	T Transport
	// Check validates a request before anything else (size limits).
	Check func(*op.Request) error
	// Partitions is the partition count requests are routed over.
	Partitions func() int
	// Identity returns the origin and call number given to a call without
	// one, so a retry is never applied twice.
	Identity func() (origin, seq uint64)
	// MaxBackoff caps the pause between attempts (0: op.Backoff's
	// default).
	MaxBackoff time.Duration
	// Life bounds shared refreshes: a refresh outlives the caller that
	// started it (others may wait on it) but not the invoker.
	Life context.Context
	// RefreshTimeout bounds one shared refresh.
	RefreshTimeout func() time.Duration

	flight singleflight.Group
	// testJoined, if set, runs each time a caller has joined a refresh
	// (started it or waits for the one running).
	testJoined func()
}

// Prepare checks req and returns the copy the loop routes: partition
// computed, identity given (unless internal, whose calls carry their own
// or none). internal calls may use the member core's reserved services
// (names starting with '_') and operation codes.
func (l *Loop) Prepare(req *op.Request, internal bool) (op.Request, error) {
	if err := l.T.Err(); err != nil {
		return op.Request{}, err
	}
	if err := l.Check(req); err != nil {
		return op.Request{}, err
	}
	if req.Service == "" || (req.Service[0] == '_' && !internal) {
		return op.Request{}, op.Errorf(op.CodeUnknownService, "service %s", op.Quote(req.Service))
	}
	if req.Op >= op.OpReservedMin && !internal {
		return op.Request{}, op.Errorf(op.CodeUnknownOp, "operation %d is reserved for the member core", req.Op)
	}
	r := *req
	n := l.Partitions()
	if r.Partition < 0 {
		r.Partition = partition.ID(r.Key, n)
	}
	if int(r.Partition) >= n {
		return op.Request{}, op.Errorf(op.CodeBadRequest, "partition %d out of range 0..%d", r.Partition, n-1)
	}
	if r.Origin == 0 && !internal {
		r.Origin, r.CallSeq = l.Identity()
	}
	return r, nil
}

// Invoke runs req on the owner of its partition, retrying while the
// partition moves or its owner is replaced, until ctx ends.
func (l *Loop) Invoke(ctx context.Context, req *op.Request, internal bool) (*op.Response, error) {
	r, err := l.Prepare(req, internal)
	if err != nil {
		return nil, err
	}
	backoff := op.Backoff{Max: l.MaxBackoff}
	var lastErr error
	for {
		t, changed := l.T.Table()
		var owner partition.Member
		resp, err := l.route(&r, t, &owner)
		if resp == nil && err == nil {
			resp, err = l.T.Send(ctx, owner, r)
		}
		verdict, ferr := l.judge(ctx, t, owner, resp, err, &lastErr, nil)
		switch verdict {
		case op.Done:
			return resp, resp.Err()
		case op.Fail:
			return nil, ferr
		}
		if werr := backoff.Wait(ctx, changed); werr != nil {
			return nil, fmt.Errorf("%w (last attempt: %v)", werr, lastErr)
		}
	}
}

// route finds r's owner in t and stamps r with t's version; it returns a
// response instead when the call cannot be sent (no table, no owner, a
// refusal by Precheck).
func (l *Loop) route(r *op.Request, t *partition.Table, owner *partition.Member) (*op.Response, error) {
	if t == nil {
		return &op.Response{Code: op.CodeStaleTable, Msg: "no partition table yet"}, nil
	}
	if resp := l.T.Precheck(r.Name, t); resp != nil {
		return resp, nil
	}
	o, ok := t.Owner(r.Partition)
	if !ok {
		return &op.Response{Code: op.CodeStaleTable, Msg: fmt.Sprintf("partition %d has no owner in table %d", r.Partition, t.Version), TableVersion: t.Version}, nil
	}
	*owner = o
	r.TableVersion = t.Version
	return nil, nil
}

// judge decides what follows one attempt, refreshing the table when the
// answer shows ours is stale. For Fail it returns the error to give the
// caller; for Retry it records the attempt's error in lastErr (an
// unreachable member with no other member reachable turns into Fail).
// memo, when not nil, holds the refreshes already done in this round of a
// batch, so its many answers cause one refresh per member.
func (l *Loop) judge(ctx context.Context, t *partition.Table, owner partition.Member, resp *op.Response, err error, lastErr *error, memo map[partition.Member]error) (op.Verdict, error) {
	if err == nil && t != nil && owner.Name != "" &&
		(resp.TableVersion > t.Version || (resp.Code == op.CodeStaleTable && resp.TableVersion < t.Version)) {
		// A newer table at the owner, or the owner lags behind us (or
		// belongs to a restarted cluster): read its table.
		_ = l.refreshMemo(ctx, memo, owner, resp.TableVersion)
	}
	switch op.Judge(resp, err) {
	case op.Done:
		return op.Done, nil
	case op.Fail:
		if cerr := l.T.Err(); cerr != nil {
			return op.Fail, cerr
		}
		return op.Fail, err // too large, timeout, canceled, refused
	}
	if err == nil {
		*lastErr = resp.Err()
	} else {
		if cerr := l.T.Err(); cerr != nil {
			return op.Fail, cerr
		}
		*lastErr = err
		// The owner is unreachable: learn the current table from any
		// member. If none answers, fail fast rather than hang.
		if rerr := l.refreshMemo(ctx, memo, partition.Member{}, 0); rerr != nil {
			if ctx.Err() != nil {
				return op.Fail, fmt.Errorf("%w (last attempt: %v)", op.FromContext(ctx), err)
			}
			return op.Fail, rerr
		}
	}
	if cerr := l.T.Err(); cerr != nil {
		return op.Fail, cerr
	}
	return op.Retry, nil
}

func (l *Loop) refreshMemo(ctx context.Context, memo map[partition.Member]error, from partition.Member, version uint64) error {
	if memo == nil {
		return l.Refresh(ctx, from, version)
	}
	if err, done := memo[from]; done {
		return err
	}
	err := l.Refresh(ctx, from, version)
	memo[from] = err
	return err
}

// Refresh runs T.Refresh once for all concurrent callers asking the same
// member (or any member, for the zero from). The refresh runs with a
// context detached from the callers (bounded by Life and RefreshTimeout);
// each caller stops waiting when its own ctx ends.
func (l *Loop) Refresh(ctx context.Context, from partition.Member, version uint64) error {
	key := "any"
	if from.Name != "" || from.Addr != "" {
		key = "from " + from.Name + "@" + from.Addr
	}
	ch := l.flight.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(l.Life, l.RefreshTimeout())
		defer cancel()
		return nil, l.T.Refresh(fctx, from, version)
	})
	if l.testJoined != nil {
		l.testJoined()
	}
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return op.FromContext(ctx)
	}
}

// allParallelism bounds the partitions InvokeAll runs at once.
const allParallelism = 64

// InvokeAll runs req on every partition, concurrently (bounded), and
// returns the responses indexed by partition. The first failure ends the
// call.
func (l *Loop) InvokeAll(ctx context.Context, req *op.Request, internal bool) ([]*op.Response, error) {
	if err := l.T.Err(); err != nil {
		return nil, err
	}
	out := make([]*op.Response, l.Partitions())
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(allParallelism)
	for p := range out {
		r := *req
		r.Partition = int32(p)
		g.Go(func() error {
			resp, err := l.Invoke(gctx, &r, internal)
			if err != nil {
				return fmt.Errorf("partition %d: %w", p, err)
			}
			out[p] = resp
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}
