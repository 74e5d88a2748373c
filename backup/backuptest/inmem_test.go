package backuptest_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/backup/backuptest"
	"github.com/shoalgrid/shoal/op"
)

// These tests run replication's rules end to end through the in-memory
// transport: an owner (backup.Progress, driven the way grid drives it) and
// a backup replica (OnRecord, OnProbe, Fence and the snapshot codec), with
// the test deciding what arrives, what is lost and when the link breaks.

const part = 3

// wait is one mutation waiting for the backup (grid's ackWait).
type wait struct {
	seq   uint64
	acked bool
	err   error
}

func release(w *wait) { w.acked = true }

// owner is a partition owner with one backup, reduced to its replication
// logic (grid's replicate, resync and their acknowledgement handlers).
type owner struct {
	version uint64 // the table version it became owner at: also its term
	seq     uint64
	data    map[string]string
	prog    backup.Progress[*wait]
	link    backup.Transport // the round records follow
	dial    func() backup.Transport
	deposed bool
	copies  int
}

func newOwner(version uint64, dial func() backup.Transport) *owner {
	return &owner{version: version, data: map[string]string{}, dial: dial}
}

func (o *owner) put(k, v string) *wait {
	o.seq++
	o.data[k] = v
	seq := o.seq
	w := &wait{seq: seq}
	if !o.prog.Streaming() || o.link == nil {
		o.prog.Wait(seq, w) // a resync will carry it
		return w
	}
	link := o.link
	r := backup.Record{Partition: part, Seq: seq, Term: o.version, TableVersion: o.version, Time: time.Unix(0, int64(seq)),
		Req: &op.Request{Service: "kv", Op: 1, Partition: part, Key: k, Value: []byte(v)}}
	err := link.Record(context.Background(), &r, func(resp *op.Response, err error) { o.onRecordAck(link, seq, w, resp, err) })
	if err != nil {
		o.prog.Broken()
		o.prog.Wait(seq, w)
	}
	return w
}

func (o *owner) onRecordAck(link backup.Transport, seq uint64, w *wait, resp *op.Response, err error) {
	switch {
	case err == nil && resp.Code == op.OK:
		o.prog.Advance(seq, release)
		w.acked = true
	case err == nil && resp.Code == op.CodeWrongOwner:
		w.err = resp.Err()
		o.deposed = true
	default:
		if o.link == link {
			o.prog.Broken()
		}
		o.prog.Wait(seq, w)
	}
}

// resync sends what Progress asks for: a probe, or a copy in chunks.
func (o *owner) resync() backup.Step {
	step := o.prog.Next()
	seq := o.seq
	ctx := context.Background()
	switch step {
	case backup.NoStep:
		return step
	case backup.SendProbe:
		link := o.dial()
		if err := link.Probe(ctx, backup.Probe{Partition: part, TableVersion: o.version, Seq: seq, Term: o.version}, func(resp *op.Response, err error) {
			o.onAnswer(link, seq, true, resp, err)
		}); err != nil {
			return step
		}
		o.prog.Started()
		o.link = link
		return step
	}
	blob, err := msgpack.Marshal(o.data)
	if err != nil {
		panic(err)
	}
	snap, err := backup.EncodeSnapshot([]string{"kv"}, [][]byte{blob}, nil)
	if err != nil {
		panic(err)
	}
	link := o.dial()
	const chunk = 4 // several chunks even for a small copy
	for off := 0; off < len(snap); off += chunk {
		end := min(off+chunk, len(snap))
		final := end == len(snap)
		c := backup.Chunk{Partition: part, TableVersion: o.version, ID: fmt.Sprintf("copy/%d", o.copies), Offset: int64(off), Data: snap[off:end], Final: final, Seq: seq, Term: o.version}
		if err := link.Chunk(ctx, c, func(resp *op.Response, err error) { o.onAnswer(link, seq, final, resp, err) }); err != nil {
			return step
		}
	}
	o.copies++
	o.prog.Started()
	o.link = link
	return step
}

// onAnswer completes a probe or a copy's last chunk (grid's onProbeAck,
// onSyncAck).
func (o *owner) onAnswer(link backup.Transport, seq uint64, final bool, resp *op.Response, err error) {
	if err == nil {
		err = resp.Err()
	}
	if o.link != link || !o.prog.Streaming() {
		return
	}
	if err != nil {
		o.prog.Broken()
		return
	}
	if final {
		o.prog.Caught(seq, release)
	}
}

// replica is a backup's copy of the partition, judged by backup's rules.
type replica struct {
	r       backup.Replica
	cur     uint64 // the table version it follows
	data    map[string]string
	applied int
	asm     map[string]*backup.Assembly
}

func newReplica(cur uint64) *replica {
	return &replica{r: backup.Replica{Role: 1, OwnerSince: cur}, cur: cur, data: map[string]string{}, asm: map[string]*backup.Assembly{}}
}

func refuse(v backup.Verdict) *op.Response {
	if v == backup.Deposed {
		return &op.Response{Code: op.CodeWrongOwner, Msg: "deposed owner"}
	}
	return &op.Response{Code: op.CodeBackupGap, Msg: v.String()}
}

