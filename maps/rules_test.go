package maps

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

func ruleState(rules ...Rule) *state {
	return Service{Rules: rules, PartitionCount: 1}.NewState(0).(*state)
}

func TestRuleDefaultTTL(t *testing.T) {
	s := ruleState(Rule{Pattern: "cache-*", DefaultTTL: time.Second})
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	apply := func(now time.Time, code uint8, name, key string, ttl int64) *op.Response {
		return s.Apply(now, &op.Request{Op: code, Name: name, Key: key, Value: []byte("1"), Num: ttl})
	}
	apply(at(0), OpPut, "cache-a", "k", 0)         // default TTL: 1 s
	apply(at(0), OpPut, "cache-a", "long", 60_000) // explicit TTL wins
	apply(at(0), OpPut, "other", "k", 0)           // no rule: never expires
	apply(at(0), OpIncr, "cache-a", "n", 0)        // a new counter gets the default TTL
	s.Apply(at(0), &op.Request{Op: OpPutAll, Name: "cache-a", Value: encodeEntries([]kv{{key: "b", value: []byte("x")}})})
	for _, k := range []string{"k", "long", "n", "b"} {
		if r := apply(at(999*time.Millisecond), OpGet, "cache-a", k, 0); !r.Found {
			t.Fatalf("%s gone before the default TTL", k)
		}
	}
	for k, want := range map[string]bool{"k": false, "n": false, "b": false, "long": true} {
		if r := apply(at(time.Second), OpGet, "cache-a", k, 0); r.Found != want {
			t.Fatalf("%s after the default TTL: found %v, want %v", k, r.Found, want)
		}
	}
	if r := apply(at(time.Hour), OpGet, "other", "k", 0); !r.Found {
		t.Fatal("a map without a rule got a TTL")
	}
	// The rule survives a restore (migration).
	snap, _ := s.Snapshot(at(time.Second))
	if err := s.Restore(at(time.Second), snap); err != nil {
		t.Fatal(err)
	}
	apply(at(time.Second), OpPut, "cache-b", "k", 0)
	if r := apply(at(3*time.Second), OpGet, "cache-b", "k", 0); r.Found {
		t.Fatal("the default TTL was lost by a restore")
	}
}

func TestRuleMaxEntries(t *testing.T) {
	s := ruleState(Rule{Pattern: "small", MaxEntries: 3})
	put := func(code uint8, key string) *op.Response {
		return s.Apply(t0, &op.Request{Op: code, Name: "small", Key: key, Value: []byte("1")})
	}
	full := func(r *op.Response) bool { return errors.Is(r.Err(), op.ErrMapFull) }
	for i := range 3 {
		if r := put(OpPut, fmt.Sprint(i)); r.Code != op.OK {
			t.Fatalf("put %d: %+v", i, *r)
		}
	}
	for _, code := range []uint8{OpPut, OpPutIfAbsent, OpIncr} {
		if r := put(code, "new"); !full(r) {
			t.Fatalf("op %d of a new key into a full map: %+v, want ErrMapFull", code, *r)
		}
	}
	// Updates, reads and other maps are not refused.
	for _, code := range []uint8{OpPut, OpReplace, OpIncr, OpGet} {
		if r := put(code, "0"); r.Code != op.OK {
			t.Fatalf("op %d on a present key of a full map: %+v", code, *r)
		}
	}
	if r := s.Apply(t0, &op.Request{Op: OpPut, Name: "big", Key: "new"}); r.Code != op.OK {
		t.Fatalf("a map without a bound: %+v", *r)
	}
	// A put-all is refused whole if its new keys do not fit.
	two := encodeEntries([]kv{{key: "1", value: []byte("u")}, {key: "new", value: []byte("v")}})
	if r := s.Apply(t0, &op.Request{Op: OpPutAll, Name: "small", Value: two}); !full(r) {
		t.Fatalf("put-all with a new key into a full map: %+v", *r)
	}
	if r := put(OpGet, "1"); string(r.Value) != "1" {
		t.Fatalf("a refused put-all changed %q", r.Value)
	}
	if r := put(OpDelete, "2"); !r.Found {
		t.Fatal("delete in a full map")
	}
	if r := s.Apply(t0, &op.Request{Op: OpPutAll, Name: "small", Value: two}); r.Code != op.OK || r.Num != 2 {
		t.Fatalf("put-all once there is room: %+v", *r)
	}
	if r := s.Apply(t0, &op.Request{Op: OpSize, Name: "small"}); r.Num != 3 {
		t.Fatalf("size %d, want 3", r.Num)
	}
}

// TestRuleMaxEntriesDeterministic replays one history on an "owner" and a
// "backup" whose sweeper reclaimed expired entries at other times: a bound
// must give both the same answers (it counts live entries, not stored ones).
func TestRuleMaxEntriesDeterministic(t *testing.T) {
	owner := ruleState(Rule{Pattern: "*", MaxEntries: 2})
	backup := ruleState(Rule{Pattern: "*", MaxEntries: 2})
	ms := time.Millisecond
	steps := []struct {
		at  time.Duration
		key string
		ttl int64
	}{
		{0, "a", 10}, {0, "b", 0}, {5 * ms, "c", 0}, {20 * ms, "c", 0}, {20 * ms, "d", 0}, {21 * ms, "a", 5}, {21 * ms, "c", 5}, {30 * ms, "a", 0},
	}
	for i, st := range steps {
		now := t0.Add(st.at)
		backup.Sweep(now, 1000) // the backup's sweeper is always on time; the owner's never runs
		req := op.Request{Op: OpPut, Name: "m", Key: st.key, Value: []byte("v"), Num: st.ttl}
		ro, rb := owner.Apply(now, &req), backup.Apply(now, &req)
		if ro.Code != rb.Code || ro.Found != rb.Found {
			t.Fatalf("step %d (%s at %v): owner %+v, backup %+v", i, st.key, st.at, *ro, *rb)
		}
		if wantFull := i == 2 || i == 4 || i == 5; (ro.Code == op.CodeMapFull) != wantFull {
			t.Fatalf("step %d (%s at %v): %+v, want full %v", i, st.key, st.at, *ro, wantFull)
		}
	}
	so, _ := owner.Snapshot(t0.Add(time.Second))
	sb, _ := backup.Snapshot(t0.Add(time.Second))
	if string(so) != string(sb) {
		t.Fatal("owner and backup diverged")
	}
}

func TestValidateRules(t *testing.T) {
	for _, bad := range []Rule{{Pattern: ""}, {Pattern: "["}, {Pattern: "a", MaxEntries: -1}, {Pattern: "a", DefaultTTL: -time.Second}} {
		if ValidateRules([]Rule{bad}) == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if err := ValidateRules([]Rule{{Pattern: "cache-*", DefaultTTL: time.Minute, MaxEntries: 10}}); err != nil {
		t.Fatal(err)
	}
}
