package grid_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/backup/backuptest"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// inmemNet connects members' owner sides to their peers' backup sides
// through backuptest.Inmem links, one per probe-or-copy round, delivered by
// a pump goroutine unless the test holds a link.
type inmemNet struct {
	members []*grid.Member
	mu      sync.Mutex
	links   []*backuptest.Inmem
	held    atomic.Pointer[backuptest.Inmem]
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

func newInmemNet(members []*grid.Member) *inmemNet {
	n := &inmemNet{members: members, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	byName := map[string]*grid.Member{}
	for _, m := range members {
		byName[m.Name()] = m
	}
	for _, m := range members {
		m.UseBackupTransportForTest(func(p int32, name string) backup.Transport {
			l := backuptest.NewInmem(byName[name].BackupHandlerForTest())
			l.OnSend(n.poke)
			n.mu.Lock()
			n.links = append(n.links, l)
			n.mu.Unlock()
			n.poke()
			return l
		})
	}
	go n.pump()
	return n
}

func (n *inmemNet) poke() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *inmemNet) all() []*backuptest.Inmem {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*backuptest.Inmem(nil), n.links...)
}

func (n *inmemNet) last() *backuptest.Inmem {
	l := n.all()
	return l[len(l)-1]
}

// pump delivers every queued message of every link not held, until
// stopped.
func (n *inmemNet) pump() {
	defer close(n.done)
	for {
		select {
		case <-n.stop:
			return
		case <-n.kick:
		}
		for delivered := true; delivered; {
			delivered = false
			for _, l := range n.all() {
				if l != n.held.Load() && l.DeliverAll() > 0 {
					delivered = true
				}
			}
		}
	}
}

// close puts the members back on their connections, stops the pump and
// disconnects every link (their pending answers fail, as on a closed
// connection).
func (n *inmemNet) close() {
	select {
	case <-n.stop:
		return
	default:
	}
	for _, m := range n.members {
		m.UseBackupTransportForTest(nil)
	}
	close(n.stop)
	<-n.done
	for _, l := range n.all() {
		l.Disconnect()
	}
}

// TestReplicationOverInmemTransport runs grid's owner side (replicate,
// resync, the answer handlers) and backup side over the in-memory
// transport instead of sockets: the first round probes, records stream, a
// record lost on the way makes the next one a gap, the owner copies the
// partition through a new link, and after the owner's crash the backup
// holds every acknowledged write.
func TestReplicationOverInmemTransport(t *testing.T) {
	cl := gridtest.New(t, 3, gridtest.WithPartitions(1), gridtest.WithConfig(func(c *grid.Config) {
		c.BackupTimeout = time.Second
	}))
	cl.WaitStable()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Three members (a quorum survives the owner's crash), one partition
	// with one backup.
	owner, backupIdx := -1, -1
	tab := cl.Member(0).Table()
	o, _ := tab.Owner(0)
	b, _ := tab.Replica(0, 1)
	for i := range 3 {
		switch cl.Member(i).Name() {
		case o.Name:
			owner = i
		case b.Name:
			backupIdx = i
		}
	}
	if owner < 0 || backupIdx < 0 {
		t.Fatalf("partition 0: owner %q, backup %q not among the members", o.Name, b.Name)
	}
	net := newInmemNet(cl.Live())
	t.Cleanup(net.close)
	stats := func() (records, copies uint64) {
		st := cl.Member(backupIdx).Stats()
		return st.BackupRecords, st.MigrationsIn
	}

	mp := maps.New(cl.Member(owner), "inmem")
	want := map[string]string{}
	put := func(k, v string) error {
		err := mp.Put(ctx, k, []byte(v))
		if err == nil || errors.Is(err, op.ErrBackupTimeout) {
			want[k] = v // acknowledged, or outcome unknown: the owner applied it
		}
		return err
	}
	// The streams were broken: the first put waits for the new round (a
	// probe: the backup holds everything) through the in-memory link.
	records0, _ := stats()
	for i := range 10 {
		if err := put(fmt.Sprint("k", i), "v"); err != nil {
			t.Fatalf("put %d over the in-memory transport: %v", i, err)
		}
	}
	if len(net.all()) == 0 {
		t.Fatal("no in-memory link was opened")
	}
	if records, _ := stats(); records < records0+9 {
		t.Fatalf("%d records reached the backup, want at least 9", records-records0)
	}

	// Lose one record: hold the link, drop the first record queued.
	_, copies0 := stats()
	links0 := len(net.all())
	lost := net.last()
	net.held.Store(lost)
	lostErr := make(chan error, 1)
	go func() { lostErr <- mp.Put(ctx, "lost", []byte("v")) }()
	gridtest.Eventually(t, 30*time.Second, func() (bool, string) {
		k, ok := lost.Next()
		return ok && k == backuptest.Record, "no record queued on the held link"
	})
	lost.Drop()
	net.held.Store(nil)
	net.poke()
	if err := <-lostErr; err != nil && !errors.Is(err, op.ErrBackupTimeout) {
		t.Fatalf("put whose record was lost: %v, want success or ErrBackupTimeout", err)
	}
	want["lost"] = "v"
	// The next record is a gap: the owner copies the partition through a
	// new link, and the put is acknowledged once the copy is.
	if err := put("after", "v"); err != nil {
		t.Fatalf("put after a lost record: %v", err)
	}
	if _, copies := stats(); copies <= copies0 || len(net.all()) <= links0 {
		t.Fatalf("copies %d -> %d, links %d -> %d: the gap was not repaired by a copy over a new link", copies0, copies, links0, len(net.all()))
	}

	// The backup holds everything the owner applied. (Replication goes
	// back to connections first: the promoted owner's new backup needs it.)
	net.close()
	cl.Crash(owner)
	got := maps.New(cl.Live()[0], "inmem")
	for k, v := range want {
		gridtest.Eventually(t, 30*time.Second, func() (bool, string) {
			b, found, err := got.Get(ctx, k)
			if err != nil || !found {
				return false, fmt.Sprintf("get %s after the owner's crash: found %v, %v", k, found, err)
			}
			if string(b) != v {
				t.Fatalf("%s = %q, want %q", k, b, v)
			}
			return true, ""
		})
	}
}
