package grid

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/quorum"
	"github.com/shoalgrid/shoal/sysop"
)

// nodeMeta is what each member gossips about itself in memberlist's node
// meta (memberlist refuses more than 512 bytes, checked in encode).
type nodeMeta struct {
	Addr    string `msgpack:"a"`
	Zone    string `msgpack:"z,omitempty"`
	Host    string `msgpack:"h,omitempty"`
	Started int64  `msgpack:"s"`
	Proto   int    `msgpack:"p"`
	Leaving bool   `msgpack:"l,omitempty"`
	Session uint64 `msgpack:"x,omitempty"`
	// Cluster and Partitions must match on every member: admission
	// refuses a node whose values differ (see admit).
	Cluster    string `msgpack:"c"`
	Partitions int    `msgpack:"n"`
}

// metaProto is the member protocol version; members of another version
// are refused at admission.
const metaProto = 1

func (n nodeMeta) encode() ([]byte, error) {
	b, err := msgpack.Marshal(&n)
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: member metadata is %d bytes, memberlist allows %d (shorten zone/host labels)", ErrConfig, len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var n nodeMeta
	// Gossip is a peer's bytes: msgpack skips unknown fields recursively.
	if err := mpsafe.Check(b, mpsafe.MaxDepth); err != nil {
		return n, err
	}
	err := msgpack.Unmarshal(b, &n)
	return n, err
}

// MemberInfo describes one member of the cluster as this member sees it.
type MemberInfo struct {
	// Name is the member's unique name.
	Name string
	// Addr is its data (client) address.
	Addr string
	// GossipAddr is its memberlist address.
	GossipAddr string
	// Zone and Host are its placement labels.
	Zone, Host string
	// Started is when it started; the oldest live member coordinates.
	Started time.Time
	// Leaving is true while it hands its partitions over before leaving.
	Leaving bool
	// Session is its session id (the origin of its invocations).
	Session uint64
}

func (mi MemberInfo) partitionMember() partition.Member {
	return partition.Member{Name: mi.Name, Addr: mi.Addr, Zone: mi.Zone, Host: mi.Host}
}

// older reports whether a is older than b (coordinator order).
func older(a, b MemberInfo) bool {
	if !a.Started.Equal(b.Started) {
		return a.Started.Before(b.Started)
	}
	return a.Name < b.Name
}

func nodeInfo(n *memberlist.Node) (MemberInfo, bool) {
	meta, err := decodeMeta(n.Meta)
	if err != nil || meta.Addr == "" {
		return MemberInfo{}, false
	}
	return MemberInfo{
		Name:       n.Name,
		Addr:       meta.Addr,
		GossipAddr: n.Address(),
		Zone:       meta.Zone,
		Host:       meta.Host,
		Started:    time.Unix(0, meta.Started),
		Leaving:    meta.Leaving,
		Session:    meta.Session,
	}, true
}

// EventType is the kind of a membership event.
type EventType int

// Membership event types.
const (
	// MemberJoined: a member joined (or came back).
	MemberJoined EventType = iota + 1
	// MemberLeft: a member left gracefully.
	MemberLeft
	// MemberFailed: a member stopped answering and was declared dead.
	MemberFailed
	// MemberUpdated: a member changed its metadata (e.g. started leaving).
	MemberUpdated
	// PartitionsLost: every replica of some partitions was lost; they
	// start again empty. Event.Lost names them.
	PartitionsLost
	// QuorumLost: this member no longer sees a majority of the cluster's
	// expected size. Event.Quorum says how many it sees and needs.
	QuorumLost
	// QuorumRegained: this member sees a majority again.
	QuorumRegained
	// MergeReported: after a heal this member let go of partitions it
	// owned on the losing side of a split; Event.Merge says what the
	// merge did with their structures (also sent on the system event
	// stream sysop.MergeStream).
	MergeReported
)

// String names the event type.
func (t EventType) String() string {
	switch t {
	case MemberJoined:
		return "joined"
	case MemberLeft:
		return "left"
	case MemberFailed:
		return "failed"
	case MemberUpdated:
		return "updated"
	case PartitionsLost:
		return "partitions-lost"
	case QuorumLost:
		return "quorum-lost"
	case QuorumRegained:
		return "quorum-regained"
	case MergeReported:
		return "merge-reported"
	}
	return "unknown"
}

// Event is a membership change, delivered to subscribers.
type Event struct {
	Type   EventType
	Member MemberInfo
	// Lost is set for PartitionsLost events.
	Lost *PartitionLost
	// Quorum is set for QuorumLost and QuorumRegained events.
	Quorum *quorum.Decision
	// Merge is set for MergeReported events.
	Merge *sysop.MergeReport
	Time  time.Time
}

// delegate implements memberlist's Delegate and EventDelegate. memberlist
// calls EventDelegate methods from one goroutine at a time; NodeMeta may be
// called concurrently with them.
type delegate struct {
	m *Member
}

func (d delegate) NodeMeta(limit int) []byte {
	d.m.metaMu.Lock()
	defer d.m.metaMu.Unlock()
	b, err := d.m.meta.encode()
	if err != nil || len(b) > limit {
		return nil
	}
	return b
}
func (d delegate) NotifyMsg([]byte)                           {}
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d delegate) LocalState(join bool) []byte                { return nil }
func (d delegate) MergeRemoteState(buf []byte, join bool)     {}

