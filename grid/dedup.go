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

// dedupGeneration holds its entries in a map without pointers (the garbage
// collector does not scan it): the common answers, a plain OK found or
// not, are coded in the entry; others are kept in resps.
type dedupGeneration struct {
	entries map[dedupKey]dedupEntry
	resps   []op.Response
	newest  int64 // time of the newest entry, unix nanoseconds
}

type dedupKey struct{ origin, seq uint64 }

type dedupEntry struct {
	seq  uint64 // the partition sequence of the mutation
	resp int32  // respOK, respOKFound, or an index into resps
}

const (
	respOK      = -1 // op.Response{}
	respOKFound = -2 // op.Response{Found: true}
)

// Retention bounds: a retry later than dedupRetention, or after more than
// dedupGen (and up to 2*dedupGen) newer mutations on the partition, may be
// applied again.
const (
	dedupRetention = 2 * time.Minute
	dedupGen       = 2048
)

func (g *dedupGeneration) get(k dedupKey) (op.Response, uint64, bool) {
	e, ok := g.entries[k]
	if !ok {
		return op.Response{}, 0, false
	}
	switch e.resp {
	case respOK:
		return op.Response{}, e.seq, true
	case respOKFound:
		return op.Response{Found: true}, e.seq, true
	}
	return g.resps[e.resp], e.seq, true
}

func (d *dedupTable) get(origin, call uint64) (op.Response, uint64, bool) {
	k := dedupKey{origin, call}
	if r, seq, ok := d.cur.get(k); ok {
		return r, seq, true
	}
	return d.prev.get(k)
}

func (d *dedupTable) put(origin, call, seq uint64, resp *op.Response, now time.Time) {
	k := dedupKey{origin, call}
	at := now.UnixNano()
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
	e := dedupEntry{seq: seq, resp: respOK}
	switch {
	case resp.Code == op.OK && resp.Msg == "" && resp.Value == nil && resp.Num == 0:
		if resp.Found {
			e.resp = respOKFound
		}
	default:
		r := *resp
		r.TableVersion = 0
		e.resp = int32(len(d.cur.resps))
		d.cur.resps = append(d.cur.resps, r)
	}
	d.cur.entries[k] = e
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
		for k := range g.entries {
			// Entries carry no time of their own: the generation's newest
			// keeps them at least as long on the receiver.
			r, seq, _ := g.get(k)
			out = append(out, dedupRecord{Origin: k.origin, Call: k.seq, Seq: seq, At: g.newest, Code: uint16(r.Code), Msg: r.Msg, Found: r.Found, Value: r.Value, Num: r.Num})
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