func (b *replica) HandleRecord(r *backup.Record) *op.Response {
	switch v := backup.OnRecord(b.r, b.cur, r.TableVersion, r.Seq); v {
	case backup.Accept:
		b.data[r.Req.Key] = string(r.Req.Value)
		b.r.Seq, b.r.Term = r.Seq, r.Term
		b.applied++
		return &op.Response{}
	case backup.Duplicate:
		return &op.Response{}
	default:
		return refuse(v)
	}
}

func (b *replica) HandleProbe(p backup.Probe) *op.Response {
	if v := backup.OnProbe(b.r, b.cur, p.TableVersion, p.Seq, p.Term); v != backup.Accept {
		return refuse(v)
	}
	return &op.Response{}
}

func (b *replica) HandleChunk(c backup.Chunk) *op.Response {
	a := b.asm[c.ID]
	if c.Offset == 0 {
		a = backup.NewAssembly(time.Unix(0, 0))
		b.asm[c.ID] = a
	}
	if a == nil || !a.Add(c.Offset, c.Data) {
		delete(b.asm, c.ID)
		return &op.Response{Code: op.CodeBackupGap, Msg: "chunk out of order"}
	}
	if !c.Final {
		return &op.Response{}
	}
	delete(b.asm, c.ID)
	if v := backup.Fence(b.r, b.cur, c.TableVersion); v != backup.Accept {
		return refuse(v)
	}
	snap, err := backup.DecodeSnapshot(a.Bytes())
	if err != nil {
		return &op.Response{Code: op.CodeBadRequest, Msg: err.Error()}
	}
	data := map[string]string{}
	if err := msgpack.Unmarshal(snap.Services["kv"], &data); err != nil {
		return &op.Response{Code: op.CodeBadRequest, Msg: err.Error()}
	}
	b.data, b.r.Seq, b.r.Term = data, c.Seq, c.Term
	return &op.Response{}
}

// pair is an owner at table version 5 with a new backup reached through
// in-memory links (one per probe-or-copy round, like a new connection).
type pair struct {
	o     *owner
	b     *replica
	links []*backuptest.Inmem
}

func newPair() *pair {
	p := &pair{b: newReplica(5)}
	p.o = newOwner(5, func() backup.Transport {
		l := backuptest.NewInmem(p.b)
		p.links = append(p.links, l)
		return l
	})
	return p
}

func (p *pair) link() *backuptest.Inmem { return p.links[len(p.links)-1] }

func (p *pair) inSync(t *testing.T) {
	t.Helper()
	if !maps.Equal(p.o.data, p.b.data) {
		t.Fatalf("backup holds %v, owner %v", p.b.data, p.o.data)
	}
	if !p.o.prog.Holds(p.o.seq) || p.b.r.Seq != p.o.seq {
		t.Fatalf("owner at %d, backup at %d, progress holds it: %v", p.o.seq, p.b.r.Seq, p.o.prog.Holds(p.o.seq))
	}
}

func acked(t *testing.T, ws ...*wait) {
	t.Helper()
	for _, w := range ws {
		if !w.acked || w.err != nil {
			t.Fatalf("mutation %d: acked %v, err %v", w.seq, w.acked, w.err)
		}
	}
}

// A new backup holds nothing: the probe finds a different history, the copy
// brings it up to date and releases the waiting mutations, and records
// stream after it.
func TestInmemGapProbeCopy(t *testing.T) {
	p := newPair()
	w1, w2 := p.o.put("a", "1"), p.o.put("b", "2")
	if s := p.o.resync(); s != backup.SendProbe {
		t.Fatalf("first step %v, want probe", s)
	}
	if k, _ := p.link().Next(); k != backuptest.Probe {
		t.Fatalf("queued %v, want a probe", k)
	}
	p.link().DeliverAll()
	if p.o.prog.Streaming() || w1.acked {
		t.Fatal("a refused probe left the stream up or acknowledged a mutation")
	}
	if s := p.o.resync(); s != backup.SendCopy {
		t.Fatalf("second step %v, want copy", s)
	}
	if n := p.link().Pending(); n < 2 {
		t.Fatalf("copy sent in %d chunks, want several", n)
	}
	w3 := p.o.put("c", "3") // follows the copy on the same link
	if got := p.link().DeliverAll(); got < 3 {
		t.Fatalf("delivered %d messages", got)
	}
	acked(t, w1, w2, w3)
	p.inSync(t)
	if p.b.applied != 1 {
		t.Fatalf("backup applied %d records, want 1 (the rest came in the copy)", p.b.applied)
	}
}

// A backup that already holds the owner's history (the same sequence and
// term) answers the probe: no copy.
func TestInmemProbeInSync(t *testing.T) {
	p := newPair()
	p.b.r.Seq, p.b.r.Term = 0, 5
	p.o.resync()
	p.link().DeliverAll()
	if !p.o.prog.Synced() {
		t.Fatal("probe of a backup in sync did not sync it")
	}
	w := p.o.put("a", "1")
	p.link().DeliverAll()
	acked(t, w)
	p.inSync(t)
	if p.o.copies != 0 {
		t.Fatal("copied a backup that was in sync")
	}
}

