package grid

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/sysop"
	"github.com/shoalgrid/shoal/wire"
)

// RemoveMember removes member name, which crashed or disappeared for good,
// from the cluster's expected size: the voters the quorum counts. Crashes
// never lower the expected size by themselves (from inside a side, a crash
// and a network cut look the same), so a cluster that lost members for
// good keeps needing a majority of its old size; an operator who knows a
// member is gone removes it here. It is refused (op.ErrBadRequest) while
// name is alive in the membership: stop it first, or stop it gracefully,
// which lowers the expected size by itself.
//
// Any member forwards the call to the coordinator, which publishes a table
// without the voter; RemoveMember returns that table's version. Without a
// quorum the coordinator refuses (op.ErrQuorum) unless force is set: a
// side cut off from the others cannot tell them dead, and removing them
// there gives that side a majority of its own (split brain). Force it only
// for members known to be gone. A removed member that comes back under its
// name counts again.
func (m *Member) RemoveMember(ctx context.Context, name string, force bool) (uint64, error) {
	if m.closed.Load() {
		return 0, m.errClosed()
	}
	if name == "" {
		return 0, op.Errorf(op.CodeBadRequest, "remove member: empty name")
	}
	if name == m.cfg.Name {
		return 0, op.Errorf(op.CodeBadRequest, "remove member %s: it is this member, alive; stop it gracefully instead", op.Quote(name))
	}
	if m.isLive(name) {
		return 0, op.Errorf(op.CodeBadRequest, "remove member %s: it is alive; only a crashed member can be removed (a graceful stop lowers the expected size by itself)", op.Quote(name))
	}
	t := m.Table()
	if t == nil {
		return 0, op.Errorf(op.CodeStaleTable, "remove member %s: member %s has no partition table yet", op.Quote(name), m.cfg.Name)
	}
	if !slices.Contains(votersOf(t), name) {
		return t.Version, nil // not (or no longer) counted
	}
	if !m.IsCoordinator() {
		co, ok := m.coordinatorInfo()
		if !ok {
			return 0, op.Errorf(op.CodeUnavailable, "remove member %s: no coordinator", op.Quote(name))
		}
		num := int64(0)
		if force {
			num = 1
		}
		resp, err := m.peers.call(ctx, co.Name, co.Addr, &op.Request{Service: sysService, Op: sysop.RemoveMember, Partition: -1, Key: name, Num: num})
		if err != nil {
			return 0, fmt.Errorf("remove member %s through coordinator %s: %w", op.Quote(name), co.Name, err)
		}
		return resp.TableVersion, nil
	}
	if !force && !m.HasQuorum() {
		return 0, op.Errorf(op.CodeQuorum, "remove member %s: member %s has no quorum (%s): it cannot tell a crash from a network cut; force the removal only if the missing members are gone for good",
			op.Quote(name), m.cfg.Name, m.QuorumView())
	}
	m.log.Warn("member removed from the expected size by an operator", "member", name, "forced", force, "quorum", m.QuorumView().String())
	m.noteLeft(name, true)
	m.refreshQuorum()
	m.coord.force.Store(true)
	m.coord.poke()
	for {
		ch := m.tableChanged()
		if t := m.Table(); !slices.Contains(votersOf(t), name) {
			return t.Version, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, fmt.Errorf("remove member %s: no table without it published yet (the coordinator retries): %w", op.Quote(name), op.FromContext(ctx))
		case <-m.ctx.Done():
			return 0, m.errClosed()
		}
		if m.isLive(name) {
			return 0, op.Errorf(op.CodeBadRequest, "remove member %s: it came back", op.Quote(name))
		}
	}
}

// isLive reports whether member name is in this member's live view.
func (m *Member) isLive(name string) bool {
	m.viewMu.Lock()
	defer m.viewMu.Unlock()
	_, ok := m.view[name]
	return ok
}

// votersOf returns the voters of t (its members for a table from before
// voters).
func votersOf(t *partition.Table) []string {
	if len(t.Voters) > 0 {
		return t.Voters
	}
	return memberNames(t.Members)
}

// removeTimeout bounds a remote RemoveMember whose caller set no deadline.
const removeTimeout = 30 * time.Second

// handleRemoveMember serves sysop.RemoveMember from connection c: a
// client needs the admin role on "*".
func (m *Member) handleRemoveMember(c *wire.Conn, id uint64, req *op.Request) {
	if c.Peer().Role != wire.RoleMember {
		if p, _ := c.Principal().(*principal); p != nil && p.role("*") < RoleAdmin {
			c.Respond(id, &op.Response{Code: op.CodeForbidden, Msg: fmt.Sprintf("token %q: removing a member needs the admin role on \"*\"", p.name)})
			return
		}
	}
	ok := m.spawn(func() {
		d := req.Timeout
		if d <= 0 {
			d = removeTimeout
		}
		ctx, cancel := context.WithTimeout(m.ctx, d)
		defer cancel()
		v, err := m.RemoveMember(ctx, req.Key, req.Num == 1)
		if err != nil {
			c.Respond(id, errResponse(err, m.tableVersion()))
			return
		}
		c.Respond(id, &op.Response{Found: true, TableVersion: v})
	})
	if !ok {
		c.Respond(id, errResponse(m.errClosed(), 0))
	}
}
