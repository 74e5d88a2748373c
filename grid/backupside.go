package grid

import (
	"fmt"
	"time"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/op"
)

// backupSide is a member in its role as a backup: the backup.Handler that
// applies what owners send (records, probes, copy chunks) to this member's
// replicas. The wire forms (record frames; sysBackup, sysBackupProbe and
// sysBackupSync requests) are decoded here and handed to the same methods.
type backupSide Member

var _ backup.Handler = (*backupSide)(nil)

func (m *Member) backupSide() *backupSide { return (*backupSide)(m) }

func (h *backupSide) member() *Member { return (*Member)(h) }

// HandleRecord applies the record of one of the owner's mutations.
func (h *backupSide) HandleRecord(r *backup.Record) *op.Response {
	return h.record(r, h.member().tableVersion())
}

// HandleProbe answers whether this backup holds the owner's history.
func (h *backupSide) HandleProbe(p backup.Probe) *op.Response {
	return h.probe(p, h.member().tableVersion())
}

// HandleChunk gathers a chunk of a copy and installs the copy at its last
// chunk.
func (h *backupSide) HandleChunk(c backup.Chunk) *op.Response {
	return h.chunk(c, h.member().tableVersion())
}

func (h *backupSide) partition(p int32) (*slot, *op.Response) {
	m := h.member()
	if p < 0 || int(p) >= len(m.slots) {
		return nil, &op.Response{Code: op.CodeBadRequest, Msg: fmt.Sprintf("partition %d out of range", p)}
	}
	return m.slots[p], nil
}

// record applies r at a member that follows table version cur.
func (h *backupSide) record(r *backup.Record, cur uint64) *op.Response {
	s, bad := h.partition(r.Partition)
	if bad != nil {
		return bad
	}
	m := h.member()
	if r.TableVersion > cur {
		m.pullLater(r.TableVersion)
	}
	return s.applyBackup(m, cur, r.TableVersion, r.Seq, r.Term, r.Time, r.Req)
}

// recordFrame decodes a wire.KindRecord frame (with a decoder from the
// member's pool: records are decoded on every replicated mutation, from
// every connection's read loop) and applies it.
func (h *backupSide) recordFrame(body []byte, cur uint64) *op.Response {
	m := h.member()
	d, _ := m.recordDecoders.Get().(*backup.Decoder)
	if d == nil {
		d = backup.NewDecoder()
	}
	r, err := d.Record(body)
	m.recordDecoders.Put(d)
	if err != nil {
		return errResponse(err, cur)
	}
	return h.record(&r, cur)
}

// legacyRecord decodes a record sent as a sysBackup request (by an owner
// without wire.CapRecords) and applies it.
func (h *backupSide) legacyRecord(req *op.Request, cur uint64) *op.Response {
	if _, bad := h.partition(req.Partition); bad != nil {
		return bad
	}
	m := h.member()
	now, inner, err := decodeRecord(&m.recordDecoders, req.Value)
	if err != nil {
		return errResponse(err, cur)
	}
	term, ok := backup.ParseTerm(req.Aux)
	if !ok {
		if req.TableVersion > cur {
			m.pullLater(req.TableVersion)
		}
		return &op.Response{Code: op.CodeBadRequest, Msg: "backup record without a term"}
	}
	r := backup.Record{Partition: req.Partition, Seq: uint64(req.Num), Term: term, TableVersion: req.TableVersion, Time: now, Req: inner}
	return h.record(&r, cur)
}

func (h *backupSide) probe(p backup.Probe, cur uint64) *op.Response {
	s, bad := h.partition(p.Partition)
	if bad != nil {
		return bad
	}
	return s.probe(h.member(), cur, p.TableVersion, p.Seq, p.Term)
}

// legacyProbe decodes a sysBackupProbe request (the term in Aux).
func (h *backupSide) legacyProbe(req *op.Request, cur uint64) *op.Response {
	if _, bad := h.partition(req.Partition); bad != nil {
		return bad
	}
	term, ok := backup.ParseTerm(req.Aux)
	if !ok {
		return &op.Response{Code: op.CodeBadRequest, Msg: "probe without a term"}
	}
	return h.probe(backup.Probe{Partition: req.Partition, TableVersion: req.TableVersion, Seq: uint64(req.Num), Term: term}, cur)
}

// chunk adds c to its copy's assembly; the last chunk installs the copy.
func (h *backupSide) chunk(c backup.Chunk, cur uint64) *op.Response {
	s, bad := h.partition(c.Partition)
	if bad != nil {
		return bad
	}
	m := h.member()
	m.restoreMu.Lock()
	rb := m.restores[c.ID]
	if c.Offset == 0 {
		rb = backup.NewAssembly(time.Now())
		m.restores[c.ID] = rb
	}
	if rb == nil || !rb.Add(c.Offset, c.Data) {
		delete(m.restores, c.ID)
		m.restoreMu.Unlock()
		return &op.Response{Code: op.CodeBackupGap, Msg: fmt.Sprintf("sync %s: chunk at offset %d out of order", c.ID, c.Offset)}
	}
	if c.Final {
		delete(m.restores, c.ID)
	}
	m.restoreMu.Unlock()
	if !c.Final {
		return &op.Response{TableVersion: cur}
	}
	if c.TableVersion > cur {
		m.pullLater(c.TableVersion)
	}
	return s.installSync(m, cur, c.TableVersion, c.Seq, c.Term, rb.Bytes())
}

// legacyChunk decodes a sysBackupSync request: the copy's id in Key, the
// offset in Num, the mark of the last chunk in Aux.
func (h *backupSide) legacyChunk(req *op.Request, cur uint64) *op.Response {
	c := backup.Chunk{Partition: req.Partition, TableVersion: req.TableVersion, ID: req.Key, Offset: req.Num, Data: req.Value, Final: len(req.Aux) > 0}
	if c.Final {
		var ok bool
		if c.Seq, c.Term, ok = backup.ParseMark(req.Aux); !ok {
			return &op.Response{Code: op.CodeBadRequest, Msg: "sync: bad sequence mark"}
		}
	}
	return h.chunk(c, cur)
}
