package grid

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
)

// coordinator publishes partition tables. Only the oldest live member acts
// on it; every member runs the loop so that the next-oldest takes over when
// the coordinator leaves or dies. One goroutine runs the loop, so plans and
// publications never overlap.
type coordinator struct {
	m     *Member
	kick  chan struct{}
	dirty atomic.Bool // membership changed since the current plan started

	active bool // this member coordinated in the previous round
	// maxSeen is the newest table version a member reported when it
	// refused a publication (after a healed split, the other side's
	// members may be ahead); the next table is published above it.
	maxSeen atomic.Uint64
	// force makes the next round publish a new version even if nothing
	// changed.
	force atomic.Bool
}

func newCoordinator(m *Member) *coordinator {
	return &coordinator{m: m, kick: make(chan struct{}, 1)}
}

// trigger asks the loop to re-plan soon. It never blocks.
func (c *coordinator) trigger() {
	c.dirty.Store(true)
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// republishEvery is how often the coordinator pushes its current table to
// every member, so that a member that missed a publication catches up.
const republishEvery = time.Second

func (c *coordinator) run() {
	defer c.m.wg.Done()
	tick := time.NewTicker(republishEvery)
	defer tick.Stop()
	for {
		periodic := false
		select {
		case <-c.m.ctx.Done():
			return
		case <-c.kick:
		case <-tick.C:
			periodic = true
		}
		if c.m.ml == nil || !c.m.IsCoordinator() {
			c.active = false
			continue
		}
		c.dirty.Store(false)
		if err := c.step(); err != nil && c.m.ctx.Err() == nil {
			c.m.log.Warn("coordinator round failed", "err", err)
			c.trigger()
		}
		if periodic {
			if t := c.m.Table(); t != nil {
				c.publishRemote(t)
			}
		}
	}
}

// step brings the table one round closer to the target for the current
// members: first it reassigns partitions of members that are gone, then it
// migrates partitions to their target owners in bounded batches, publishing
// a new table version after each batch.
func (c *coordinator) step() error {
	m := c.m
	takeover := c.force.Swap(false)
	if !c.active {
		c.active = true
		takeover = true
		c.learnNewestTable()
	}
	live := m.Members()
	if len(live) == 0 {
		return nil
	}
	var targetMembers []partition.Member
	liveByName := map[string]partition.Member{}
	for _, mi := range live {
		pm := mi.partitionMember()
		liveByName[mi.Name] = pm
		if !mi.Leaving {
			targetMembers = append(targetMembers, pm)
		}
	}
	if len(targetMembers) == 0 {
		return nil // everyone is leaving; nobody can take partitions
	}
	target, err := partition.Assign(targetMembers, m.cfg.PartitionCount, 0, partition.PerMember)
	if err != nil {
		return fmt.Errorf("assign partitions: %w", err)
	}
	cur := m.Table()
	if cur == nil {
		first := c.publish(target.WithVersion(1))
		m.log.Info("first partition table published", "version", first.Version, "members", len(targetMembers))
		return nil
	}

	// Phase 1: owners that are gone. Without backups their data is lost;
	// the target owner starts the partition empty.
	owners := make([]string, cur.Count)
	lost := 0
	for p := range owners {
		o, _ := cur.Owner(int32(p))
		if _, ok := liveByName[o.Name]; ok {
			owners[p] = o.Name
			continue
		}
		t, _ := target.Owner(int32(p))
		owners[p] = t.Name
		lost++
	}
	next, err := buildTable(cur.Version+1, cur.Count, live, owners)
	if err != nil {
		return err
	}
	if lost > 0 || takeover || !sameMembers(cur, next) {
		if lost > 0 {
			m.log.Warn("partitions reassigned from departed members; their entries are lost (no backups)", "partitions", lost)
		}
		cur = c.publish(next)
	}

	// Phase 2: migrate toward the target.
	var moves []partition.Move
	for p := range owners {
		t, _ := target.Owner(int32(p))
		if owners[p] != t.Name {
			moves = append(moves, partition.Move{Partition: int32(p), From: owners[p], To: t.Name})
		}
	}
	if len(moves) == 0 {
		return nil
	}
	start := time.Now()
	m.log.Info("migration plan", "moves", len(moves), "version", cur.Version)
	batch := 4 * m.cfg.MigrationParallelism
	done, entries := 0, 0
	for len(moves) > 0 {
		if m.ctx.Err() != nil {
			return nil
		}
		if c.dirty.Load() {
			m.log.Info("membership changed: re-planning", "migrated", done, "remaining", len(moves))
			return nil
		}
		n := min(batch, len(moves))
		ok, moved, err := c.migrateBatch(cur, liveByName, moves[:n])
		moves = moves[n:]
		entries += moved
		for _, mv := range ok {
			owners[mv.Partition] = mv.To
		}
		done += len(ok)
		if len(ok) > 0 {
			next, berr := buildTable(cur.Version+1, cur.Count, live, owners)
			if berr != nil {
				return berr
			}
			cur = c.publish(next)
		}
		if err != nil {
			return err
		}
	}
	m.log.Info("migrations complete", "partitions", done, "entries", entries, "took", time.Since(start).Round(time.Millisecond), "version", cur.Version)
	return nil
}

// migrateBatch runs moves concurrently and returns those that succeeded.
func (c *coordinator) migrateBatch(cur *partition.Table, live map[string]partition.Member, moves []partition.Move) ([]partition.Move, int, error) {
	m := c.m
	results := make([]error, len(moves))
	counts := make([]int, len(moves))
	var g errgroup.Group
	g.SetLimit(m.cfg.MigrationParallelism)
	for i, mv := range moves {
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
			defer cancel()
			to := live[mv.To]
			if mv.From == m.cfg.Name {
				counts[i], results[i] = m.migrateOut(ctx, mv.Partition, to.Name, to.Addr, cur.Version)
				return nil
			}
			from := live[mv.From]
			resp, err := m.peers.call(ctx, from.Name, from.Addr, &op.Request{
				Service: sysService, Op: sysMigrate, Partition: mv.Partition,
				Key: to.Name, Aux: []byte(to.Addr), Num: int64(cur.Version),
			})
			if err == nil {
				counts[i] = int(resp.Num)
			}
			results[i] = err
			return nil
		})
	}
	_ = g.Wait()
	var ok []partition.Move
	var errs []error
	moved := 0
	for i, mv := range moves {
		if results[i] != nil {
			errs = append(errs, fmt.Errorf("partition %d %s->%s: %w", mv.Partition, mv.From, mv.To, results[i]))
			continue
		}
		ok = append(ok, mv)
		moved += counts[i]
	}
	return ok, moved, errors.Join(errs...)
}

