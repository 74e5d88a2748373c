package grid

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// Backup records: the owner ships each mutation to the partition's backups
// as a wire.KindRecord frame (backup.EncodeRecord: the original request,
// the owner's clock and the replication position), or, to a member without
// wire.CapRecords, as a system request whose Value is the original request
// plus the owner's clock; backups replay it (State.Apply is deterministic). Records of one
// partition are enqueued under the partition's lock on one connection per
// backup, so they arrive in sequence order.

// recordScratch is a slot's reusable state for sending backup records
// under the slot's lock (see connLink): Conn.GoBatch encodes the request
// into the connection's buffer before it returns, so nothing here outlives
// the call.
type recordScratch struct {
	buf  bytes.Buffer
	enc  *msgpack.Encoder
	req  op.Request
	term [8]byte
	// rec is the record being replicated (one per slot: not allocated
	// per mutation).
	rec backup.Record
	// batch is the batch of the read loop that applied the mutation, and
	// legacy the mutation's record for members without wire.CapRecords
	// (encoded once, for the first backup that needs it); both are set
	// for one replicate call.
	batch  *wire.Batch
	legacy []byte
}

// maxScratch is the largest record buffer a slot keeps between mutations.
const maxScratch = 64 << 10

// encodeRecord encodes the record of req into the scratch buffer and
// returns it; it is valid until the next call.
func (r *recordScratch) encodeRecord(now time.Time, req *op.Request) ([]byte, error) {
	if r.enc == nil || r.buf.Cap() > maxScratch {
		r.buf = bytes.Buffer{}
		r.enc = msgpack.NewEncoder(&r.buf)
	}
	r.buf.Reset()
	if err := backup.EncodeRecordValue(r.enc, now, req); err != nil {
		return nil, err
	}
	return r.buf.Bytes(), nil
}

// decodeRecord decodes a legacy backup record (the Value of a sysBackup
// request) with a decoder from pool (records are decoded on every
// replicated mutation, from every connection's read loop; the member owns
// the pool).
func decodeRecord(pool *sync.Pool, b []byte) (time.Time, *op.Request, error) {
	d, _ := pool.Get().(*backup.Decoder)
	if d == nil {
		d = backup.NewDecoder()
	}
	defer pool.Put(d)
	return d.RecordValue(b)
}

// replicate sends the slot's latest mutation to its backups. It runs under
// s.mu and never blocks on the network: it only enqueues. need is how many
// backups (the first ones) w waits for.
func (m *Member) replicate(s *slot, b *wire.Batch, version uint64, now time.Time, req *op.Request, w *ackWait, need int) {
	seq := s.seq
	sc := &s.rec
	sc.rec = backup.Record{Partition: s.id, Seq: seq, Term: s.term, TableVersion: version, Time: now, Req: req}
	sc.batch, sc.legacy = b, nil
	defer func() { sc.rec, sc.batch, sc.legacy = backup.Record{}, nil, nil }() // do not pin req's value
	for i, tg := range s.targets {
		var wi *ackWait
		if i < need {
			wi = w
		}
		if !tg.prog.Streaming() || tg.link == nil {
			// A resync will carry this mutation.
			if wi != nil {
				tg.prog.Wait(seq, wi)
			}
			m.scheduleResync(s.id, tg.name)
			continue
		}
		link := tg.link
		err := link.Record(m.ctx, &sc.rec, func(resp *op.Response, err error) {
			m.onRecordAck(s, tg, link, seq, wi, resp, err)
		})
		if errors.Is(err, errEncodeRecord) {
			if w != nil {
				w.fail(err)
			}
			return
		}
		if err != nil {
			tg.prog.Broken()
			if wi != nil {
				tg.prog.Wait(seq, wi)
			}
			m.scheduleResync(s.id, tg.name)
		}
	}
}

func (s *slot) hasTarget(tg *target) bool {
	for _, t := range s.targets {
		if t == tg {
			return true
		}
	}
	return false
}

