package backup

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// Record is one mutation an owner ships to a backup: the request it
// applied, with the owner's clock (replay is deterministic given both) and
// the replication position it gave it.
type Record struct {
	// Partition is the partition the mutation belongs to.
	Partition int32
	// Seq is the mutation's sequence number in the partition.
	Seq uint64
	// Term is the table version at which the applying owner became owner.
	Term uint64
	// TableVersion is the owner's table version when it sent the record
	// (the fence of Fence).
	TableVersion uint64
	// Time is the owner's clock when it applied the mutation.
	Time time.Time
	// Req is the mutation as the owner applied it.
	Req *op.Request
}

// recordFields is the number of fields of a record frame's body.
const recordFields = 6

// EncodeRecord writes r as the body of a wire.KindRecord frame: a msgpack
// array [partition, seq, term, table version, time ns, request]. The
// request is the whole request a client sent (key, value and Aux at their
// limits), so a record needs a frame limit of its own (wire.Limits.
// MaxRecordFrame).
func EncodeRecord(enc *msgpack.Encoder, r *Record) error {
	return errors.Join(
		enc.EncodeArrayLen(recordFields),
		enc.EncodeInt(int64(r.Partition)),
		enc.EncodeUint(r.Seq),
		enc.EncodeUint(r.Term),
		enc.EncodeUint(r.TableVersion),
		enc.EncodeInt(r.Time.UnixNano()),
		wire.EncodeRequest(enc, r.Req),
	)
}

// EncodeRecordValue writes the record of req applied at now in the form
// older members take as the Value of a sysop.Backup request (its position
// rides in the request's other fields): time ns, then the request.
func EncodeRecordValue(enc *msgpack.Encoder, now time.Time, req *op.Request) error {
	if err := enc.EncodeInt(now.UnixNano()); err != nil {
		return err
	}
	return wire.EncodeRequest(enc, req)
}

// Decoder decodes records from a peer. It keeps its buffers and the
// interned structure names between calls; it is not safe for concurrent
// use (pool them: records are decoded on every connection's read loop).
type Decoder struct {
	rd    bytes.Reader
	dec   *msgpack.Decoder
	names wire.Names
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder {
	d := &Decoder{}
	d.dec = msgpack.NewDecoder(&d.rd)
	return d
}

func (d *Decoder) reset(b []byte, what string) error {
	// A peer's bytes: check every length and the nesting before the
	// decoder sees them.
	if err := mpsafe.Check(b, wire.MaxDepth); err != nil {
		return fmt.Errorf("%w: %s: %w", wire.ErrMalformed, what, err)
	}
	d.rd.Reset(b)
	d.dec.ResetReader(&d.rd)
	return nil
}

// Record decodes the body of a wire.KindRecord frame. The request is a
// copy: it does not alias b. Errors wrap op.ErrBadRequest.
func (d *Decoder) Record(b []byte) (Record, error) {
	if err := d.reset(b, "backup record"); err != nil {
		return Record{}, err
	}
	dec := d.dec
	bad := func(what string, err error) (Record, error) {
		return Record{}, fmt.Errorf("%w: backup record: %s: %v", wire.ErrMalformed, what, err)
	}
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return bad("header", err)
	}
	if n < recordFields {
		return bad("header", fmt.Errorf("%d fields, want %d", n, recordFields))
	}
	var r Record
	p, err := dec.DecodeInt64()
	if err != nil || p < 0 || p > 1<<31-1 {
		return bad("partition", err)
	}
	r.Partition = int32(p)
	if r.Seq, err = dec.DecodeUint64(); err != nil {
		return bad("sequence", err)
	}
	if r.Term, err = dec.DecodeUint64(); err != nil {
		return bad("term", err)
	}
	if r.TableVersion, err = dec.DecodeUint64(); err != nil {
		return bad("table version", err)
	}
	ns, err := dec.DecodeInt64()
	if err != nil {
		return bad("time", err)
	}
	r.Time = time.Unix(0, ns)
	r.Req = new(op.Request)
	if err := wire.DecodeRequestNames(dec, r.Req, &d.names); err != nil {
		return Record{}, fmt.Errorf("backup record: %w", err)
	}
	// Fields a newer owner added: skipped (the walk above bounded them).
	for range n - recordFields {
		if err := dec.Skip(); err != nil {
			return bad("extra field", err)
		}
	}
	return r, nil
}

// RecordValue decodes what EncodeRecordValue wrote (an older owner's
// record, carried in a sysop.Backup request). Errors wrap
// op.ErrBadRequest.
func (d *Decoder) RecordValue(b []byte) (time.Time, *op.Request, error) {
	if err := d.reset(b, "backup record"); err != nil {
		return time.Time{}, nil, err
	}
	ns, err := d.dec.DecodeInt64()
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("%w: backup record time: %v", op.ErrBadRequest, err)
	}
	req := new(op.Request)
	if err := wire.DecodeRequestNames(d.dec, req, &d.names); err != nil {
		return time.Time{}, nil, err
	}
	return time.Unix(0, ns), req, nil
}
