package backup

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// Snapshot is a full copy of one partition on one member: every service's
// state (opaque bytes from op.State.Snapshot, by service name) and the
// request-identity table.
//
// Encoded: array of (service name, state bytes) pairs flattened
// [n, name1, blob1, ...], then an array of 9-field identity records.
type Snapshot struct {
	Services map[string][]byte
	Dedup    []DedupRecord
}

// EncodeSnapshot encodes the states blobs[i] of services names[i] and the
// identity records recs.
func EncodeSnapshot(names []string, blobs [][]byte, recs []DedupRecord) ([]byte, error) {
	if len(names) != len(blobs) {
		return nil, fmt.Errorf("%w: snapshot: %d names for %d states", op.ErrInternal, len(names), len(blobs))
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	err := enc.EncodeArrayLen(len(names))
	for i := range names {
		err = firstErr(err, enc.EncodeString(names[i]), enc.EncodeBytes(blobs[i]))
	}
	err = firstErr(err, enc.EncodeArrayLen(len(recs)))
	for _, r := range recs {
		err = firstErr(err, enc.EncodeArrayLen(9), enc.EncodeUint(r.Origin), enc.EncodeUint(r.Call), enc.EncodeUint(r.Seq), enc.EncodeInt(r.At),
			enc.EncodeUint(uint64(r.Code)), enc.EncodeString(r.Msg), enc.EncodeBool(r.Found), enc.EncodeBytes(r.Value), enc.EncodeInt(r.Num))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: encode snapshot: %v", op.ErrInternal, err)
	}
	return buf.Bytes(), nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// DecodeSnapshot reads a snapshot (a peer's bytes) without trusting its
// length prefixes beyond the bytes present; every error wraps
// op.ErrBadRequest.
func DecodeSnapshot(b []byte) (*Snapshot, error) {
	bad := func(what string, err error) error {
		return fmt.Errorf("%w: partition snapshot: %s: %v", op.ErrBadRequest, what, err)
	}
	if err := mpsafe.Check(b, wire.MaxDepth); err != nil {
		return nil, fmt.Errorf("%w: partition snapshot: %w", op.ErrBadRequest, err)
	}
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	n, err := dec.DecodeArrayLen()
	if err != nil || n < 0 || n > len(b) {
		return nil, bad("services", err)
	}
	snap := &Snapshot{Services: map[string][]byte{}}
	for range n {
		name, err := dec.DecodeString()
		if err != nil {
			return nil, bad("service name", err)
		}
		blob, err := dec.DecodeBytes()
		if err != nil {
			return nil, bad("service state", err)
		}
		snap.Services[name] = blob
	}
	n, err = dec.DecodeArrayLen()
	if err != nil || n < 0 || n > len(b) {
		return nil, bad("identities", err)
	}
	for range n {
		var r DedupRecord
		var code uint64
		l, err := dec.DecodeArrayLen()
		if err == nil && l != 9 {
			err = fmt.Errorf("%d fields", l)
		}
		if err == nil {
			r.Origin, err = dec.DecodeUint64()
		}
		if err == nil {
			r.Call, err = dec.DecodeUint64()
		}
		if err == nil {
			r.Seq, err = dec.DecodeUint64()
		}
		if err == nil {
			r.At, err = dec.DecodeInt64()
		}
		if err == nil {
			code, err = dec.DecodeUint64()
			if code > 0xffff {
				err = fmt.Errorf("code %d out of range", code)
			}
			r.Code = uint16(code)
		}
		if err == nil {
			r.Msg, err = dec.DecodeString()
		}
		if err == nil {
			r.Found, err = dec.DecodeBool()
		}
		if err == nil {
			r.Value, err = dec.DecodeBytes()
		}
		if err == nil {
			r.Num, err = dec.DecodeInt64()
		}
		if err != nil {
			return nil, bad("identity", err)
		}
		snap.Dedup = append(snap.Dedup, r)
	}
	return snap, nil
}
