package grid

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/sysop"
	"github.com/shoalgrid/shoal/wire"
)

// The member core's own service and operations, shared with the client
// through sysop (see there for what each one does).
const (
	sysService     = sysop.Service
	sysGetTable    = sysop.GetTable
	sysPublish     = sysop.Publish
	sysBackup      = sysop.Backup
	sysBackupSync  = sysop.BackupSync
	sysTrigger     = sysop.Trigger
	sysHandoff     = sysop.Handoff
	sysReplicaSeqs = sysop.ReplicaSeqs
	sysStatus      = sysop.Status
	sysBackupProbe = sysop.BackupProbe
	sysPing        = sysop.Ping
	sysVote        = sysop.Vote
)

func (m *Member) hello(role wire.Role) wire.Hello {
	return wire.Hello{Role: role, Name: m.cfg.Name, Cluster: m.cfg.Cluster, Partitions: m.cfg.PartitionCount}
}

// connOptions are the options of this member's connections: tlsCfg is the
// server or the client TLS configuration.
func (m *Member) connOptions(tlsCfg *tls.Config) wire.Options {
	return wire.Options{Limits: m.cfg.Limits, Handler: m, MemberKeys: m.sec.handshake, TLS: tlsCfg, Authorize: m.sec.authorize, OnEvent: m.lsubs.OnEvent}
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
		ip := remoteIP(nc)
		if why := m.admitConn(ip); why != "" {
			nc.Close()
			m.counters.refused.Add(1)
			m.refusedLog.Warn("connection refused", "remote", nc.RemoteAddr().String(), "reason", why)
			continue
		}
		if !m.spawn(func() {
			defer m.release(ip)
			m.serveConn(nc)
		}) {
			m.release(ip)
			nc.Close()
			return
		}
	}
}

// remoteIP is the IP address part of nc's remote address.
func remoteIP(nc net.Conn) string {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(nc.RemoteAddr().String())
	if err != nil {
		return nc.RemoteAddr().String()
	}
	return host
}

// admitConn counts a new connection from ip, or says why it is over the
// limits (Config.Conns).
func (m *Member) admitConn(ip string) string {
	lim := m.cfg.Conns
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	switch {
	case m.open >= lim.MaxConns:
		return fmt.Sprintf("%d connections open, limit %d", m.open, lim.MaxConns)
	case m.openPerIP[ip] >= lim.MaxConnsPerAddr:
		return fmt.Sprintf("%d connections open from this address, limit %d", m.openPerIP[ip], lim.MaxConnsPerAddr)
	}
	if m.openPerIP == nil {
		m.openPerIP = map[string]int{}
	}
	m.open++
	m.openPerIP[ip]++
	return ""
}

// release uncounts a connection admitted from ip.
func (m *Member) release(ip string) {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	m.open--
	if m.openPerIP[ip]--; m.openPerIP[ip] <= 0 {
		delete(m.openPerIP, ip)
	}
}

func (m *Member) serveConn(nc net.Conn) {
	c, err := wire.Accept(nc, m.hello(wire.RoleMember), m.checkPeer, m.acceptOptions())
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
	if c.Peer().Role == wire.RoleMember && c.Peer().Name != m.cfg.Name {
		m.peers.adopt(c.Peer().Name, c)
	}
	select {
	case <-c.Done():
	case <-m.ctx.Done():
	}
	c.Close()
	m.connsMu.Lock()
	delete(m.conns, c)
	m.connsMu.Unlock()
}

// forwardsPerConn bounds the requests without a table version (which the
// member forwards to their owner) in flight on one connection.
const forwardsPerConn = 4

// forwardSlots returns c's forwarding semaphore (see forwardsPerConn),
// created on first use and dropped when c closes.
func (m *Member) forwardSlots(c *wire.Conn) chan struct{} {
	if v, ok := m.forwarding.Load(c); ok {
		return v.(chan struct{})
	}
	v, loaded := m.forwarding.LoadOrStore(c, make(chan struct{}, forwardsPerConn))
	if !loaded && !m.spawn(func() {
		select {
		case <-c.Done():
		case <-m.ctx.Done():
		}
		m.forwarding.Delete(c)
	}) {
		m.forwarding.Delete(c)
	}
	return v.(chan struct{})
}

