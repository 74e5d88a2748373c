package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/sysop"
)

// EventType is the kind of a membership event.
type EventType int

// Membership event types, derived from changes of the partition table's
// member list.
const (
	MemberJoined EventType = iota + 1
	MemberLeft
)

// String names the event type.
func (t EventType) String() string {
	switch t {
	case MemberJoined:
		return "joined"
	case MemberLeft:
		return "left"
	}
	return "unknown"
}

// Event is a membership change seen by the client.
type Event struct {
	Type   EventType
	Member partition.Member
	Time   time.Time
}

// Subscribe returns a channel of membership events and a function that ends
// the subscription. A subscriber more than buffer events behind misses
// events; buffer < 1 means 64. Close closes every subscription.
func (c *Client) Subscribe(buffer int) (<-chan Event, func()) {
	if buffer < 1 {
		buffer = 64
	}
	ch := make(chan Event, buffer)
	c.subsMu.Lock()
	if c.closed.Load() {
		c.subsMu.Unlock()
		close(ch)
		return ch, func() {}
	}
	c.subs[ch] = struct{}{}
	c.subsMu.Unlock()
	return ch, func() {
		c.subsMu.Lock()
		defer c.subsMu.Unlock()
		if _, ok := c.subs[ch]; ok {
			delete(c.subs, ch)
			close(ch)
		}
	}
}

func (c *Client) tableChanged() <-chan struct{} {
	c.tableMu.Lock()
	defer c.tableMu.Unlock()
	return c.tableCond
}

// adopt installs t if it is newer than the current table, or belongs to
// another cluster incarnation (the cluster was restarted: versions began
// again).
func (c *Client) adopt(t *partition.Table) bool {
	c.tableMu.Lock()
	cur := c.table.Load()
	if cur != nil && t.Epoch == cur.Epoch && t.Version <= cur.Version {
		c.tableMu.Unlock()
		return false
	}
	c.table.Store(t)
	close(c.tableCond)
	c.tableCond = make(chan struct{})
	if cur != nil && t.Epoch != cur.Epoch {
		c.log.Info("cluster restarted: new partition table", "version", t.Version)
	}
	c.notify(cur, t)
	c.tableMu.Unlock()
	c.dropDeparted(cur, t)
	return true
}

// dropDeparted fails the calls waiting on the members of old that t no
// longer has (at an address no member of t uses). The cluster declared
// them gone: crashed, or cut off from the majority, where a call sent
// before the cut waits for an answer that never comes. The invoke loop
// retries them at once, with their identity, on the partitions' new owners
// (the retry is answered from the new owner's dedup table if the old
// owner's backup applied it), instead of waiting for the caller's deadline
// while the majority serves. The connections stay (wire.Conn.AbandonCalls):
// event subscriptions on them work again after a heal.
func (c *Client) dropDeparted(old, t *partition.Table) {
	if old == nil || old.Epoch != t.Epoch {
		return
	}
	for _, mb := range old.Members {
		if _, ok := t.Member(mb.Name); ok || slices.ContainsFunc(t.Members, func(n partition.Member) bool { return n.Addr == mb.Addr }) {
			continue
		}
		c.mu.Lock()
		mc := c.conns[mb.Addr]
		c.mu.Unlock()
		if mc != nil {
			mc.abandonCalls()
		}
	}
}

func (c *Client) notify(old, t *partition.Table) {
	now := time.Now()
	var evs []Event
	for _, mb := range t.Members {
		if old == nil {
			break
		}
		if _, ok := old.Member(mb.Name); !ok {
			evs = append(evs, Event{Type: MemberJoined, Member: mb, Time: now})
		}
	}
	if old != nil {
		for _, mb := range old.Members {
			if _, ok := t.Member(mb.Name); !ok {
				evs = append(evs, Event{Type: MemberLeft, Member: mb, Time: now})
			}
		}
	}
	if len(evs) == 0 {
		return
	}
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	for _, ev := range evs {
		c.log.Info("member "+ev.Type.String(), "member", ev.Member.Name, "addr", ev.Member.Addr)
		for ch := range c.subs {
			select {
			case ch <- ev:
			default:
			}
		}
	}
}

