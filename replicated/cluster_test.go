package replicated_test

// Replicated maps on in-process clusters (grid/gridtest): convergence after
// concurrent writes on different members, a crash, a rejoin under the same
// name, a joiner, change events on every member, and clients (read and
// write through a member; near copy).

import (
	"context"
	"errors"
	"fmt"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/replicated"
)

const converge = 30 * time.Second

func cluster(t *testing.T, n int, opts ...gridtest.Option) *gridtest.Cluster {
	t.Helper()
	return gridtest.New(t, n, append([]gridtest.Option{gridtest.WithServices(replicated.Service{})}, opts...)...)
}

// contents renders a member's copy of map name.
func contents(ctx context.Context, m *grid.Member, name string) (string, error) {
	es, err := replicated.New(m, name).Entries(ctx)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%s=%s@%d/%s ", e.Key, e.Value, e.Version.Time, e.Version.Origin)
	}
	return b.String(), nil
}

// converged reports whether every member holds the same copy of map name
// (and, if want is not nil, that it holds exactly want's values).
func converged(ctx context.Context, members []*grid.Member, name string, want map[string]string) (bool, string) {
	var first string
	for i, m := range members {
		got, err := contents(ctx, m, name)
		if err != nil {
			return false, err.Error()
		}
		if i == 0 {
			first = got
		} else if got != first {
			return false, fmt.Sprintf("%s holds %.200s; %s holds %.200s", members[0].Name(), first, m.Name(), got)
		}
	}
	if want != nil {
		es, err := replicated.New(members[0], name).Entries(ctx)
		if err != nil {
			return false, err.Error()
		}
		if len(es) != len(want) {
			return false, fmt.Sprintf("%d entries, want %d", len(es), len(want))
		}
		for _, e := range es {
			if want[e.Key] != string(e.Value) {
				return false, fmt.Sprintf("%s = %q, want %q", e.Key, e.Value, want[e.Key])
			}
		}
	}
	return true, ""
}

// watcher records, per member, the last event seen per key.
type watcher struct {
	mu   sync.Mutex
	last map[string]map[string]replicated.Event // member → key → event
}

