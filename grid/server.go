package grid

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/wire"
)

// sysService is the member core's own service; its operations travel as
// ordinary requests so one codec and one connection type carry everything.
const sysService = "_grid"

// System operations.
const (
	// sysGetTable returns the member's table (Value) and version (Num).
	// Clients may call it.
	sysGetTable uint8 = iota + 1
	// sysPublish offers a table (Value); the receiver adopts it if newer.
	sysPublish
	// sysMigrate asks the owner of Partition to hand it to member Key at
	// address Aux; Num tags the freeze with the current table version.
	sysMigrate
	// sysRestore delivers a chunk (Value at offset Num, Aux non-empty on
	// the last chunk) of a partition snapshot for migration Key.
	sysRestore
	// sysTrigger asks the coordinator to re-plan now.
	sysTrigger
)

func (m *Member) hello(role wire.Role) wire.Hello {
	return wire.Hello{Role: role, Name: m.cfg.Name, Cluster: m.cfg.Cluster, Partitions: m.cfg.PartitionCount}
}

func (m *Member) checkPeer(h wire.Hello) error {
	if h.Cluster != m.cfg.Cluster {
		return fmt.Errorf("%w: peer is in cluster %q, this member in %q", op.ErrBadRequest, h.Cluster, m.cfg.Cluster)
	}
	if h.Role == wire.RoleMember && h.Partitions != m.cfg.PartitionCount {
		return fmt.Errorf("%w: peer has %d partitions, this member %d", op.ErrBadRequest, h.Partitions, m.cfg.PartitionCount)
	}
	if h.Role != wire.RoleMember && h.Role != wire.RoleClient {
		return fmt.Errorf("%w: unknown peer role %d", op.ErrBadRequest, h.Role)
	}
	return nil
}

func (m *Member) acceptLoop() {
	defer m.wg.Done()
	for {
		nc, err := m.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || m.closed.Load() {
				return
			}
			m.log.Warn("accept", "err", err)
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		if !m.spawn(func() { m.serveConn(nc) }) {
			nc.Close()
			return
		}
	}
}

func (m *Member) serveConn(nc net.Conn) {
	c, err := wire.Accept(nc, m.hello(wire.RoleMember), m.checkPeer, wire.Options{Limits: m.cfg.Limits, Handler: m})
	if err != nil {
		m.log.Debug("connection refused", "remote", nc.RemoteAddr().String(), "err", err)
		nc.Close()
		return
	}
	m.connsMu.Lock()
	if m.closed.Load() {
		m.connsMu.Unlock()
		c.Close()
		return
	}
	m.conns[c] = struct{}{}
	m.connsMu.Unlock()
	select {
	case <-c.Done():
	case <-m.ctx.Done():
	}
	c.Close()
	m.connsMu.Lock()
	delete(m.conns, c)
	m.connsMu.Unlock()
}

// spawn runs f in a goroutine owned by the member, unless it is closing.
func (m *Member) spawn(f func()) bool {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	if m.closed.Load() {
		return false
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
	return true
}

// HandleRequest serves a request that arrived over the network (it
// implements wire.Handler). Routed requests (TableVersion != 0) run inline
// on the connection's read loop: they only take a partition lock. Unrouted
// ones are forwarded to the owner from a goroutine.
func (m *Member) HandleRequest(c *wire.Conn, id uint64, req *op.Request) {
	if m.closed.Load() {
		c.Respond(id, errResponse(m.errClosed(), 0))
		return
	}
	if req.Service == sysService {
		m.handleSys(c, id, req)
		return
	}
	if req.TableVersion == 0 {
		ok := m.spawn(func() {
			ctx, cancel := timeoutContext(m.ctx, req.Timeout)
			defer cancel()
			resp, err := m.Invoke(ctx, req)
			if err != nil && (resp == nil || resp.Code == op.OK) {
				resp = errResponse(err, m.tableVersion())
			}
			c.Respond(id, resp)
		})
		if !ok {
			c.Respond(id, errResponse(m.errClosed(), 0))
		}
		return
	}
	c.Respond(id, m.executeLocal(req))
}

func timeoutContext(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, d)
}

func errResponse(err error, version uint64) *op.Response {
	return &op.Response{Code: op.CodeOf(err), Msg: op.Message(err), TableVersion: version}
}

func (m *Member) tableVersion() uint64 {
	if t := m.Table(); t != nil {
		return t.Version
	}
	return 0
}

// executeLocal runs req on this member's copy of its partition.
func (m *Member) executeLocal(req *op.Request) *op.Response {
	t := m.Table()
	if t == nil {
		return &op.Response{Code: op.CodeStaleTable, Msg: "member " + m.cfg.Name + " has no partition table yet"}
	}
	p := req.Partition
	if p < 0 {
		p = m.PartitionOf(req.Key)
		req.Partition = p
	}
	if int(p) >= len(m.slots) {
		return &op.Response{Code: op.CodeBadRequest, Msg: fmt.Sprintf("partition %d out of range 0..%d", p, len(m.slots)-1), TableVersion: t.Version}
	}
	return m.slots[p].execute(m, t.Version, req)
}