// NotifyAlive refuses a node, learned by gossip or a join, that must not
// become a peer: see admit. It implements memberlist.AliveDelegate.
func (d delegate) NotifyAlive(n *memberlist.Node) error {
	return d.m.admit(n, false)
}

// NotifyMerge refuses a join (of this member to a cluster, or of another
// member to ours) when any live node of the other side would be refused.
// Both sides of a join run it, each on the other's node list; the refusal
// is recorded so that a joining member stops retrying and reports why. It
// implements memberlist.MergeDelegate.
func (d delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, n := range peers {
		if n.State != memberlist.StateAlive && n.State != memberlist.StateSuspect {
			continue // a dead or departed node may come back under its name
		}
		if err := d.m.admit(n, true); err != nil {
			d.m.refuse(err)
			return err
		}
	}
	return nil
}

func (d delegate) NotifyJoin(n *memberlist.Node)   { d.m.onNode(MemberJoined, n) }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.m.onNode(MemberUpdated, n) }

// NotifyLeave is called both for members that left and for members
// declared dead; memberlist does not set Node.State, so a member that
// announced it was leaving (metadata) counts as left, any other as failed.
func (d delegate) NotifyLeave(n *memberlist.Node) {
	if d.m.wasLeaving(n.Name) {
		d.m.onNode(MemberLeft, n)
	} else {
		d.m.onNode(MemberFailed, n)
	}
}

// boundTransport is memberlist's TCP/UDP transport whose outgoing TCP
// connections are bound to the member's own IP, so that network faults that
// filter by source address (iptables) catch all of the member's traffic.
type boundTransport struct {
	*memberlist.NetTransport
	dialer net.Dialer
}

// DialTimeout dials from the member's own IP.
func (t *boundTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := t.dialer
	d.Timeout = timeout
	return d.Dial("tcp", addr)
}

// DialAddressTimeout dials from the member's own IP.
func (t *boundTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// slogWriter forwards memberlist's log lines to slog at debug level (or warn
// for its [WARN]/[ERR] lines). Members give it a rate-limited logger:
// memberlist logs a line for each malformed packet, so anyone who can send
// UDP to the gossip port could otherwise flood the log.
type slogWriter struct{ l *slog.Logger }

// Write logs one memberlist line.
func (w slogWriter) Write(p []byte) (int, error) {
	s := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(s, "[ERR]"), strings.Contains(s, "[WARN]"):
		w.l.Warn("memberlist", "msg", s)
	default:
		w.l.Debug("memberlist", "msg", s)
	}
	return len(p), nil
}

var _ io.Writer = slogWriter{}

func (m *Member) memberlistConfig(bindIP net.IP, bindPort int) (*memberlist.Config, error) {
	g := m.cfg.Gossip
	mc := memberlist.DefaultLANConfig()
	mc.Name = m.cfg.Name
	mc.BindAddr = bindIP.String()
	mc.BindPort = bindPort
	mc.AdvertiseAddr = ""
	mc.AdvertisePort = 0
	if m.cfg.AdvertiseAddr != "" {
		ip, port, err := splitHostPort(m.cfg.AdvertiseAddr)
		if err != nil {
			return nil, err
		}
		mc.AdvertiseAddr = ip.String()
		mc.AdvertisePort = port
	}
	mc.ProbeInterval = g.ProbeInterval
	mc.ProbeTimeout = g.ProbeTimeout
	mc.SuspicionMult = g.SuspicionMult
	mc.GossipInterval = g.GossipInterval
	mc.PushPullInterval = g.PushPullInterval
	mc.DeadNodeReclaimTime = g.DeadNodeReclaimTime
	mc.TCPTimeout = 4 * g.ProbeInterval
	if mc.TCPTimeout < time.Second {
		mc.TCPTimeout = time.Second
	}
	kr, err := gossipKeyring(m.cfg.ClusterKeys)
	if err != nil {
		return nil, fmt.Errorf("%w: gossip keyring: %v", ErrConfig, err)
	}
	if kr != nil {
		// Every packet and stream is encrypted and authenticated (AES-GCM)
		// with the primary key; any key of the ring decrypts.
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	mc.Delegate = delegate{m}
	mc.Events = delegate{m}
	mc.Alive = delegate{m}
	mc.Merge = delegate{m}
	mc.Logger = log.New(slogWriter{slog.New(newRateLimited(m.log.Handler(), gossipLogLimit, gossipLogWindow))}, "", 0)

	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{bindIP.String()},
		BindPort:  bindPort,
		Logger:    mc.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip listen on %s: %w", m.cfg.BindAddr, err)
	}
	t := &boundTransport{NetTransport: nt}
	if !bindIP.IsUnspecified() {
		t.dialer.LocalAddr = &net.TCPAddr{IP: bindIP}
	}
	mc.Transport = t
	if bindPort == 0 {
		mc.BindPort = nt.GetAutoBindPort()
		if mc.AdvertisePort == 0 {
			mc.AdvertisePort = mc.BindPort
		}
	}
	return mc, nil
}