// streaming brings p to a synced stream.
func streaming(t *testing.T, p *pair) {
	t.Helper()
	p.o.resync()
	p.link().DeliverAll()
	if !p.o.prog.Synced() {
		t.Fatal("not synced")
	}
}

// A record lost on the way: the next one is a gap, the stream breaks, the
// later mutations wait, and the copy that follows covers them and the lost
// one. The lost record's own mutation gets no answer (grid's wait fails it
// at the backup timeout: outcome unknown), but its write reaches the
// backup with the copy.
func TestInmemLostRecord(t *testing.T) {
	p := newPair()
	p.b.r.Term = 5
	streaming(t, p)
	w1 := p.o.put("a", "1")
	w2 := p.o.put("b", "2")
	if !p.link().Drop() { // the record of a=1
		t.Fatal("nothing queued")
	}
	p.link().Deliver() // b=2: a gap
	if p.o.prog.Streaming() || w2.acked || w1.acked {
		t.Fatal("a gap did not break the stream, or a mutation was acknowledged")
	}
	if _, ok := p.b.data["b"]; ok {
		t.Fatal("the backup applied a record after a gap")
	}
	w3 := p.o.put("c", "3") // not streamed: waits for the copy
	if p.o.prog.Waiting() != 2 {
		t.Fatalf("%d mutations wait, want 2", p.o.prog.Waiting())
	}
	if s := p.o.resync(); s != backup.SendCopy {
		t.Fatalf("step %v, want copy (the probe was used)", s)
	}
	p.link().DeliverAll()
	acked(t, w2, w3)
	if w1.acked {
		t.Fatal("a lost record's mutation was acknowledged")
	}
	p.inSync(t)
}

// A record applied whose answer was lost, arriving again on a new link
// after the copy, is a duplicate: acknowledged, not applied twice.
func TestInmemDuplicate(t *testing.T) {
	p := newPair()
	p.b.r.Term = 5
	streaming(t, p)
	old := p.link()
	w1 := p.o.put("a", "1")
	w2 := p.o.put("b", "2")
	if resp, _ := old.DeliverLosingReply(); resp.Code != op.OK {
		t.Fatalf("record refused: %v", resp.Err())
	}
	old.Disconnect() // b=2 fails: the stream breaks
	if p.o.prog.Streaming() || w2.acked {
		t.Fatal("a disconnect did not break the stream")
	}
	if err := old.Probe(context.Background(), backup.Probe{}, func(*op.Response, error) {}); !errors.Is(err, backup.ErrDisconnected) {
		t.Fatalf("send on a closed link: %v", err)
	}
	p.o.resync() // a copy (the probe was used)
	p.link().DeliverAll()
	acked(t, w2)
	p.inSync(t)
	applied := p.b.applied
	// The first record again, as a retransmission on the new link would
	// carry it: the backup holds it.
	r := backup.Record{Partition: part, Seq: 1, Term: 5, TableVersion: 5, Req: &op.Request{Key: "a", Value: []byte("stale")}}
	var got *op.Response
	p.link().Record(context.Background(), &r, func(resp *op.Response, err error) { got = resp })
	p.link().Deliver()
	if got == nil || got.Code != op.OK || p.b.applied != applied || p.b.data["a"] != "1" {
		t.Fatalf("duplicate answered %v; applied %d -> %d; a=%q", got, applied, p.b.applied, p.b.data["a"])
	}
	if w1.acked {
		t.Fatal("a mutation whose answer was lost was acknowledged by its record")
	}
}

// An owner deposed by a newer table: the backup refuses its record as
// deposed, the owner learns it and the mutation is never acknowledged.
func TestInmemDeposedOwner(t *testing.T) {
	p := newPair()
	p.b.r.Term = 5
	streaming(t, p)
	p.b.r.OwnerSince, p.b.cur = 7, 7 // another member became owner at 7
	w := p.o.put("a", "1")
	p.link().DeliverAll()
	if !p.o.deposed || w.acked || !errors.Is(w.err, op.ErrWrongOwner) {
		t.Fatalf("deposed %v, acked %v, err %v", p.o.deposed, w.acked, w.err)
	}
	if _, ok := p.b.data["a"]; ok {
		t.Fatal("the backup applied a deposed owner's record")
	}
	// Its copy is refused as well.
	p.o.prog.Broken()
	p.o.resync()
	p.link().DeliverAll()
	if p.o.prog.Synced() || len(p.b.data) != 0 {
		t.Fatal("a deposed owner's copy was installed")
	}
}

// A late answer from an older link does not settle the current round.
func TestInmemStaleRound(t *testing.T) {
	p := newPair()
	p.o.resync() // probe on link 0, not delivered yet
	first := p.link()
	p.o.prog.Broken() // e.g. a record send failed meanwhile
	p.o.resync()      // copy on link 1
	first.DeliverAll()
	if p.o.prog.Synced() {
		t.Fatal("an older round's answer synced the backup")
	}
	p.link().DeliverAll()
	p.inSync(t)
}