func (m *Member) handleSys(c *wire.Conn, id uint64, req *op.Request) {
	if req.Op != sysGetTable && c.Peer().Role != wire.RoleMember {
		c.Respond(id, &op.Response{Code: op.CodeBadRequest, Msg: "system operation reserved for members"})
		return
	}
	switch req.Op {
	case sysGetTable:
		c.Respond(id, m.tableResponse())
	case sysPublish:
		t, err := partition.Unmarshal(req.Value)
		if err != nil {
			c.Respond(id, errResponse(fmt.Errorf("%w: table: %v", op.ErrBadRequest, err), m.tableVersion()))
			return
		}
		m.adopt(t, c.Peer().Name)
		c.Respond(id, &op.Response{TableVersion: m.tableVersion()})
	case sysRestore:
		c.Respond(id, m.handleRestore(req))
	case sysMigrate:
		ok := m.spawn(func() {
			ctx, cancel := timeoutContext(m.ctx, req.Timeout)
			defer cancel()
			n, err := m.migrateOut(ctx, req.Partition, req.Key, string(req.Aux), uint64(req.Num))
			if err != nil {
				c.Respond(id, errResponse(err, m.tableVersion()))
				return
			}
			c.Respond(id, &op.Response{Num: int64(n), TableVersion: m.tableVersion()})
		})
		if !ok {
			c.Respond(id, errResponse(m.errClosed(), 0))
		}
	case sysTrigger:
		m.coord.trigger()
		c.Respond(id, &op.Response{TableVersion: m.tableVersion()})
	default:
		c.Respond(id, &op.Response{Code: op.CodeUnknownOp, Msg: fmt.Sprintf("system operation %d", req.Op)})
	}
}

func (m *Member) tableResponse() *op.Response {
	t := m.Table()
	if t == nil {
		return &op.Response{}
	}
	b, err := t.Marshal()
	if err != nil {
		return errResponse(fmt.Errorf("%w: encode table: %v", op.ErrInternal, err), t.Version)
	}
	return &op.Response{Found: true, Value: b, Num: int64(t.Version), TableVersion: t.Version}
}

// restoreBuf accumulates the chunks of one incoming partition migration.
type restoreBuf struct {
	tag uint64
	buf bytes.Buffer
}

func migrationID(tag uint64, p int32) string {
	return strconv.FormatUint(tag, 10) + "/" + strconv.Itoa(int(p))
}

func (m *Member) handleRestore(req *op.Request) *op.Response {
	p := req.Partition
	if p < 0 || int(p) >= len(m.slots) {
		return &op.Response{Code: op.CodeBadRequest, Msg: fmt.Sprintf("partition %d out of range", p)}
	}
	var tag uint64
	if i := bytes.IndexByte([]byte(req.Key), '/'); i > 0 {
		tag, _ = strconv.ParseUint(req.Key[:i], 10, 64)
	}
	m.restoreMu.Lock()
	rb := m.restores[req.Key]
	if req.Num == 0 {
		rb = &restoreBuf{tag: tag}
		if m.restores == nil {
			m.restores = map[string]*restoreBuf{}
		}
		m.restores[req.Key] = rb
	}
	if rb == nil || int64(rb.buf.Len()) != req.Num {
		delete(m.restores, req.Key)
		m.restoreMu.Unlock()
		return &op.Response{Code: op.CodeBadRequest, Msg: fmt.Sprintf("migration %s: chunk at offset %d out of order", req.Key, req.Num)}
	}
	rb.buf.Write(req.Value)
	final := len(req.Aux) > 0
	if final {
		delete(m.restores, req.Key)
	}
	m.restoreMu.Unlock()
	if !final {
		return &op.Response{}
	}
	n, err := m.slots[p].restore(m, rb.buf.Bytes())
	if err != nil {
		return errResponse(err, m.tableVersion())
	}
	m.counters.migrationsIn.Add(1)
	return &op.Response{Num: int64(n)}
}

// migrationChunk is the largest piece of a partition snapshot sent in one
// frame.
const migrationChunk = 4 << 20

// migrateOut freezes partition p, copies it to member dest and leaves it
// frozen until the coordinator's next table commits or aborts the move.
func (m *Member) migrateOut(ctx context.Context, p int32, dest, destAddr string, tag uint64) (int, error) {
	if p < 0 || int(p) >= len(m.slots) {
		return 0, op.Errorf(op.CodeBadRequest, "partition %d out of range", p)
	}
	s := m.slots[p]
	data, n, err := s.freezeAndSnapshot(m, tag)
	if err != nil {
		return 0, err
	}
	id := migrationID(tag, p)
	for off := 0; ; off += migrationChunk {
		end := min(off+migrationChunk, len(data))
		req := &op.Request{Service: sysService, Op: sysRestore, Partition: p, Key: id, Num: int64(off), Value: data[off:end]}
		if end == len(data) {
			req.Aux = []byte{1}
		}
		if _, err := m.peers.call(ctx, dest, destAddr, req); err != nil {
			s.unfreeze(tag)
			return 0, fmt.Errorf("migrate partition %d to %s: %w", p, dest, err)
		}
		if end == len(data) {
			break
		}
	}
	m.counters.migrationsOut.Add(1)
	return n, nil
}
