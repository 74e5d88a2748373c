package backup

import (
	"time"

	"github.com/shoalgrid/shoal/op"
)

// Dedup remembers the responses of a partition's recent mutations by
// request identity (origin, call sequence). Each replica of a partition
// keeps one (the member core holds it under the partition lock; it is not
// safe for concurrent use). It is filled on the owner and on every backup (replay recomputes the same
// response), and travels in snapshots, so a retry after a timeout, a
// failover or a migration gets the original answer.
//
// It keeps two generations of at most DedupGen entries each: new entries go
// to cur; a full cur becomes prev, and the old prev is dropped whole. That
// bounds the table without deleting entries one by one, which in a Go map
// leaves tombstones and makes a table at its bound rehash again and again
// (that churn was 7% of a member's CPU under a put load).
type Dedup struct {
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

// Retention bounds: a retry later than DedupRetention, or after more than
// DedupGen (and up to 2*DedupGen) newer mutations on the partition, may be
// applied again.
const (
	DedupRetention = 2 * time.Minute
	DedupGen       = 2048
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

// Get returns the response and partition sequence of the mutation with
// identity (origin, call), if it is remembered.
func (d *Dedup) Get(origin, call uint64) (op.Response, uint64, bool) {
	k := dedupKey{origin, call}
	if r, seq, ok := d.cur.get(k); ok {
		return r, seq, true
	}
	return d.prev.get(k)
}

// Put remembers resp (without its table version) as the answer of
// mutation seq with identity (origin, call), applied at now.
func (d *Dedup) Put(origin, call, seq uint64, resp *op.Response, now time.Time) {
	k := dedupKey{origin, call}
	at := now.UnixNano()
	if _, ok := d.prev.entries[k]; ok {
		// Replaying a snapshot or a record twice: keep one entry.
		delete(d.prev.entries, k)
	}
	if d.cur.entries == nil {
		d.cur.entries = make(map[dedupKey]dedupEntry, 64)
	} else if _, ok := d.cur.entries[k]; !ok && len(d.cur.entries) >= DedupGen {
		d.prev = d.cur
		d.cur = dedupGeneration{entries: make(map[dedupKey]dedupEntry, DedupGen)}
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

// Expire drops the generations whose newest entry is older than the
// retention, releasing their maps (an idle partition keeps nothing).
func (d *Dedup) Expire(now time.Time) {
	cutoff := now.Add(-DedupRetention).UnixNano()
	if d.prev.entries != nil && d.prev.newest < cutoff {
		d.prev = dedupGeneration{}
	}
	if d.cur.entries != nil && d.cur.newest < cutoff {
		d.cur, d.prev = dedupGeneration{}, dedupGeneration{}
	}
}

// Len is the number of remembered mutations.
func (d *Dedup) Len() int { return len(d.cur.entries) + len(d.prev.entries) }

// Reset forgets everything.
func (d *Dedup) Reset() { *d = Dedup{} }

// DedupRecord is the snapshot form of one entry.
type DedupRecord struct {
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

// Records lists the entries oldest generation first (Load restores them
// in that order, so the receiver keeps the newest ones).
func (d *Dedup) Records() []DedupRecord {
	out := make([]DedupRecord, 0, d.Len())
	for _, g := range []*dedupGeneration{&d.prev, &d.cur} {
		for k := range g.entries {
			// Entries carry no time of their own: the generation's newest
			// keeps them at least as long on the receiver.
			r, seq, _ := g.get(k)
			out = append(out, DedupRecord{Origin: k.origin, Call: k.seq, Seq: seq, At: g.newest, Code: uint16(r.Code), Msg: r.Msg, Found: r.Found, Value: r.Value, Num: r.Num})
		}
	}
	return out
}

// Load replaces the table with recs (a snapshot's).
func (d *Dedup) Load(recs []DedupRecord) {
	d.Reset()
	for _, r := range recs {
		d.Put(r.Origin, r.Call, r.Seq, &op.Response{Code: op.Code(r.Code), Msg: r.Msg, Found: r.Found, Value: r.Value, Num: r.Num}, time.Unix(0, r.At))
	}
}
