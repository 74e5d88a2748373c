package grid

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

func sessReq(o uint8, id uint64, num int64) *op.Request {
	return &op.Request{Service: "_session", Op: o, Key: sessionKey(id), Num: num}
}

func execSess(st *sessionState, now time.Time, req *op.Request) (*op.Response, []op.Effect) {
	var x op.Exec
	x.Reset(now, 0, true, req)
	resp := st.Execute(&x, req)
	return resp, append([]op.Effect(nil), x.Effects()...)
}

func TestSessionStateLifecycle(t *testing.T) {
	st := sessionService{}.NewState(0).(*sessionState)
	t0 := time.Unix(1000, 0)
	const id = 0xabc
	resp, eff := execSess(st, t0, sessReq(sessHeartbeat, id, 2000))
	if resp.Err() != nil || len(eff) != 1 || eff[0].Kind != op.EffectTimer || !eff[0].At.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("open: %+v %+v", resp, eff)
	}
	// A heartbeat at +1.5 s extends to +3.5 s; the timer at +2 s re-arms.
	execSess(st, t0.Add(1500*time.Millisecond), sessReq(sessHeartbeat, id, 2000))
	_, eff = execSess(st, t0.Add(2*time.Second), &op.Request{Op: op.OpTimer, Key: "e" + sessionKey(id)})
	if len(eff) != 1 || eff[0].Kind != op.EffectTimer || !eff[0].At.Equal(t0.Add(3500*time.Millisecond)) || st.Live[id] == nil {
		t.Fatalf("early timer: %+v live %v", eff, st.Live[id])
	}
	// Becoming owner gives a grace of one TTL from now.
	var x op.Exec
	x.Reset(t0.Add(3*time.Second), 0, true, nil)
	st.BecameOwner(&x)
	if e := x.Effects(); len(e) != 1 || !e[0].At.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("BecameOwner effects %+v", e)
	}
	// The timer after expiry ends it: tombstone, pending, an event.
	_, eff = execSess(st, t0.Add(4*time.Second), &op.Request{Op: op.OpTimer, Key: "e" + sessionKey(id)})
	if st.Live[id] != nil || len(st.Pending) != 1 || len(eff) != 2 || eff[1].Kind != op.EffectEmit {
		t.Fatalf("expiry: live %v pending %v effects %+v", st.Live[id], st.Pending, eff)
	}
	resp, _ = execSess(st, t0.Add(5*time.Second), sessReq(sessHeartbeat, id, 2000))
	if !errors.Is(resp.Err(), op.ErrSessionExpired) {
		t.Fatalf("heartbeat after the end: %v", resp.Err())
	}
	// Snapshots keep the tombstone and the pending broadcast.
	b, err := st.Snapshot(t0)
	if err != nil {
		t.Fatal(err)
	}
	st2 := sessionService{}.NewState(0).(*sessionState)
	if err := st2.Restore(t0, b); err != nil || len(st2.Pending) != 1 || st2.Len() != 1 {
		t.Fatalf("restore: %v %+v", err, st2)
	}
	execSess(st, t0.Add(6*time.Second), sessReq(sessBroadcastDone, id, 0))
	if len(st.Pending) != 0 {
		t.Fatalf("pending after broadcast done: %v", st.Pending)
	}
	// The tombstone goes after its retention.
	execSess(st, t0.Add(4*time.Second+sessionTombstone), &op.Request{Op: op.OpTimer, Key: "t" + sessionKey(id)})
	if len(st.Ended) != 0 {
		t.Fatalf("tombstone kept: %v", st.Ended)
	}
	// A dead member's session ends even without a record; twice is once.
	execSess(st, t0, sessReq(sessEnd, 0x77, 0))
	execSess(st, t0, sessReq(sessEnd, 0x77, 0))
	if len(st.Pending) != 1 || len(st.Ended) != 1 {
		t.Fatalf("end of an unknown session: pending %v ended %v", st.Pending, st.Ended)
	}
	if resp, _ := execSess(st, t0, &op.Request{Op: sessHeartbeat, Key: "zz"}); !errors.Is(resp.Err(), op.ErrBadRequest) {
		t.Fatalf("bad id: %v", resp.Err())
	}
}

// A member whose session was ended (as if it had been cut off) learns it
// from its next heartbeat, takes a new session, and keeps working.
func TestMemberTakesNewSessionAfterItsSessionEnded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := Start(ctx, Config{Name: "s1", BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0", Gossip: FastGossip(),
		SessionTTL: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	old := m.Session()
	// Wait until the session record exists, then end it.
	for {
		resp, err := m.invoke(ctx, &op.Request{Service: "_session", Op: sessHeartbeat, Partition: sessionPartition(old, m.cfg.PartitionCount), Key: sessionKey(old), Num: 300}, true)
		if err == nil && resp.Err() == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("session never opened")
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
	m.endSession(old)
	deadline := time.Now().Add(10 * time.Second)
	for m.Session() == old {
		if time.Now().After(deadline) {
			t.Fatal("member kept its ended session")
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
	// The new session is alive: its heartbeat succeeds.
	id := m.Session()
	if _, err := m.invoke(ctx, &op.Request{Service: "_session", Op: sessHeartbeat, Partition: sessionPartition(id, m.cfg.PartitionCount), Key: sessionKey(id), Num: 300}, true); err != nil {
		t.Fatalf("heartbeat of the new session: %v", err)
	}
}
