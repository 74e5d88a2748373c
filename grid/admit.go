package grid

import (
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// ErrRefused is wrapped by Start's error when the cluster refused this
// member (another cluster name, partition count or protocol version, or
// its name is held by a live member at another address). Retrying cannot
// help: the member's configuration must change.
var ErrRefused = errors.New("grid: refused by the cluster")

// admit decides whether node n may be a peer of this member: it must run
// the same cluster name, partition count and protocol version, and its name
// must not be held by a live member (or this member) at another gossip
// address. join is true during a join (push-pull), where the node lists of
// both sides are compared.
func (m *Member) admit(n *memberlist.Node, join bool) error {
	meta, err := decodeMeta(n.Meta)
	if err != nil || meta.Addr == "" {
		return fmt.Errorf("%w: node %s (%s) sent no Shoal member metadata: not a member of cluster %q", ErrRefused, n.Name, n.Address(), m.cfg.Cluster)
	}
	switch {
	case meta.Cluster != m.cfg.Cluster:
		return fmt.Errorf("%w: node %s (%s) is in cluster %q, this member in %q", ErrRefused, n.Name, n.Address(), meta.Cluster, m.cfg.Cluster)
	case meta.Partitions != m.cfg.PartitionCount:
		return fmt.Errorf("%w: node %s (%s) has %d partitions, this member %d (--partitions must be the same on every member)", ErrRefused, n.Name, n.Address(), meta.Partitions, m.cfg.PartitionCount)
	case meta.Proto != metaProto:
		return fmt.Errorf("%w: node %s (%s) speaks member protocol %d, this member %d", ErrRefused, n.Name, n.Address(), meta.Proto, metaProto)
	}
	addr := n.Address()
	if n.Name == m.cfg.Name {
		if self := m.selfGossip.Load(); self != nil && *self != addr {
			return fmt.Errorf("%w: a member named %s already runs at %s (this one is at %s): member names must be unique", ErrRefused, n.Name, addr, *self)
		}
		return nil
	}
	m.viewMu.Lock()
	cur, live := m.view[n.Name]
	m.viewMu.Unlock()
	if live && cur.GossipAddr != addr {
		return fmt.Errorf("%w: a member named %s already runs at %s; another at %s was refused: member names must be unique", ErrRefused, n.Name, cur.GossipAddr, addr)
	}
	return nil
}

// refuse records why a join was refused, while this member is joining:
// join stops retrying and Start returns it. A member of the cluster that
// refuses a newcomer only logs it.
func (m *Member) refuse(err error) {
	if !m.joining.Load() {
		m.log.Warn("refused a joining node", "err", err)
		return
	}
	m.refusedMu.Lock()
	defer m.refusedMu.Unlock()
	if m.refused == nil {
		m.refused = err
		m.log.Error("join refused", "err", err)
	}
}

// refusal returns the recorded refusal, if any.
func (m *Member) refusal() error {
	m.refusedMu.Lock()
	defer m.refusedMu.Unlock()
	return m.refused
}
