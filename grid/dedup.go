package grid

import (
	"time"

	"github.com/shoalgrid/shoal/op"
)

// dedupTable remembers the responses of a partition's recent mutations by
// request identity (origin, call sequence). It lives in the slot, is
// filled on the owner and on every backup (replay recomputes the same
// response), and travels in snapshots, so a retry after a timeout, a
// failover or a migration gets the original answer.
type dedupTable struct {
	entries map[dedupKey]dedupEntry
	order   []dedupKey // insertion order, for expiry
}

type dedupKey struct{ origin, seq uint64 }

type dedupEntry struct {
	resp op.Response // inline: no allocation per mutation
	seq  uint64      // the partition sequence of the mutation
	at   int64
}

// Retention bounds: a retry later than dedupRetention, or after more than
// dedupMax newer mutations on the partition, may be applied again.
const (
	dedupRetention = 2 * time.Minute
	dedupMax       = 4096
)

func (d *dedupTable) get(origin, call uint64) (op.Response, uint64, bool) {
	if d.entries == nil {
		return op.Response{}, 0, false
	}
	e, ok := d.entries[dedupKey{origin, call}]
	return e.resp, e.seq, ok
}

func (d *dedupTable) put(origin, call, seq uint64, resp *op.Response, now time.Time) {
	if d.entries == nil {
		d.entries = map[dedupKey]dedupEntry{}
	}
	k := dedupKey{origin, call}
	if _, ok := d.entries[k]; !ok {
		d.order = append(d.order, k)
	}
	r := *resp
	r.TableVersion = 0
	d.entries[k] = dedupEntry{resp: r, seq: seq, at: now.UnixNano()}
	for len(d.order) > dedupMax {
		d.drop()
	}
}

func (d *dedupTable) drop() {
	delete(d.entries, d.order[0])
	d.order[0] = dedupKey{}
	d.order = d.order[1:]
}

func (d *dedupTable) expire(now time.Time) {
	cutoff := now.Add(-dedupRetention).UnixNano()
	for len(d.order) > 0 {
		if e, ok := d.entries[d.order[0]]; ok && e.at >= cutoff {
			return
		}
		d.drop()
	}
	if len(d.order) == 0 {
		// Release the backing array and the map: Go maps never shrink, so
		// an idle partition would otherwise keep its peak size forever.
		d.order, d.entries = nil, nil
	}
}

func (d *dedupTable) reset() { *d = dedupTable{} }

// dedupRecord is the snapshot form of one entry.
type dedupRecord struct {
	Origin uint64 `msgpack:"o"`
	Call   uint64 `msgpack:"k"`
	Seq    uint64 `msgpack:"s"`
	At     int64  `msgpack:"t"`
	Code   uint16 `msgpack:"c"`
	Msg    string `msgpack:"m,omitempty"`
	Found  bool   `msgpack:"f,omitempty"`
	Value  []byte `msgpack:"v,omitempty"`
	Num    int64  `msgpack:"n,omitempty"`
}

func (d *dedupTable) records() []dedupRecord {
	out := make([]dedupRecord, 0, len(d.order))
	for _, k := range d.order {
		e := d.entries[k]
		out = append(out, dedupRecord{Origin: k.origin, Call: k.seq, Seq: e.seq, At: e.at, Code: uint16(e.resp.Code), Msg: e.resp.Msg, Found: e.resp.Found, Value: e.resp.Value, Num: e.resp.Num})
	}
	return out
}

func (d *dedupTable) load(recs []dedupRecord) {
	d.reset()
	for _, r := range recs {
		d.put(r.Origin, r.Call, r.Seq, &op.Response{Code: op.Code(r.Code), Msg: r.Msg, Found: r.Found, Value: r.Value, Num: r.Num}, time.Unix(0, r.At))
	}
}
