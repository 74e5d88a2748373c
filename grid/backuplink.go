package grid

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// connLink is the backup.Transport from a partition's owner to one backup
// over a member connection: records as wire.KindRecord frames (or, to a
// member without wire.CapRecords, as sysBackup requests), probes and copy
// chunks as system requests. One is made per probe-or-copy round, under
// the partition lock; the records that follow the round go through it
// while the target streams, so the owner can tell a late answer of an
// older round from the current one by the link it came through.
type connLink struct {
	m    *Member
	conn *wire.Conn
	// sc is the partition's scratch (used under its lock): the batch of
	// the read loop that applied the mutation and the legacy record,
	// encoded once for every backup that needs it.
	sc *recordScratch
	// rec is the record being sent; encode writes it into the
	// connection's buffer (made once per link: no closure per record).
	rec    *backup.Record
	encode func(*msgpack.Encoder) error
}

// errEncodeRecord marks a record that could not be encoded: the mutation
// fails (it is not a send failure to retry with a resync).
var errEncodeRecord = errors.New("encode backup record")

func newConnLink(m *Member, conn *wire.Conn, sc *recordScratch) *connLink {
	l := &connLink{m: m, conn: conn, sc: sc}
	l.encode = func(enc *msgpack.Encoder) error { return backup.EncodeRecord(enc, l.rec) }
	return l
}

// Batch is the batch of the connection's read loop, where the record
// answers arrive: an acknowledgement completed there answers the client
// with the rest of that loop's output.
func (l *connLink) Batch() *wire.Batch { return l.conn.Batch() }

// Record sends r. Conn.GoRecord and GoBatch encode before they return,
// so nothing here outlives the call.
func (l *connLink) Record(_ context.Context, r *backup.Record, done backup.Done) error {
	sc := l.sc
	if l.conn.Peer().Caps&wire.CapRecords != 0 && !l.m.legacyRecords.Load() {
		// A frame of its own, with a limit of its own: a mutation at
		// the value limit replicates as a record, not as a resync.
		l.rec = r
		err := l.conn.GoRecord(sc.batch, l.encode, done)
		l.rec = nil
		return err
	}
	if sc.legacy == nil {
		binary.BigEndian.PutUint64(sc.term[:], r.Term)
		v, err := sc.encodeRecord(r.Time, r.Req)
		if err != nil {
			return fmt.Errorf("%w: %w: %v", op.ErrInternal, errEncodeRecord, err)
		}
		sc.legacy = v
	}
	req := &sc.req
	*req = op.Request{Service: sysService, Op: sysBackup, Partition: r.Partition, Num: int64(r.Seq), TableVersion: r.TableVersion, Value: sc.legacy, Aux: sc.term[:]}
	return l.conn.GoBatch(sc.batch, req, done)
}

// Probe sends p as a sysBackupProbe request (the term in Aux).
func (l *connLink) Probe(_ context.Context, p backup.Probe, done backup.Done) error {
	req := &op.Request{Service: sysService, Op: sysBackupProbe, Partition: p.Partition, Num: int64(p.Seq), TableVersion: p.TableVersion, Aux: binary.BigEndian.AppendUint64(nil, p.Term)}
	return l.conn.Go(req, done)
}

// Chunk sends c as a sysBackupSync request (the mark of the last chunk in
// Aux).
func (l *connLink) Chunk(_ context.Context, c backup.Chunk, done backup.Done) error {
	req := &op.Request{Service: sysService, Op: sysBackupSync, Partition: c.Partition, Key: c.ID, Num: c.Offset, TableVersion: c.TableVersion, Value: c.Data}
	if c.Final {
		req.Aux = backup.Mark(c.Seq, c.Term)
	}
	return l.conn.Go(req, done)
}

// linkBatch is the read-loop batch of the transport an answer came
// through, if it has one.
func linkBatch(l backup.Transport) *wire.Batch {
	if b, ok := l.(interface{ Batch() *wire.Batch }); ok {
		return b.Batch()
	}
	return nil
}