// fetchTable reads the table of the member at addr.
func (c *Client) fetchTable(ctx context.Context, addr string) (*partition.Table, error) {
	cn, err := c.conn(ctx, addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	resp, err := cn.Call(ctx, &op.Request{Service: sysop.Service, Op: sysop.GetTable, Partition: -1})
	if err != nil {
		return nil, err
	}
	if err := resp.Err(); err != nil {
		return nil, err
	}
	if !resp.Found {
		return nil, op.Errorf(op.CodeStaleTable, "member %s has no partition table yet", addr)
	}
	t, err := partition.Unmarshal(resp.Value)
	if err != nil {
		return nil, fmt.Errorf("%w: table from %s: %v", op.ErrBadRequest, addr, err)
	}
	return t, nil
}

// refreshGrace is how long refresh keeps listening for other members'
// tables once one answered: enough for the others on a LAN, short enough
// that a member that does not answer (cut off, paused) costs nothing.
const refreshGrace = 20 * time.Millisecond

// refresh reads the table from the members of the current table and the
// seed addresses, all at once, and adopts the newest that arrives (adopt
// keeps only newer versions). It returns shortly after the first answer, so
// an unreachable member (a network split, a paused process) never holds
// the client's routing back. It fails with op.ErrUnavailable when none
// answers.
func (c *Client) refresh(ctx context.Context) error {
	var addrs []string
	if t := c.Table(); t != nil {
		for _, mb := range t.Members {
			addrs = append(addrs, mb.Addr)
		}
	}
	for _, a := range c.cfg.Addrs {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%w: no member address known", op.ErrUnavailable)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		t   *partition.Table
		err error
	}
	answers := make(chan answer, len(addrs))
	var wg sync.WaitGroup
	defer wg.Wait() // cancel (deferred after) ends the fetches still running
	defer cancel()
	for _, a := range addrs {
		wg.Go(func() {
			t, err := c.fetchTable(ctx, a)
			answers <- answer{t, err}
		})
	}
	var errs []error
	var grace <-chan time.Time
	adopted := false
	for range addrs {
		select {
		case a := <-answers:
			if a.err != nil {
				errs = append(errs, a.err)
				continue
			}
			c.adopt(a.t)
			if !adopted {
				adopted = true
				grace = time.After(refreshGrace)
			}
			continue
		case <-grace:
		case <-ctx.Done():
		}
		break
	}
	if adopted {
		return nil
	}
	if ctx.Err() != nil {
		return op.FromContext(ctx)
	}
	for _, e := range errs {
		if errors.Is(e, op.ErrBadRequest) || errors.Is(e, op.ErrUnauthenticated) || errors.Is(e, op.ErrForbidden) {
			// A member refused us (wrong cluster name, protocol): waiting
			// will not help.
			return fmt.Errorf("client: %w", e)
		}
	}
	return fmt.Errorf("%w: no member reachable at %v: %s", op.ErrUnavailable, addrs, joinErrs(errs))
}

// joinErrs renders errors on one line (errors.Join uses newlines, which
// break log lines and CLI messages).
func joinErrs(errs []error) string {
	var b strings.Builder
	for i, e := range errs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// refreshLoop keeps an idle client's table current, reads a table a
// member announced (sysop.TableStream) at once, and drops connections to
// members that left.
func (c *Client) refreshLoop() {
	defer c.wg.Done()
	tick := time.NewTicker(c.cfg.RefreshInterval)
	defer tick.Stop()
	// Register the table announcements (and any subscription made before
	// this loop started) here, not in Dial, which they would hold back.
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RefreshInterval)
	c.events.Sync(ctx, c.Table())
	cancel()
	close(c.synced)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.tableKick:
			if t := c.Table(); t != nil && t.Version >= c.announced.Load() {
				continue // read already
			}
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RefreshInterval)
		if err := c.refresh(ctx); err != nil && c.ctx.Err() == nil {
			c.log.Debug("table refresh", "err", err)
		}
		cancel()
		c.dropStale()
		if c.events.Len() > 0 {
			ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RefreshInterval)
			c.events.Sync(ctx, c.Table())
			cancel()
		}
	}
}

// dropStale closes connections to addresses that are neither members nor
// seeds any more.
func (c *Client) dropStale() {
	t := c.Table()
	if t == nil {
		return
	}
	keep := map[string]bool{}
	for _, mb := range t.Members {
		keep[mb.Addr] = true
	}
	for _, a := range c.cfg.Addrs {
		keep[a] = true
	}
	c.mu.Lock()
	var drop []*memberConns
	for a, mc := range c.conns {
		if !keep[a] {
			drop = append(drop, mc)
			delete(c.conns, a)
		}
	}
	c.mu.Unlock()
	for _, mc := range drop {
		mc.closeAll()
	}
}