// learnNewestTable asks every live member for its table when this member
// becomes coordinator, so it continues from the newest version anyone has
// (the previous coordinator may have published one we missed).
func (c *coordinator) learnNewestTable() {
	m := c.m
	var g errgroup.Group
	for _, mi := range m.Members() {
		if mi.Name == m.cfg.Name {
			continue
		}
		g.Go(func() error {
			m.pullTable(m.ctx, partition.Member{Name: mi.Name, Addr: mi.Addr})
			return nil
		})
	}
	_ = g.Wait()
}

// publish adopts t locally, then pushes it to every member. It returns the
// table as published: its version is raised above any version a member
// reported, so that members that are ahead accept it.
func (c *coordinator) publish(t *partition.Table) *partition.Table {
	if seen := c.maxSeen.Load(); seen >= t.Version {
		t = t.WithVersion(seen + 1)
	}
	if cur := c.m.Table(); cur != nil && cur.Epoch != 0 {
		t.Epoch = cur.Epoch
	} else if t.Epoch == 0 {
		t.Epoch = rand.Uint64() | 1
	}
	c.m.adopt(t, c.m.cfg.Name)
	c.publishRemote(t)
	return t
}

func (c *coordinator) publishRemote(t *partition.Table) {
	m := c.m
	b, err := t.Marshal()
	if err != nil {
		m.log.Error("encode table", "err", err)
		return
	}
	var g errgroup.Group
	for _, mi := range m.Members() {
		if mi.Name == m.cfg.Name {
			continue
		}
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(m.ctx, 2*time.Second)
			defer cancel()
			resp, err := m.peers.call(ctx, mi.Name, mi.Addr, &op.Request{Service: sysService, Op: sysPublish, Partition: -1, Value: b})
			if err != nil {
				m.log.Debug("publish table", "peer", mi.Name, "version", t.Version, "err", err)
				return nil
			}
			if resp.TableVersion > t.Version {
				// The peer follows a newer table from another coordinator
				// (a healed split): outbid it in the next round.
				for {
					seen := c.maxSeen.Load()
					if resp.TableVersion <= seen || c.maxSeen.CompareAndSwap(seen, resp.TableVersion) {
						break
					}
				}
				c.force.Store(true)
				c.trigger()
			}
			return nil
		})
	}
	_ = g.Wait()
}

// adopt makes t this member's table if it is newer than the current one.
// Slots are updated before the table pointer, so a request stamped with the
// new version is refused (stale) until every slot reflects it.
func (m *Member) adopt(t *partition.Table, from string) bool {
	if t == nil || t.Count != m.cfg.PartitionCount {
		if t != nil {
			m.log.Error("table with wrong partition count refused", "from", from, "count", t.Count)
		}
		return false
	}
	m.tableMu.Lock()
	defer m.tableMu.Unlock()
	cur := m.table.Load()
	if cur != nil && t.Version <= cur.Version {
		return false
	}
	dropped := 0
	for p, s := range m.slots {
		dropped += s.adopt(t.Version, t.IsOwner(int32(p), m.cfg.Name))
	}
	m.table.Store(t)
	close(m.tableCond)
	m.tableCond = make(chan struct{})

	m.restoreMu.Lock()
	for k, rb := range m.restores {
		if rb.tag < t.Version {
			delete(m.restores, k)
		}
	}
	m.restoreMu.Unlock()

	names := make([]string, len(t.Members))
	for i, mb := range t.Members {
		names[i] = mb.Name
	}
	m.log.Info("partition table adopted", "version", t.Version, "from", from, "members", names, "owned", len(t.Owned(m.cfg.Name)))
	if dropped > 0 {
		m.log.Info("dropped entries of partitions handed over", "entries", dropped)
	}
	return true
}

// buildTable makes a table whose owner of partition p is owners[p], with
// the live members (sorted by name) as its member list.
func buildTable(version uint64, count int, live []MemberInfo, owners []string) (*partition.Table, error) {
	members := make([]partition.Member, 0, len(live))
	for _, mi := range live {
		members = append(members, mi.partitionMember())
	}
	slices.SortFunc(members, func(a, b partition.Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	idx := make(map[string]int32, len(members))
	for i, mb := range members {
		idx[mb.Name] = int32(i)
	}
	replicas := make([][]int32, count)
	for p, o := range owners {
		i, ok := idx[o]
		if !ok {
			return nil, fmt.Errorf("%w: owner %q of partition %d is not a live member", op.ErrInternal, o, p)
		}
		replicas[p] = []int32{i}
	}
	t := &partition.Table{Version: version, Count: count, Members: members, Replicas: replicas}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("%w: built an invalid table: %v", op.ErrInternal, err)
	}
	return t, nil
}

func sameMembers(a, b *partition.Table) bool {
	return slices.Equal(a.Members, b.Members)
}
