package grid

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/shoalgrid/shoal/internal/invoke"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
)

// Invoke runs req on the owner of its partition: locally when this member
// owns it, otherwise over the owner's connection. Calls that race a table
// change or a migration are retried against the new owner until ctx ends;
// they are never dropped silently. It implements op.Invoker.
func (m *Member) Invoke(ctx context.Context, req *op.Request) (*op.Response, error) {
	return m.invoke(ctx, req, false)
}

// invoke is Invoke; internal is set for the member core's own calls,
// which may use the reserved services and operation codes
// (op.OpReservedMin and up).
func (m *Member) invoke(ctx context.Context, req *op.Request, internal bool) (*op.Response, error) {
	if ws := m.wideService(req.Service); ws != nil {
		return m.invokeWide(ctx, ws, req, internal)
	}
	return m.loop.Invoke(ctx, req, internal)
}

// invokeWide runs a call of a replicated service: on this member's copy,
// whoever the table routes the key to (after the loop's checks).
func (m *Member) invokeWide(ctx context.Context, ws *wideService, req *op.Request, internal bool) (*op.Response, error) {
	if _, err := m.loop.Prepare(req, internal); err != nil {
		return nil, err
	}
	// The replica keeps the value: never let it alias the caller's.
	r := *req
	r.Value, r.Aux = bytes.Clone(r.Value), bytes.Clone(r.Aux)
	resp, pending := m.applyWide(ws, &r)
	if pending == nil {
		return resp, resp.Err()
	}
	ch := make(chan *op.Response, 1)
	pending(func(resp *op.Response) { ch <- resp })
	select {
	case resp := <-ch:
		return resp, resp.Err()
	case <-ctx.Done():
		// Applied here; whether the other members hold it is unknown.
		return nil, fmt.Errorf("waiting for other members to take the write: %w", op.FromContext(ctx))
	}
}

// InvokeAll runs req on every partition (concurrently, bounded) and returns
// the responses indexed by partition. It implements op.Invoker.
func (m *Member) InvokeAll(ctx context.Context, req *op.Request) ([]*op.Response, error) {
	return m.loop.InvokeAll(ctx, req, false)
}

func (m *Member) invokeAll(ctx context.Context, req *op.Request, internal bool) ([]*op.Response, error) {
	return m.loop.InvokeAll(ctx, req, internal)
}

// InvokeMany runs every request of reqs as Invoke would and returns the
// results in order; the requests owned by one member travel together, in
// one round trip (the local ones run here). It implements
// op.BatchInvoker.
func (m *Member) InvokeMany(ctx context.Context, reqs []*op.Request) []op.Result {
	for _, r := range reqs {
		if m.wideService(r.Service) != nil {
			// Replicated services run here, not at an owner: one by one.
			out := make([]op.Result, len(reqs))
			for i, r := range reqs {
				out[i].Resp, out[i].Err = m.invoke(ctx, r, false)
			}
			return out
		}
	}
	return m.loop.InvokeMany(ctx, reqs, false)
}

// newLoop builds the member's invoke loop over its transport.
func (m *Member) newLoop() {
	m.loop = &invoke.Loop{
		T:              memberTransport{m},
		Check:          m.cfg.Limits.Check,
		Partitions:     func() int { return m.cfg.PartitionCount },
		Identity:       func() (uint64, uint64) { return m.sess.id.Load(), m.callSeq.Add(1) },
		Life:           m.ctx,
		RefreshTimeout: func() time.Duration { return time.Second },
	}
}

// memberTransport is the member's invoke.Transport: a call runs on this
// member's slot when it owns the partition, otherwise over the owner's
// shared peer connection.
type memberTransport struct{ m *Member }

func (t memberTransport) Table() (*partition.Table, <-chan struct{}) {
	changed := t.m.tableChanged()
	return t.m.Table(), changed
}

func (t memberTransport) Precheck(name string, tab *partition.Table) *op.Response {
	// This side has no quorum: fail fast rather than wait for an owner
	// on the other side.
	return t.m.quorumRefusal(name, time.Now(), tab.Version, false)
}

func (t memberTransport) Err() error {
	if t.m.closed.Load() {
		return t.m.errClosed()
	}
	return nil
}