// acceptOptions are the options of connections the member accepts.
func (m *Member) acceptOptions() wire.Options {
	lim := m.cfg.Conns
	o := m.connOptions(m.sec.serverTLS)
	o.HandshakeTimeout = lim.HandshakeTimeout
	o.IdleTimeout = max(lim.IdleTimeout, 0)
	o.MaxInFlight = lim.MaxInFlight
	return o
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
	internal := c.Peer().Role == wire.RoleMember
	if ws := m.wideService(req.Service); ws != nil {
		// Replicated services answer from this member's copy, whoever
		// the table routes the key to.
		if err := m.checkAccess(c, req); err != nil {
			c.Respond(id, errResponse(err, m.tableVersion()))
			return
		}
		resp, pending := m.applyWide(ws, req)
		if pending == nil {
			c.Respond(id, resp)
			return
		}
		pending(func(resp *op.Response) { c.Respond(id, resp) })
		return
	}
	if req.Service == sysop.SessionService {
		// Every client heartbeats its own session, whatever its role;
		// the other session operations are the member core's.
		if req.Op != sysop.SessionHeartbeat && !internal {
			c.Respond(id, &op.Response{Code: op.CodeForbidden, Msg: "session operation reserved for members", TableVersion: m.tableVersion()})
			return
		}
	} else if req.Op >= op.OpReservedMin || c.Principal() != nil {
		if err := m.checkAccess(c, req); err != nil {
			c.Respond(id, errResponse(err, m.tableVersion()))
			return
		}
	}
	if req.TableVersion == 0 {
		// Each forward holds its response (a decoded copy of the value)
		// until the connection takes it: bound them per connection by
		// blocking this read loop, so a client pipelining gets of a big
		// value without reading the answers holds a few values, not one
		// per request (100 gets of 16 MiB took a member to 2 GB).
		slots := m.forwardSlots(c)
		select {
		case slots <- struct{}{}:
		case <-c.Done():
			c.Respond(id, errResponse(op.ErrUnavailable, 0))
			return
		case <-m.ctx.Done():
			c.Respond(id, errResponse(m.errClosed(), 0))
			return
		}
		ok := m.spawn(func() {
			defer func() { <-slots }()
			ctx, cancel := timeoutContext(m.ctx, req.Timeout)
			defer cancel()
			// A cancel frame for this request ends the forwarded call.
			defer m.trackCancel(c, id, cancel)()
			resp, err := m.invoke(ctx, req, internal)
			if err != nil && (resp == nil || resp.Code == op.OK) {
				resp = errResponse(err, m.tableVersion())
			}
			c.Respond(id, resp)
		})
		if !ok {
			<-slots
			c.Respond(id, errResponse(m.errClosed(), 0))
		}
		return
	}
	start := time.Now()
	resp, w, pc := m.executeLocal(c.Batch(), req)
	if pc != nil {
		// Parked: answered when a later mutation completes it, its
		// deadline passes or this member stops owning the partition.
		m.attachRemote(c, id, pc)
		return
	}
	if w == nil {
		m.observeLatency(req, resp.Code, start)
		c.RespondBatch(c.Batch(), id, resp)
		return
	}
	// Answer once the synchronous backups acknowledged, without blocking
	// the read loop.
	w.then(c.Batch(), func(b *wire.Batch, err error) {
		if err == nil {
			err = m.leaseAtAck(req.Name)
		}
		if err != nil {
			resp = errResponse(err, resp.TableVersion)
		}
		m.observeLatency(req, resp.Code, start)
		c.RespondBatch(b, id, resp)
	})
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

// executeLocal runs req on this member's copy of its partition. For a
// mutation with synchronous backups it also returns the wait for their
// acknowledgements.
// b is the batch of the read loop running the call, or nil.
func (m *Member) executeLocal(b *wire.Batch, req *op.Request) (*op.Response, *ackWait, *parkedCall) {
	t := m.Table()
	if t == nil {
		return &op.Response{Code: op.CodeStaleTable, Msg: "member " + m.cfg.Name + " has no partition table yet"}, nil, nil
	}
	p := req.Partition
	if p < 0 {
		p = m.PartitionOf(req.Key)
		req.Partition = p
	}
	if int(p) >= len(m.slots) {
		return &op.Response{Code: op.CodeBadRequest, Msg: fmt.Sprintf("partition %d out of range 0..%d", p, len(m.slots)-1), TableVersion: t.Version}, nil, nil
	}
	return m.slots[p].execute(m, b, t, req)
}

func (m *Member) handleSys(c *wire.Conn, id uint64, req *op.Request) {
	if !sysop.ClientAllowed(req.Op) && c.Peer().Role != wire.RoleMember {
		c.Respond(id, &op.Response{Code: op.CodeForbidden, Msg: fmt.Sprintf("system operation %d is reserved for members", req.Op)})
		return
	}
	cur := m.tableVersion()
	switch req.Op {
	case sysGetTable:
		c.Respond(id, m.tableResponse())
	case sysStatus:
		b, err := msgpack.Marshal(m.Stats())
		if err != nil {
			c.Respond(id, errResponse(fmt.Errorf("%w: %v", op.ErrInternal, err), cur))
			return
		}
		c.Respond(id, &op.Response{Found: true, Value: b, TableVersion: cur})
	case sysPublish:
		t, err := partition.Unmarshal(req.Value)
		if err != nil {
			c.Respond(id, errResponse(fmt.Errorf("%w: table: %v", op.ErrBadRequest, err), cur))
			return
		}
		resp := &op.Response{TableVersion: m.tableVersion()}
		if !m.adopt(t, c.Peer().Name) {
			// The answer tells the publisher the term it must be above
			// (Num) and whether this member holds a different table of the
			// same version (Found: two coordinators of one term, possible
			// after a split without quorum rules, where each side
			// elects its own).
			resp.Num = int64(m.promisedTerm())
			if now := m.Table(); now != nil && now.Version == t.Version && !sameTable(now, t) {
				resp.Found = true
			}
			resp.TableVersion = m.tableVersion()
		}
		c.Respond(id, resp)
	case sysop.RemoveMember:
		m.handleRemoveMember(c, id, req)
	case sysVote:
		granted, promised, tv := m.grantTerm(uint64(req.Num), req.Key, req.TableVersion)
		c.Respond(id, &op.Response{Found: granted, Num: int64(promised), TableVersion: tv})
	case sysBackup:
		c.RespondBatch(c.Batch(), id, m.backupSide().legacyRecord(req, cur))
	case sysBackupSync:
		c.Respond(id, m.backupSide().legacyChunk(req, cur))
	case sysBackupProbe:
		c.Respond(id, m.backupSide().legacyProbe(req, cur))
	case sysHandoff:
		ok := m.spawn(func() {
			ctx, cancel := timeoutContext(m.ctx, req.Timeout)
			defer cancel()
			var err error
			if req.Num == 1 {
				err = m.handoff(ctx, req.Partition, req.Key)
			} else {
				err = m.waitSynced(ctx, req.Partition)
			}
			if err != nil {
				c.Respond(id, errResponse(err, m.tableVersion()))
				return
			}
			c.Respond(id, &op.Response{TableVersion: m.tableVersion()})
		})
		if !ok {
			c.Respond(id, errResponse(m.errClosed(), 0))
		}
	case sysPing:
		if req.Num == pingLease && m.declaredFailed(c.Peer().Name) {
			// A member this one declared dead does not get its owner
			// lease renewed here: its partitions are about to move.
			c.Respond(id, &op.Response{Code: op.CodeStaleTable, Msg: fmt.Sprintf("member %s: %s was declared failed here", m.cfg.Name, c.Peer().Name), TableVersion: cur})
			return
		}
		c.Respond(id, &op.Response{TableVersion: cur})
	case sysop.Subscribe:
		c.Respond(id, m.subscribeRemote(c, req))
	case sysop.Unsubscribe:
		c.Respond(id, m.unsubscribeRemote(c, req))
	case sysop.ReplDelta, sysop.ReplPull:
		c.Respond(id, m.handleWideSys(req))
	case sysReplicaSeqs:
		version, seal := decodeSeal(req.Value, m.cfg.PartitionCount)
		c.Respond(id, &op.Response{Found: true, Value: m.replicaSeqs(req.Num, version, seal), TableVersion: cur})
	case sysTrigger:
		if req.Num != 0 {
			m.coord.force.Store(true)
		}
		m.coord.poke()
		c.Respond(id, &op.Response{TableVersion: cur})
	default:
		c.Respond(id, &op.Response{Code: op.CodeUnknownOp, Msg: fmt.Sprintf("system operation %d", req.Op)})
	}
}

// pingLease in a sysPing request's Num marks the quorum lease's pings
// (leaseLoop), which a member answers only if it has not declared the
// sender failed; other pings (probes of a member's liveness) are always
// answered.
const pingLease = 1

// noReplica marks a partition without a replica here in sysReplicaSeqs.
const noReplica = ^uint64(0)

// A sysReplicaSeqs request's Num selects the answer's layout; members of
// older builds answer the layouts they know and sequences only otherwise.
const (
	// seqsWithTerms asks for each partition's term after its sequence
	// (16 bytes a partition, not 8).
	seqsWithTerms = 1
	// seqsWithState asks for the term and a flags byte (17 bytes a
	// partition): bit 0 marks a partial backup (slot.partial).
	seqsWithState = 2
)

// seqPartial is the flag of a partial backup in a seqsWithState answer.
const seqPartial = 1

// encodeSeal is the Value of a sysReplicaSeqs request that seals the
// replicas of partitions parts at table version (see backup.Replica.Sealed):
// the version, then each partition (4 bytes each, big endian). Members of
// older builds ignore it.
func encodeSeal(version uint64, parts []int32) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+4*len(parts)), version)
	for _, p := range parts {
		b = binary.BigEndian.AppendUint32(b, uint32(p))
	}
	return b
}