func watchAll(t *testing.T, ctx context.Context, members []*grid.Member, name string) *watcher {
	t.Helper()
	w := &watcher{last: map[string]map[string]replicated.Event{}}
	for _, m := range members {
		w.last[m.Name()] = map[string]replicated.Event{}
		stop, err := replicated.New(m, name).Watch(ctx, m, func(ev replicated.Event) {
			w.mu.Lock()
			w.last[m.Name()][ev.Key] = ev
			w.mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
	}
	return w
}

// agrees reports whether every watched member's last event per key
// matches want (a value, or "" for removed).
func (w *watcher) agrees(want map[string]string) (bool, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for member, last := range w.last {
		for k, v := range want {
			ev, ok := last[k]
			if !ok {
				return false, fmt.Sprintf("%s: no event for %s", member, k)
			}
			if ev.Type == replicated.Removed {
				if v != "" {
					return false, fmt.Sprintf("%s: last event for %s is a removal, want %q", member, k, v)
				}
			} else if string(ev.Value) != v {
				return false, fmt.Sprintf("%s: last event for %s has %q, want %q", member, k, ev.Value, v)
			}
		}
	}
	return true, ""
}

// TestConcurrentWritesConverge: three members write the same keys at
// once; every member ends with the same entries, and every member's last
// event per key names the winning value.
func TestConcurrentWritesConverge(t *testing.T) {
	cl := cluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	members := cl.Live()
	w := watchAll(t, ctx, members, "cfg")
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rm := replicated.New(m, "cfg")
			for j := range 200 {
				key := fmt.Sprintf("k%d", j%20)
				if j%7 == 3 {
					if _, err := rm.Delete(ctx, key); err != nil {
						t.Error(err)
					}
					continue
				}
				if err := rm.Put(ctx, key, []byte(fmt.Sprintf("m%d-%d", i, j))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	gridtest.Eventually(t, converge, func() (bool, string) { return converged(ctx, members, "cfg", nil) })
	want := map[string]string{}
	for k := range 20 {
		want[fmt.Sprint("k", k)] = ""
	}
	es, err := replicated.New(members[0], "cfg").Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		want[e.Key] = string(e.Value)
	}
	gridtest.Eventually(t, converge, func() (bool, string) { return w.agrees(want) })
}

// TestCrashAndRejoin: a member crashes (no goodbye) while the others keep
// writing; they converge; the member restarts under its name, empty, and
// gets the full state; a member that joins later gets it too.
func TestCrashAndRejoin(t *testing.T) {
	// Member 3 (the restart) takes member 1's name.
	cl := cluster(t, 3, gridtest.WithMemberConfig(func(i int, c *grid.Config) {
		if i == 3 {
			c.Name = "m1"
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	want := map[string]string{}
	put := func(m *grid.Member, k, v string) {
		t.Helper()
		if err := replicated.New(m, "routes").Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	for i := range 30 {
		put(cl.Member(i%3), fmt.Sprint("r", i), fmt.Sprint("v", i))
	}
	gridtest.Eventually(t, converge, func() (bool, string) { return converged(ctx, cl.Live(), "routes", want) })

	cl.Crash(1)
	for i := range 30 {
		put(cl.Member([]int{0, 2}[i%2]), fmt.Sprint("r", i), fmt.Sprint("after-crash-", i))
	}
	if _, err := replicated.New(cl.Member(0), "routes").Delete(ctx, "r0"); err != nil {
		t.Fatal(err)
	}
	delete(want, "r0")
	gridtest.Eventually(t, converge, func() (bool, string) { return converged(ctx, cl.Live(), "routes", want) })

	// The name is free once the others declared the crashed member dead.
	cl.WaitStable()
	back := cl.Add()
	if cl.Member(back).Name() != "m1" {
		t.Fatalf("restarted member is %s", cl.Member(back).Name())
	}
	gridtest.Eventually(t, converge, func() (bool, string) { return converged(ctx, cl.Live(), "routes", want) })
	put(cl.Member(back), "from-restarted", "x")
	gridtest.Eventually(t, converge, func() (bool, string) { return converged(ctx, cl.Live(), "routes", want) })

	joiner := cl.Add()
	gridtest.Eventually(t, converge, func() (bool, string) { return converged(ctx, cl.Live(), "routes", want) })
	if n, err := replicated.New(cl.Member(joiner), "routes").Len(ctx); err != nil || n != len(want) {
		t.Fatalf("joiner holds %d entries (%v), want %d", n, err, len(want))
	}
}

// TestClientReadsThroughMember: a client writes and reads through the
// members its table routes keys to; a near copy answers from memory and
// follows changes made on any member.
func TestClientReadsThroughMember(t *testing.T) {
	cl := cluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	c, err := client.Dial(ctx, client.Config{Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rm := replicated.New(c, "settings")
	for i := range 20 {
		if err := rm.Put(ctx, fmt.Sprint("s", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{}
	for i := range 20 {
		want[fmt.Sprint("s", i)] = fmt.Sprint(i)
	}
	gridtest.Eventually(t, converge, func() (bool, string) { return converged(ctx, cl.Live(), "settings", want) })
	if v, ok, err := rm.Get(ctx, "s3"); err != nil || !ok || string(v) != "3" {
		t.Fatalf("client get = %q %v %v", v, ok, err)
	}
	if n, err := rm.Len(ctx); err != nil || n != 20 {
		t.Fatalf("client len = %d %v", n, err)
	}

	near, err := replicated.NewNear(ctx, c, c, "settings", replicated.NearOptions{MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer near.Close()
	if v, ok, err := near.Get(ctx, "s5"); err != nil || !ok || string(v) != "5" {
		t.Fatalf("near get = %q %v %v", v, ok, err)
	}
	// Change s5 on every member in turn: the near copy follows (events),
	// though it never re-reads (MaxAge is an hour).
	for i, m := range cl.Live() {
		val := fmt.Sprint("changed-on-", m.Name())
		if err := replicated.New(m, "settings").Put(ctx, "s5", []byte(val)); err != nil {
			t.Fatal(err)
		}
		gridtest.Eventually(t, converge, func() (bool, string) {
			v, _, err := near.Get(ctx, "s5")
			return err == nil && string(v) == val, fmt.Sprintf("near copy has %q (%v), want %q (change %d)", v, err, val, i)
		})
	}
	if _, err := replicated.New(cl.Member(1), "settings").Delete(ctx, "s5"); err != nil {
		t.Fatal(err)
	}
	gridtest.Eventually(t, converge, func() (bool, string) {
		_, ok, err := near.Get(ctx, "s5")
		return err == nil && !ok, "near copy still holds s5"
	})
	if near.Len() != 1 {
		t.Fatalf("near copy holds %d keys, want only the one read", near.Len())
	}
}

// TestJoinerGetsManyMaps: a joiner pulls 40 maps, in several answers (a
// small value limit makes the pull limit small).
func TestJoinerGetsManyMaps(t *testing.T) {
	cl := cluster(t, 2, gridtest.WithConfig(func(c *grid.Config) { c.Limits.MaxValueSize = 64 << 10 }))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	val := strings.Repeat("x", 1000)
	var names []string
	for i := range 40 {
		name := fmt.Sprint("map", i)
		names = append(names, name)
		for j := range 10 {
			if err := replicated.New(cl.Member(0), name).Put(ctx, fmt.Sprint("k", j), []byte(val)); err != nil {
				t.Fatal(err)
			}
		}
	}
	j := cl.Add()
	gridtest.Eventually(t, converge, func() (bool, string) {
		for _, n := range names {
			if ok, why := converged(ctx, cl.Live(), n, nil); !ok {
				return false, n + ": " + why
			}
		}
		return true, ""
	})
	got := 0
	for _, s := range cl.Member(j).Structures() {
		if s.Service == replicated.Name {
			got += s.Entries
		}
	}
	if got != 400 {
		t.Fatalf("joiner's structures count %d entries, want 400", got)
	}
	if st := cl.Member(j).Stats(); st.ReplicatedPulled < 400*1000 {
		t.Fatalf("joiner pulled %d bytes by anti-entropy, want at least the 400 KB of values", st.ReplicatedPulled)
	}
}

// TestClusterKey: with a cluster key, replicated-map traffic rides the
// authenticated member connections like everything else, and converges.
// (A client connection sending the member operations is refused: see
// grid's TestFakeMemberRefused.)
func TestClusterKey(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	cl := cluster(t, 2, gridtest.WithConfig(func(c *grid.Config) { c.ClusterKeys = [][]byte{key} }))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := replicated.New(cl.Member(0), "secure").Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	cl.Add()
	gridtest.Eventually(t, converge, func() (bool, string) {
		return converged(ctx, cl.Live(), "secure", map[string]string{"k": "v"})
	})
}

// TestTokenRoles: a client token's roles apply to replicated maps as to
// other structures: reading needs read, writing needs write.
func TestTokenRoles(t *testing.T) {
	const reader, writer = "reader-token-0123456789", "writer-token-0123456789"
	cl := cluster(t, 2, gridtest.WithConfig(func(c *grid.Config) {
		c.ClusterKeys = [][]byte{[]byte(strings.Repeat("k", 32))}
		c.Tokens = []grid.Token{
			{Name: "reader", Secret: reader, Grants: []grid.Grant{{Pattern: "*", Role: grid.RoleRead}}},
			{Name: "writer", Secret: writer, Grants: []grid.Grant{{Pattern: "*", Role: grid.RoleWrite}}},
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(tok string) *client.Client {
		c, err := client.Dial(ctx, client.Config{Addrs: []string{cl.Member(0).Addr()}, Token: tok})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	w, r := replicated.New(dial(writer), "conf"), replicated.New(dial(reader), "conf")
	if err := w.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("writer put: %v", err)
	}
	if err := r.Put(ctx, "k", []byte("x")); !errors.Is(err, op.ErrForbidden) {
		t.Fatalf("reader put: %v, want op.ErrForbidden", err)
	}
	if _, err := r.Delete(ctx, "k"); !errors.Is(err, op.ErrForbidden) {
		t.Fatalf("reader delete: %v, want op.ErrForbidden", err)
	}
	gridtest.Eventually(t, converge, func() (bool, string) {
		v, ok, err := r.Get(ctx, "k")
		return err == nil && ok && string(v) == "v", fmt.Sprintf("reader get: %q %v %v", v, ok, err)
	})
}

// TestNearMaxAge: a near copy that hears no events (its subscription
// ended, as if they were lost) serves what it read until MaxAge, then
// reads through again.
func TestNearMaxAge(t *testing.T) {
	cl := cluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := cl.Member(0)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	near, err := replicated.NewNear(ctx, m, m, "n", replicated.NearOptions{MaxAge: time.Minute, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	rm := replicated.New(m, "n")
	if err := rm.Put(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := near.Get(ctx, "k"); err != nil || !ok || string(v) != "v1" {
		t.Fatalf("near get = %q %v %v", v, ok, err)
	}
	if _, ok, _ := near.Get(ctx, "absent"); ok {
		t.Fatal("absent key found")
	}
	near.Close()
	if err := rm.Put(ctx, "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if err := rm.Put(ctx, "absent", []byte("now-present")); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := near.Get(ctx, "k"); string(v) != "v1" {
		t.Fatalf("near get before MaxAge = %q, want the copy's v1", v)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	if v, _, _ := near.Get(ctx, "k"); string(v) != "v2" {
		t.Fatalf("near get after MaxAge = %q, want v2", v)
	}
	if v, ok, _ := near.Get(ctx, "absent"); !ok || string(v) != "now-present" {
		t.Fatalf("near get of a key absent before = %q %v", v, ok)
	}
}

// TestMemoryGuard: a member above its memory guard refuses replicated
// puts with op.ErrMapFull (before its heap runs away) and still answers
// reads and deletes.
func TestMemoryGuard(t *testing.T) {
	const headroom = 24 << 20
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	limit := int64(s[0].Value.Uint64()) + headroom
	cl := gridtest.New(t, 2, gridtest.WithServices(replicated.Service{MaxMapBytes: 1 << 30}),
		gridtest.WithConfig(func(c *grid.Config) { c.MaxMemory = limit }))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rm := replicated.New(cl.Member(0), "big")
	value := make([]byte, 16<<10)
	var refused error
	accepted := 0
	for i := 0; i < 8*headroom/len(value); i++ {
		value[0] = byte(i)
		if err := rm.Put(ctx, fmt.Sprint("k", i), value); err != nil {
			refused = err
			break
		}
		accepted++
	}
	if !errors.Is(refused, op.ErrMapFull) {
		t.Fatalf("after %d puts of %d bytes (limit %d): %v, want op.ErrMapFull", accepted, len(value), limit, refused)
	}
	if _, ok, err := rm.Get(ctx, "k0"); err != nil || !ok {
		t.Fatalf("get while full: %v %v", ok, err)
	}
	if found, err := rm.Delete(ctx, "k0"); err != nil || !found {
		t.Fatalf("delete while full: %v %v", found, err)
	}
}

// TestAcknowledgedWriteSurvivesCrash: in the reliable profile a put
// returns once another member merged it, so the writes a member
// acknowledged just before it crashed reach every survivor.
func TestAcknowledgedWriteSurvivesCrash(t *testing.T) {
	cl := cluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rm := replicated.New(cl.Member(0), "acked")
	want := map[string]string{}
	for i := range 300 {
		k, v := fmt.Sprint("k", i), fmt.Sprint("v", i)
		if err := rm.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	cl.Crash(0)
	gridtest.Eventually(t, converge, func() (bool, string) { return converged(ctx, cl.Live(), "acked", want) })
}