func (t memberTransport) Send(ctx context.Context, owner partition.Member, r op.Request) (*op.Response, error) {
	m := t.m
	if owner.Name != m.cfg.Name {
		c, err := m.peers.get(ctx, owner.Name, owner.Addr)
		if err != nil {
			return nil, err
		}
		return c.Call(ctx, &r)
	}
	l := m.startLocal(ctx, &r)
	return m.finishLocal(ctx, l)
}

// localCall is a call running on this member: started (applied, or
// parked), waiting for its answer or its backups.
type localCall struct {
	r     *op.Request
	resp  *op.Response
	w     *ackWait
	pc    *parkedCall
	start time.Time
}

// startLocal applies r on this member's slot (r's partition is owned
// here at r's table version, or the slot refuses it).
func (m *Member) startLocal(ctx context.Context, r *op.Request) localCall {
	// The state machine keeps the value: never let it alias the caller's
	// buffer.
	r.Value, r.Aux = bytes.Clone(r.Value), bytes.Clone(r.Aux)
	if dl, ok := ctx.Deadline(); ok {
		// A state that parks the call learns when its caller stops
		// waiting.
		r.Timeout = max(time.Until(dl), time.Millisecond)
	}
	l := localCall{r: r, start: time.Now()}
	l.resp, l.w, l.pc = m.executeLocal(nil, r)
	return l
}

// finishLocal waits for a started call's answer (parked) and for its
// synchronous backups.
func (m *Member) finishLocal(ctx context.Context, l localCall) (*op.Response, error) {
	resp := l.resp
	if l.pc != nil {
		var err error
		if resp, err = m.waitParked(ctx, l.pc); err != nil {
			return nil, err
		}
	}
	if resp.Code == op.OK {
		resp.Value = bytes.Clone(resp.Value)
	}
	if l.w != nil {
		werr := l.w.wait(ctx, m.cfg.BackupTimeout)
		if werr == nil {
			werr = m.leaseAtAck(l.r.Name)
		}
		if werr != nil {
			resp = errResponse(werr, resp.TableVersion)
		}
	}
	m.observeLatency(l.r, resp.Code, l.start)
	return resp, nil
}

// SendMany runs the requests owned here one after the other and then
// waits for all (their backups are acknowledged together); requests for
// another member go to it in one batch frame.
func (t memberTransport) SendMany(ctx context.Context, owner partition.Member, rs []*op.Request) []op.Result {
	m := t.m
	out := make([]op.Result, len(rs))
	if owner.Name != m.cfg.Name {
		c, err := m.peers.get(ctx, owner.Name, owner.Addr)
		if err != nil {
			for i := range out {
				out[i].Err = err
			}
			return out
		}
		resps, errs := c.CallMany(ctx, rs)
		for i := range out {
			out[i] = op.Result{Resp: resps[i], Err: errs[i]}
		}
		return out
	}
	ls := make([]localCall, len(rs))
	for i, r := range rs {
		ls[i] = m.startLocal(ctx, r)
	}
	for i, l := range ls {
		out[i].Resp, out[i].Err = m.finishLocal(ctx, l)
	}
	return out
}

// Refresh pulls the table of a member that answered with a newer version
// than ours, so we need not wait for the coordinator's next push. After a
// transport failure (from is zero) it does nothing: the coordinator
// publishes the table that replaces a failed member.
func (t memberTransport) Refresh(ctx context.Context, from partition.Member, version uint64) error {
	if from.Name == "" || version <= t.m.tableVersion() {
		return nil
	}
	t.m.pullTable(ctx, from)
	return nil
}

// pullTable fetches the table of member from and adopts it if newer. It
// reports whether the member answered with a table (adopted or not).
func (m *Member) pullTable(ctx context.Context, from partition.Member) bool {
	if from.Name == "" || from.Name == m.cfg.Name {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := m.peers.call(ctx, from.Name, from.Addr, &op.Request{Service: sysService, Op: sysGetTable, Partition: -1})
	if err != nil || !resp.Found {
		return false
	}
	t, err := partition.Unmarshal(resp.Value)
	if err != nil {
		return false
	}
	m.adopt(t, from.Name)
	return true
}