func (tg *target) signal() {
	if tg.handoff != nil {
		close(tg.handoff)
		tg.handoff = nil
	}
}

// onRecordAck handles a backup's answer to one record. It runs on the
// backup connection's read loop (or where the connection failed).
func (m *Member) onRecordAck(s *slot, tg *target, link backup.Transport, seq uint64, w *ackWait, resp *op.Response, err error) {
	if err == nil && resp.Code == op.OK {
		s.mu.Lock()
		ok := s.hasTarget(tg)
		if ok {
			tg.advance(seq)
		}
		s.mu.Unlock()
		// Outside the lock: the completion may answer the client inline.
		if w != nil {
			if ok {
				w.ackInline(linkBatch(link))
			} else {
				w.fail(op.Errorf(op.CodeBackupTimeout, "backup %s of partition %d left before acknowledging; the outcome is unknown", tg.name, s.id))
			}
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasTarget(tg) {
		if w != nil {
			w.fail(op.Errorf(op.CodeBackupTimeout, "backup %s of partition %d left before acknowledging; the outcome is unknown", tg.name, s.id))
		}
		return
	}
	if err == nil && resp.Code == op.CodeWrongOwner {
		// The backup follows a table in which we no longer own the
		// partition: this member is a deposed owner. Nothing it applied
		// since is acknowledged; catch up with the table.
		if w != nil {
			w.fail(op.Errorf(op.CodeWrongOwner, "deposed owner: %s", resp.Msg))
		}
		m.fence("a backup refused a record: " + resp.Msg)
		return
	}
	// A gap, a backup that does not know its role yet, or a lost
	// connection: a resync will cover this record.
	if tg.link == link {
		tg.prog.Broken()
	}
	if w != nil {
		tg.prog.Wait(seq, w)
	}
	m.scheduleResync(s.id, tg.name)
}

// resyncJob asks the owner of partition p to copy it to backup name.
type resyncJob struct {
	p    int32
	name string
}

// scheduleResync queues a resync of partition p to backup name, unless one
// is already queued and not yet started.
func (m *Member) scheduleResync(p int32, name string) {
	j := resyncJob{p, name}
	m.resyncMu.Lock()
	defer m.resyncMu.Unlock()
	if m.resyncPending[j] {
		return
	}
	m.resyncPending[j] = true
	m.resyncQueue = append(m.resyncQueue, j)
	select {
	case m.resyncKick <- struct{}{}:
	default:
	}
}

func (m *Member) nextResync() (resyncJob, bool) {
	m.resyncMu.Lock()
	defer m.resyncMu.Unlock()
	if len(m.resyncQueue) == 0 {
		return resyncJob{}, false
	}
	j := m.resyncQueue[0]
	m.resyncQueue = m.resyncQueue[1:]
	// The job leaves the pending set when it starts, not when it ends: a
	// request made while it runs must queue it again. The probe this run
	// sends can be refused (a new backup holds nothing, so it needs a
	// copy) and onProbeAck can ask for a resync before this worker is
	// done; likewise a copy or record refused while resync finds the
	// target streaming and returns. Such a request used to be dropped as
	// already pending: nothing copied the partition, the backup stayed out
	// of sync for good, and the hand-off of the partition to it (a leaving
	// member's) waited until its timeout, round after round. Two workers
	// may now run the same job: resync checks and sets the target's progress under
	// the partition lock, so only one of them sends anything.
	delete(m.resyncPending, j)
	return j, true
}

// resyncWorker copies partitions to backups that need a full copy. Several
// run at once (MigrationParallelism); each job is retried with backoff
// while the backup stays in the table.
func (m *Member) resyncWorker() {
	defer m.wg.Done()
	for {
		j, ok := m.nextResync()
		if !ok {
			select {
			case <-m.ctx.Done():
				return
			case <-m.resyncKick:
			}
			continue
		}
		err := m.resync(j)
		if err != nil && m.ctx.Err() == nil {
			m.log.Debug("resync failed; retrying", "partition", j.p, "backup", j.name, "err", err)
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			m.scheduleResync(j.p, j.name)
		}
	}
}

// resync sends a full snapshot of partition p to backup j.name, enqueued
// under the partition lock so that records of later mutations follow it on
// the same connection.
func (m *Member) resync(j resyncJob) error {
	s := m.slots[j.p]
	s.mu.Lock()
	tg := s.findTarget(j.name)
	if tg == nil || s.role != 0 || tg.prog.Streaming() {
		s.mu.Unlock()
		return nil
	}
	addr := tg.addr
	s.mu.Unlock()
	if m.declaredFailed(j.name) {
		// The table still lists a backup the failure detector declared
		// dead (the next table drops it). Dialling it would hold this
		// worker, and every other one waiting for that member, for the
		// dial timeout while copies to live backups (which writes and
		// hand-offs wait for) queue behind.
		return nil
	}

	dial := m.backupDial.Load()
	var conn *wire.Conn
	if dial == nil {
		ctx, cancel := context.WithTimeout(m.ctx, 2*time.Second)
		c, err := m.peers.get(ctx, j.name, addr)
		cancel()
		if err != nil {
			return err
		}
		conn = c
	}
	cur := m.Table()
	if cur == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tg = s.findTarget(j.name)
	if tg == nil || s.role != 0 {
		return nil
	}
	seq := s.seq
	step := tg.prog.Next()
	if step == backup.NoStep {
		return nil
	}
	var link backup.Transport
	if dial != nil {
		link = (*dial)(j.p, j.name)
	} else {
		link = newConnLink(m, conn, &s.rec)
	}
	if step == backup.SendProbe {
		// The backup may already hold everything (it was a co-replica
		// before this member became owner): ask before copying. The probe
		// is ordered with later records like a snapshot would be.
		err := link.Probe(m.ctx, backup.Probe{Partition: j.p, TableVersion: cur.Version, Seq: seq, Term: s.term}, func(resp *op.Response, err error) {
			m.onProbeAck(s, tg, link, seq, resp, err)
		})
		if err != nil {
			return err
		}
		tg.prog.Started()
		tg.link = link
		return nil
	}
	data, n, err := s.snapshotLocked(m)
	if err != nil {
		return err
	}
	id := "sync/" + strconv.FormatUint(cur.Version, 10) + "/" + strconv.Itoa(int(j.p)) + "/" + strconv.FormatUint(m.syncIDs.Add(1), 10)
	// A chunk is a request value: no larger than the value limit either
	// (with limits below 4 MiB a larger partition could never be copied).
	chunk := min(migrationChunk, m.cfg.Limits.MaxValueSize)
	for off := 0; ; off += chunk {
		end := min(off+chunk, len(data))
		final := end == len(data)
		c := backup.Chunk{Partition: j.p, TableVersion: cur.Version, ID: id, Offset: int64(off), Data: data[off:end], Final: final, Seq: seq, Term: s.term}
		err := link.Chunk(m.ctx, c, func(resp *op.Response, err error) {
			m.onSyncAck(s, tg, link, seq, final, n, resp, err)
		})
		if err != nil {
			return err
		}
		if final {
			break
		}
	}
	tg.prog.Started()
	tg.link = link
	m.counters.bytesOut.Add(uint64(len(data)))
	return nil
}

// onProbeAck completes a probe: the backup holds the same sequence (in
// sync, nothing to copy) or not (copy it).
func (m *Member) onProbeAck(s *slot, tg *target, link backup.Transport, seq uint64, resp *op.Response, err error) {
	if err == nil {
		err = resp.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasTarget(tg) || tg.link != link || !tg.prog.Streaming() {
		return
	}
	if err != nil {
		tg.prog.Broken()
		m.scheduleResync(s.id, tg.name)
		return
	}
	tg.caught(seq)
}

func (s *slot) findTarget(name string) *target {
	for _, t := range s.targets {
		if t.name == name {
			return t
		}
	}
	return nil
}

func (m *Member) onSyncAck(s *slot, tg *target, link backup.Transport, seq uint64, final bool, entries int, resp *op.Response, err error) {
	if err == nil {
		err = resp.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasTarget(tg) || tg.link != link {
		return
	}
	if err != nil {
		if tg.prog.Streaming() {
			tg.prog.Broken()
			m.scheduleResync(s.id, tg.name)
		}
		return
	}
	if !final {
		return
	}
	tg.caught(seq)
	m.counters.migrationsOut.Add(1)
	m.log.Debug("backup synced", "partition", s.id, "backup", tg.name, "seq", seq, "entries", entries)
}

// probe answers whether this backup already holds the owner's mutations
// up to seq (then no copy is needed).
func (s *slot) probe(m *Member, cur, version, seq, term uint64) *op.Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch v := backup.OnProbe(s.replica(), cur, version, seq, term); v {
	case backup.Deposed, backup.NotBackup:
		return s.fenced(m, v, "probe", cur, version)
	case backup.Differs:
		return &op.Response{Code: op.CodeBackupGap, Msg: fmt.Sprintf("partition %d: backup at %d (term %d), owner at %d (term %d)", s.id, s.seq, s.term, seq, term), TableVersion: cur}
	}
	s.dataVersion = max(s.dataVersion, version)
	s.partial = false // the owner's history is here
	return &op.Response{TableVersion: cur}
}

// installSync replaces this backup's copy of the partition with the
// owner's snapshot taken at sequence seq.
func (s *slot) installSync(m *Member, cur, version, seq, term uint64, data []byte) *op.Response {
	snap, err := backup.DecodeSnapshot(data)
	if err != nil {
		return errResponse(err, cur)
	}
	states := make([]op.State, len(m.services))
	now := time.Now()
	for name, b := range snap.Services {
		i, ok := m.svcIndex[name]
		if !ok {
			return errResponse(op.Errorf(op.CodeUnknownService, "snapshot has unknown service %s", op.Quote(name)), cur)
		}
		st := m.services[i].NewState(s.id)
		if err := st.Restore(now, b); err != nil {
			return errResponse(op.Errorf(op.CodeBadRequest, "restore %s in partition %d: %v", name, s.id, err), cur)
		}
		states[i] = st
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := backup.Fence(s.replica(), cur, version); v != backup.Accept {
		return s.fenced(m, v, "sync", cur, version)
	}
	s.states = states
	s.dedup.Load(snap.Dedup)
	s.seq, s.term = seq, term
	s.partial = false
	s.dataVersion = max(s.dataVersion, version)
	m.counters.migrationsIn.Add(1)
	return &op.Response{TableVersion: cur}
}

// handoff freezes partition p (new requests get ErrMigrating) and waits
// until backup next holds every mutation, so the coordinator can make it
// the owner without losing or repeating a write. The partition stays
// frozen until a newer table arrives.
func (m *Member) handoff(ctx context.Context, p int32, next string) error {
	if p < 0 || int(p) >= len(m.slots) {
		return op.Errorf(op.CodeBadRequest, "partition %d out of range", p)
	}
	cur := m.Table()
	if cur == nil {
		return op.Errorf(op.CodeStaleTable, "no table")
	}
	s := m.slots[p]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.role != 0 {
		return op.Errorf(op.CodeWrongOwner, "%s does not own partition %d", m.cfg.Name, p)
	}
	tg := s.findTarget(next)
	if tg == nil {
		return op.Errorf(op.CodeBadRequest, "%s is not a backup of partition %d", next, p)
	}
	s.frozen = cur.Version
	s.failParked(op.CodeMigrating, fmt.Sprintf("partition %d is being handed over", p), cur.Version)
	for !tg.prog.Holds(s.seq) {
		// The partition is frozen, so no mutation will schedule a copy
		// to a backup that is not being fed: ask for one, as waitSynced
		// does, rather than rely on whoever made it fall behind.
		if !tg.prog.Streaming() {
			m.scheduleResync(p, next)
		}
		if tg.handoff == nil {
			tg.handoff = make(chan struct{})
		}
		ch := tg.handoff
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		s.mu.Lock()
		if ctx.Err() != nil || !s.hasTarget(tg) || s.role != 0 {
			if s.frozen == cur.Version {
				s.frozen = 0
			}
			return fmt.Errorf("hand-off of partition %d to %s: %w", p, next, op.FromContext(ctx))
		}
	}
	return nil
}

// pauseWatch notices when this process was stopped (SIGSTOP, a VM freeze)
// long enough for the cluster to declare it dead: its table may be stale,
// so it refuses to act as owner until it has caught up with the
// coordinator. It also samples the heap for the memory guard (memguard.go).
func (m *Member) pauseWatch() {
	defer m.wg.Done()
	const tick = 50 * time.Millisecond
	threshold := time.Duration(m.cfg.Gossip.SuspicionMult) * m.cfg.Gossip.ProbeInterval
	threshold = max(threshold, 500*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var sampled time.Time
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-t.C:
			last := time.Unix(0, m.lastTick.Swap(now.UnixNano()))
			if gap := now.Sub(last); gap > threshold {
				m.fence(fmt.Sprintf("process was paused for %v", gap.Round(time.Millisecond)))
			}
			// The memory guard samples the heap on this loop too.
			if now.Sub(sampled) >= memSampleEvery-tick/2 {
				sampled = now
				m.memSample(now)
			}
		}
	}
}

// pausedAt reports whether the member must not serve as owner now: it is
// fenced, or its pause watcher has not run for too long (the process was
// just resumed and the watcher has not noticed yet).
func (m *Member) pausedAt(now time.Time) bool {
	if m.fenced.Load() {
		return true
	}
	threshold := max(time.Duration(m.cfg.Gossip.SuspicionMult)*m.cfg.Gossip.ProbeInterval, 500*time.Millisecond)
	if now.Sub(time.Unix(0, m.lastTick.Load())) > threshold {
		m.fence("pause watcher stalled")
		return true
	}
	return false
}

// fence stops this member from acting as an owner until it has caught up
// with the coordinator's table (see unfenceLoop).
func (m *Member) fence(why string) {
	if m.fenced.CompareAndSwap(false, true) {
		m.log.Warn("fenced: refusing owner operations until the table is confirmed", "why", why)
		select {
		case m.fenceKick <- struct{}{}:
		default:
		}
	}
}

// unfenceLoop lifts the fence once the coordinator confirms the table: a
// newer table is adopted, or the coordinator's table is the one we have.
func (m *Member) unfenceLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.fenceKick:
		}
		for m.fenced.Load() && m.ctx.Err() == nil {
			m.lastTick.Store(time.Now().UnixNano())
			if m.confirmTable() {
				m.fenced.Store(false)
				m.log.Info("fence lifted: table confirmed", "version", m.tableVersion())
				break
			}
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

func (m *Member) confirmTable() bool {
	c, ok := m.coordinatorInfo()
	if !ok {
		return false
	}
	if c.Name == m.cfg.Name {
		// We coordinate: publish a new version so that every member
		// (and any deposed owner) moves past the old one.
		m.coord.force.Store(true)
		before := m.tableVersion()
		m.coord.poke()
		ch := m.tableChanged()
		select {
		case <-ch:
		case <-time.After(time.Second):
		case <-m.ctx.Done():
		}
		return m.tableVersion() > before
	}
	ctx, cancel := context.WithTimeout(m.ctx, time.Second)
	defer cancel()
	resp, err := m.peers.call(ctx, c.Name, c.Addr, &op.Request{Service: sysService, Op: sysGetTable, Partition: -1})
	if err != nil || !resp.Found {
		return false
	}
	before := m.tableVersion()
	m.pullFromResponse(resp, c.Name)
	return resp.TableVersion >= before
}
