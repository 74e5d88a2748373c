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
//
// It keeps two generations of at most dedupGen entries each: new entries go
// to cur; a full cur becomes prev, and the old prev is dropped whole. That
// bounds the table without deleting entries one by one, which in a Go map
// leaves tombstones and makes a table at its bound rehash again and again
// (that churn was 7% of a member's CPU under a put load).
type dedupTable struct {
	cur, prev dedupGeneration
}

type dedupGeneration struct {
	entries map[dedupKey]dedupEntry
	newest  int64 // time of the newest entry, unix nanoseconds
}

type dedupKey struct{ origin, seq uint64 }

type dedupEntry struct {
	resp op.Response // inline: no allocation per mutation
	seq  uint64      // the partition sequence of the mutation
	at   int64
}

// Retention bounds: a retry later than dedupRetention, or after more than
// dedupGen (and up to 2*dedupGen) newer mutations on the partition, may be
// applied again.
const (
	dedupRetention = 2 * time.Minute
	dedupGen       = 2048
)

func (d *dedupTable) get(origin, call uint64) (op.Response, uint64, bool) {
	k := dedupKey{origin, call}
	if e, ok := d.cur.entries[k]; ok {
		return e.resp, e.seq, true
	}
	if e, ok := d.prev.entries[k]; ok {
		return e.resp, e.seq, true
	}
	return op.Response{}, 0, false
}

func (d *dedupTable) put(origin, call, seq uint64, resp *op.Response, now time.Time) {
	k := dedupKey{origin, call}
	at := now.UnixNano()
	r := *resp
	r.TableVersion = 0
	if _, ok := d.prev.entries[k]; ok {
		// Replaying a snapshot or a record twice: keep one entry.
		delete(d.prev.entries, k)
	}
	if d.cur.entries == nil {
		d.cur.entries = make(map[dedupKey]dedupEntry, 64)
	} else if _, ok := d.cur.entries[k]; !ok && len(d.cur.entries) >= dedupGen {
		d.prev = d.cur
		d.cur = dedupGeneration{entries: make(map[dedupKey]dedupEntry, dedupGen)}
	}
	d.cur.entries[k] = dedupEntry{resp: r, seq: seq, at: at}
	d.cur.newest = max(d.cur.newest, at)
}

// expire drops the generations whose newest entry is older than the
// retention, releasing their maps (an idle partition keeps nothing).
func (d *dedupTable) expire(now time.Time) {
	cutoff := now.Add(-dedupRetention).UnixNano()
	if d.prev.entries != nil && d.prev.newest < cutoff {
		d.prev = dedupGeneration{}
	}
	if d.cur.entries != nil && d.cur.newest < cutoff {
		d.cur, d.prev = dedupGeneration{}, dedupGeneration{}
	}
}

func (d *dedupTable) len() int { return len(d.cur.entries) + len(d.prev.entries) }

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

// records lists the entries oldest generation first (load restores them
// in that order, so the receiver keeps the newest ones).
func (d *dedupTable) records() []dedupRecord {
	out := make([]dedupRecord, 0, d.len())
	for _, g := range []*dedupGeneration{&d.prev, &d.cur} {
		for k, e := range g.entries {
			out = append(out, dedupRecord{Origin: k.origin, Call: k.seq, Seq: e.seq, At: e.at, Code: uint16(e.resp.Code), Msg: e.resp.Msg, Found: e.resp.Found, Value: e.resp.Value, Num: e.resp.Num})
		}
	}
	return out
}

func (d *dedupTable) load(recs []dedupRecord) {
	d.reset()
	for _, r := range recs {
		d.put(r.Origin, r.Call, r.Seq, &op.Response{Code: op.Code(r.Code), Msg: r.Msg, Found: r.Found, Value: r.Value, Num: r.Num}, time.Unix(0, r.At))
	}
}
