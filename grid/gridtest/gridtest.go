// Package gridtest starts clusters of grid members inside one test process,
// on loopback ports, for fast multi-member tests: crash a member without
// goodbye, stop one gracefully, add one, and wait until every member agrees
// on a table that matches the target assignment.
package gridtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
)

// Cluster is a set of in-process members. Members that were crashed or shut
// down stay in the slice as nil.
type Cluster struct {
	t       testing.TB
	mu      sync.Mutex
	members []*grid.Member
	seed    string
	set     settings
	next    int
}

type settings struct {
	base grid.Config
	each []func(i int, c *grid.Config)
}

// Option changes the configs the cluster's members start with.
type Option func(*settings)

// WithPartitions sets the partition count.
func WithPartitions(n int) Option { return func(s *settings) { s.base.PartitionCount = n } }

// WithServices registers more services on every member, besides the map
// service every cluster of this package runs.
func WithServices(svcs ...op.Service) Option {
	return func(s *settings) { s.base.Services = append(s.base.Services, svcs...) }
}

// WithConfig applies f to the config every member starts with.
func WithConfig(f func(*grid.Config)) Option { return func(s *settings) { f(&s.base) } }

// WithMemberConfig applies f to the config of the i-th member started
// (i counts from 0, including members added later), e.g. for zone labels.
func WithMemberConfig(f func(i int, c *grid.Config)) Option {
	return func(s *settings) { s.each = append(s.each, f) }
}

// New starts n members that form one cluster and waits until it is stable.
// Every member runs the map service (maps.Service{}) and those added with
// WithServices.
// Everything is stopped by t.Cleanup. Logs go to stderr when SHOAL_TEST_LOG
// is set (at debug level when it is "debug").
func New(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	set := settings{base: grid.Config{
		BindAddr: "127.0.0.1:0",
		DataAddr: "127.0.0.1:0",
		Gossip:   grid.FastGossip(),
		Logger:   logger(),
		Services: []op.Service{maps.Service{}},
	}}
	for _, o := range opts {
		o(&set)
	}
	c := &Cluster{t: t, set: set}
	t.Cleanup(c.closeAll)
	for range n {
		c.Add()
	}
	c.WaitStable()
	return c
}

func logger() *slog.Logger {
	if v := os.Getenv("SHOAL_TEST_LOG"); v != "" {
		level := slog.LevelInfo
		if v == "debug" {
			level = slog.LevelDebug
		}
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Add starts one more member, joining the cluster, and returns its index.
// It does not wait for migrations (see WaitStable).
func (c *Cluster) Add() int {
	c.t.Helper()
	c.mu.Lock()
	cfg := c.set.base
	cfg.Name = fmt.Sprintf("m%d", c.next)
	for _, f := range c.set.each {
		f(c.next, &cfg)
	}
	c.next++
	if c.seed != "" {
		cfg.Join = []string{c.seed}
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := grid.Start(ctx, cfg)
	if err != nil {
		c.t.Fatalf("start member %s: %v", cfg.Name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seed == "" {
		c.seed = m.GossipAddr()
	}
	c.members = append(c.members, m)
	return len(c.members) - 1
}

// Member returns member i (nil if it was stopped).
func (c *Cluster) Member(i int) *grid.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i]
}

// Live returns the running members.
func (c *Cluster) Live() []*grid.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*grid.Member
	for _, m := range c.members {
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

// Crash stops member i at once, without handing anything over.
func (c *Cluster) Crash(i int) {
	c.t.Helper()
	m := c.take(i)
	m.Close()
	c.reseed()
}

// Shutdown stops member i gracefully (hand-over first).
func (c *Cluster) Shutdown(i int) {
	c.t.Helper()
	c.mu.Lock()
	m := c.members[i]
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		c.t.Errorf("shutdown %s: %v", m.Name(), err)
	}
	c.take(i)
	c.reseed()
}

func (c *Cluster) take(i int) *grid.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m == nil {
		c.t.Fatalf("member %d is not running", i)
	}
	c.members[i] = nil
	return m
}

func (c *Cluster) reseed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seed = ""
	for _, m := range c.members {
		if m != nil {
			c.seed = m.GossipAddr()
			return
		}
	}
}

// Stable reports whether every running member sees exactly the running
// members, follows the same table version, and that table gives every
// partition a running owner and matches the target assignment (no
// migration pending). It returns a reason when not.
func (c *Cluster) Stable() (bool, string) {
	live := c.Live()
	if len(live) == 0 {
		return true, ""
	}
	var names []string
	var pms []partition.Member
	for _, m := range live {
		names = append(names, m.Name())
	}
	for _, mi := range live[0].Members() {
		pms = append(pms, partition.Member{Name: mi.Name, Addr: mi.Addr, Zone: mi.Zone, Host: mi.Host})
	}
	slices.Sort(names)
	var t0 *partition.Table
	for _, m := range live {
		var seen []string
		for _, mi := range m.Members() {
			seen = append(seen, mi.Name)
		}
		if !slices.Equal(seen, names) {
			return false, fmt.Sprintf("%s sees members %v, want %v", m.Name(), seen, names)
		}
		t := m.Table()
		if t == nil {
			return false, m.Name() + " has no table"
		}
		if t0 == nil {
			t0 = t
		} else if t.Version != t0.Version {
			return false, fmt.Sprintf("%s has table %d, %s has %d", live[0].Name(), t0.Version, m.Name(), t.Version)
		}
	}
	st := live[0].Stats()
	target, err := partition.Assign(pms, t0.Count, st.TableBackups, c.set.base.Placement)
	if err != nil {
		return false, err.Error()
	}
	for p := range int32(t0.Count) {
		o, ok := t0.Owner(p)
		if !ok || !slices.Contains(names, o.Name) {
			return false, fmt.Sprintf("partition %d has no running owner", p)
		}
		if got, want := t0.ReplicaNames(p), target.ReplicaNames(p); !slices.Equal(got, want) {
			return false, fmt.Sprintf("partition %d has replicas %v, target %v (migration pending)", p, got, want)
		}
	}
	for _, m := range live {
		if s := m.Stats(); s.UnsyncedBackups > 0 || s.Fenced {
			return false, fmt.Sprintf("%s has %d backups not in sync (fenced %v)", m.Name(), s.UnsyncedBackups, s.Fenced)
		}
	}
	return true, ""
}

// WaitStable waits (up to 30 s) until Stable holds, failing the test
// otherwise.
func (c *Cluster) WaitStable() {
	c.t.Helper()
	Eventually(c.t, 30*time.Second, c.Stable)
}

// Eventually polls cond every 20 ms until it holds or d passes, then fails
// the test with cond's last reason.
func Eventually(t testing.TB, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %s", d, why)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

func (c *Cluster) closeAll() {
	for _, m := range c.Live() {
		m.Close()
	}
}

// LeakOptions are the goleak options for test binaries that start members:
// memberlist's Shutdown does not wait for a probe in flight, whose
// goroutine ends when the probe's timer fires, which under heavy CPU load
// can be later than goleak's retries. Use goleak.VerifyTestMain(m,
// gridtest.LeakOptions()...).
func LeakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode")}
}