// decodeSeal reads encodeSeal's bytes for a cluster of count partitions;
// anything malformed (a partition out of range, more partitions than the
// cluster has) seals nothing, so a peer's bytes cannot make it allocate
// more than one entry per partition.
func decodeSeal(b []byte, count int) (uint64, map[int32]bool) {
	if len(b) < 8 || (len(b)-8)%4 != 0 || (len(b)-8)/4 > count {
		return 0, nil
	}
	version := binary.BigEndian.Uint64(b)
	parts := make(map[int32]bool, (len(b)-8)/4)
	for i := 8; i < len(b); i += 4 {
		p := binary.BigEndian.Uint32(b[i:])
		if p >= uint32(count) {
			return 0, nil
		}
		parts[int32(p)] = true
	}
	return version, parts
}

// replicaSeqs reports the replication position of every partition here
// in the layout layout asks for (seqsWithTerms, seqsWithState, else
// sequences only): its sequence (noReplica where this member holds no
// replica), its term and whether it is a partial backup. The partitions
// in seal are sealed first at table version (when that is this member's
// table), under the same lock as the position is read: nothing their
// owner of that table sends is applied here after the report.
func (m *Member) replicaSeqs(layout int64, version uint64, seal map[int32]bool) []byte {
	if len(seal) > 0 && m.tableVersion() != version {
		seal = nil // another table: the coordinator's round is stale
	}
	n := 8
	switch layout {
	case seqsWithTerms:
		n = 16
	case seqsWithState:
		n = 17
	}
	out := make([]byte, 0, n*len(m.slots))
	for _, s := range m.slots {
		s.mu.Lock()
		if seal[s.id] && s.role > 0 {
			s.sealed = max(s.sealed, version)
		}
		seq, term := s.seq, s.term
		if s.role < 0 {
			seq = noReplica
		}
		var flags byte
		if s.role > 0 && s.partial {
			flags |= seqPartial
		}
		s.mu.Unlock()
		out = binary.BigEndian.AppendUint64(out, seq)
		if n > 8 {
			out = binary.BigEndian.AppendUint64(out, term)
		}
		if n > 16 {
			out = append(out, flags)
		}
	}
	return out
}

// HandleRecord takes a backup record frame (wire.KindRecord) from an
// owner: the wire.RecordHandler side of Member. It is answered on the read
// loop, like a record sent as a sysBackup request.
func (m *Member) HandleRecord(c *wire.Conn, id uint64, body []byte) {
	if m.closed.Load() {
		c.Respond(id, errResponse(m.errClosed(), 0))
		return
	}
	c.RespondBatch(c.Batch(), id, m.backupSide().recordFrame(body, m.tableVersion()))
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

// migrationChunk is the largest piece of a partition snapshot sent in one
// frame.
const migrationChunk = 4 << 20
