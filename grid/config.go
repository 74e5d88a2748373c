package grid

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"strconv"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/quorum"
	"github.com/shoalgrid/shoal/wire"
)

// Config configures a member. The zero value of every field has a sensible
// default, so Config{} starts a single member on localhost.
type Config struct {
	// Name is the member's unique name. Default: the hostname plus the data
	// port.
	Name string
	// Cluster names the cluster; members and clients of another cluster are
	// refused at the handshake. Default "shoal".
	Cluster string
	// BindAddr is the gossip (memberlist) address, host:port. Default
	// 127.0.0.1:7946. Port 0 picks a free port.
	BindAddr string
	// AdvertiseAddr is the gossip address other members use, when it
	// differs from BindAddr (NAT, containers).
	AdvertiseAddr string
	// DataAddr is the client/member TCP address, host:port. Default
	// 127.0.0.1:5701. Port 0 picks a free port.
	DataAddr string
	// AdvertiseDataAddr is the data address published to others, when it
	// differs from DataAddr.
	AdvertiseDataAddr string
	// Join lists gossip addresses of members to join (seeds). Empty starts
	// a new cluster.
	Join []string
	// Zone and Host label the member's failure groups for replica placement.
	Zone, Host string
	// PartitionCount is the number of partitions; it must be the same on
	// every member. Default 271.
	PartitionCount int
	// Gossip tunes failure detection.
	Gossip GossipConfig
	// Limits bound key, value and frame sizes.
	Limits wire.Limits
	// Conns bound the connections a member accepts and what each may hold.
	Conns ConnLimits
	// Services are the structure services this member runs (e.g.
	// maps.Service{}). Every member of a cluster should run the same ones;
	// none is built in, and a member without services still routes, stores
	// tables and forwards requests.
	Services []op.Service
	// Profile picks the default backup counts: ProfileReliable (one
	// synchronous backup; the default) or ProfilePerformance (none).
	Profile Profile
	// Backups overrides the profile's default backup counts.
	Backups *Backups
	// StructureBackups override the backup counts of structures by name
	// pattern; the first match wins. Every member should have the same
	// rules: the partition owner's rules apply.
	StructureBackups []StructureBackups
	// Quorum is the default split-brain rule of structures: with fewer
	// members visible than it needs, operations fail with op.ErrQuorum and
	// the member does not publish tables or take partitions over. Default:
	// majority for ProfileReliable, off for ProfilePerformance.
	Quorum *quorum.Rule
	// StructureQuorum overrides the rule of structures by name pattern
	// (path.Match syntax); the first match wins. Every member should have
	// the same rules: the partition owner's rules apply.
	StructureQuorum []quorum.Pattern
	// StructureMerge sets, by structure name pattern (first match wins),
	// what a heal does with the map entries a member owned on the losing
	// side of a network split. Default MergeDiscard. Only structures whose
	// quorum rule is off can have taken writes there; the others always
	// discard (their copies there are stale).
	StructureMerge []StructureMerge
	// BackupTimeout bounds how long a mutation waits for its synchronous
	// backups before it fails with op.ErrBackupTimeout. Default 5 s.
	BackupTimeout time.Duration
	// Placement spreads the replicas of a partition over distinct members
	// (default), hosts or zones (see Zone and Host).
	Placement partition.Placement
	// MigrationParallelism bounds concurrent partition copies and
	// hand-overs. Default 4.
	MigrationParallelism int
	// ShutdownTimeout bounds the graceful hand-over in Shutdown when the
	// caller's context has no deadline. Default 30 s.
	ShutdownTimeout time.Duration
	// SessionTTL is how long this member's session lives without a
	// heartbeat (it heartbeats every third of it). When a member is
	// declared dead its session ends at once; the TTL matters when the
	// member is alive but cut off. Default 2 s.
	SessionTTL time.Duration
	// MaxMemory is the member's memory guard, in bytes; 0 turns it off.
	// While the Go heap in use (sampled every 50 ms) is above it, this
	// member, as owner, refuses the operations that may grow state (map
	// puts, queue offers, idempotency claims: see op.Grower) with
	// op.ErrMapFull before applying them. Reads, deletes and clears keep
	// working, and backups never refuse what an owner applied, so replicas
	// do not diverge. Leave headroom below the process's real limit: the
	// heap can overshoot by what arrives within one sample, and the
	// process holds more than its heap (stacks, buffers, runtime).
	MaxMemory int64
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger

	// ClusterKeys are the cluster's shared secrets, each at least
	// MinClusterKeySize random bytes. With them, members prove a key to
	// each other in the handshake (HMAC challenge-response) and member-only
	// operations are refused to every connection that did not, and gossip
	// is encrypted and authenticated with a key derived from each
	// (memberlist keyring). The first key is used; the others are also
	// accepted, for rotation (see docs/security.md). Without keys any peer
	// that can reach the data port may act as a member: keep it private.
	ClusterKeys [][]byte
	// Tokens, when set, are the only client credentials accepted: a client
	// without one of them is refused at the handshake with
	// op.ErrUnauthenticated, and each operation needs the role its token
	// grants on the structure (op.ErrForbidden otherwise). Tokens require
	// ClusterKeys. Without tokens every client may do everything.
	Tokens []Token
	// TLS, when set, is the server configuration of the data port (set
	// ClientAuth and ClientCAs for mutual TLS); PeerTLS is then the client
	// configuration this member dials the others with (RootCAs, and
	// Certificates when the others require client certificates).
	TLS, PeerTLS *tls.Config
}

// ConnLimits bound what peers can make a member hold on its data port:
// connections, handshakes, idle connections and requests in flight. Zero
// fields take the defaults.
type ConnLimits struct {
	// MaxConns bounds the connections open on the data port, counting
	// those still in the handshake. More are closed as soon as they are
	// accepted. Keep it under the process's file descriptor limit
	// (ulimit -n). Default 10,000.
	MaxConns int
	// MaxConnsPerAddr bounds the connections open from one IP address.
	// Default 1,000.
	MaxConnsPerAddr int
	// HandshakeTimeout bounds the handshake of an accepted connection.
	// Default 5 s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes an accepted connection on which nothing arrived
	// for between one and two IdleTimeouts while no request was in flight.
	// Clients and members ping quiet connections every
	// wire.DefaultKeepAlive (30 s), so it must stay well above that.
	// Default 2 min; negative disables it.
	IdleTimeout time.Duration
	// MaxInFlight bounds the requests of one client connection that are
	// being served (see wire.Options.MaxInFlight): at the limit the member
	// stops reading from that connection until it answers one. Default 32.
	MaxInFlight int
}

// Default connection limits.
const (
	DefaultMaxConns         = 10000
	DefaultMaxConnsPerAddr  = 1000
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultIdleTimeout      = 2 * time.Minute
	DefaultMaxInFlight      = 32
)

func (l ConnLimits) withDefaults() ConnLimits {
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.MaxConnsPerAddr <= 0 {
		l.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.MaxInFlight <= 0 {
		l.MaxInFlight = DefaultMaxInFlight
	}
	return l
}

// GossipConfig tunes memberlist's SWIM failure detector and the reconnect
// loop. Defaults suit a LAN: a crashed member is declared dead in about 2-3
// seconds.
type GossipConfig struct {
	// ProbeInterval is how often each member probes a random other member.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for an ack.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspect member has to refute before
	// it is declared dead.
	SuspicionMult int
	// GossipInterval is how often gossip messages are sent.
	GossipInterval time.Duration
	// PushPullInterval is how often full state is exchanged.
	PushPullInterval time.Duration
	// ReconnectInterval is how often failed members and seeds are re-joined,
	// so that a healed network partition merges again.
	ReconnectInterval time.Duration
	// ReconnectTimeout is how long a failed member is retried.
	ReconnectTimeout time.Duration
	// DeadNodeReclaimTime lets a member restarted under the same name on a
	// new address rejoin after this long instead of being refused.
	DeadNodeReclaimTime time.Duration
}

// LANGossip returns timings for a LAN: probe every 500 ms, failure detected
// in about 2-3 s.
func LANGossip() GossipConfig {
	return GossipConfig{
		ProbeInterval:       500 * time.Millisecond,
		ProbeTimeout:        250 * time.Millisecond,
		SuspicionMult:       3,
		GossipInterval:      100 * time.Millisecond,
		PushPullInterval:    15 * time.Second,
		ReconnectInterval:   5 * time.Second,
		ReconnectTimeout:    time.Hour,
		DeadNodeReclaimTime: 2 * time.Second,
	}
}

// FastGossip returns timings for tests on one machine: a crash is detected
// in about one second.
func FastGossip() GossipConfig {
	return GossipConfig{
		ProbeInterval:       200 * time.Millisecond,
		ProbeTimeout:        100 * time.Millisecond,
		SuspicionMult:       2,
		GossipInterval:      50 * time.Millisecond,
		PushPullInterval:    5 * time.Second,
		ReconnectInterval:   500 * time.Millisecond,
		ReconnectTimeout:    time.Minute,
		DeadNodeReclaimTime: 500 * time.Millisecond,
	}
}

func (g GossipConfig) withDefaults() GossipConfig {
	d := LANGossip()
	if g.ProbeInterval <= 0 {
		g.ProbeInterval = d.ProbeInterval
	}
	if g.ProbeTimeout <= 0 {
		g.ProbeTimeout = d.ProbeTimeout
	}
	if g.SuspicionMult <= 0 {
		g.SuspicionMult = d.SuspicionMult
	}
	if g.GossipInterval <= 0 {
		g.GossipInterval = d.GossipInterval
	}
	if g.PushPullInterval <= 0 {
		g.PushPullInterval = d.PushPullInterval
	}
	if g.ReconnectInterval <= 0 {
		g.ReconnectInterval = d.ReconnectInterval
	}
	if g.ReconnectTimeout <= 0 {
		g.ReconnectTimeout = d.ReconnectTimeout
	}
	if g.DeadNodeReclaimTime <= 0 {
		g.DeadNodeReclaimTime = d.DeadNodeReclaimTime
	}
	return g
}

// Defaults for Config.
const (
	DefaultBindAddr = "127.0.0.1:7946"
	DefaultDataAddr = "127.0.0.1:5701"
	DefaultCluster  = "shoal"
	// DefaultSessionTTL is the default session TTL of members and clients
	// (see Config.SessionTTL): with LAN failure detection (2-3 s) a
	// crashed process's holds are released within about 3 s.
	DefaultSessionTTL = 2 * time.Second
	// MinSessionTTL is the shortest Config.SessionTTL accepted: a session
	// heartbeats every third of its TTL, and shorter periods would spend
	// the member on heartbeats.
	MinSessionTTL = 30 * time.Millisecond
)

// ErrConfig is wrapped by configuration errors.
var ErrConfig = errors.New("grid: invalid config")

// withDefaults returns a copy of c with defaults filled in, or an error
// describing the first invalid field.
func (c Config) withDefaults() (Config, error) {
	if c.Cluster == "" {
		c.Cluster = DefaultCluster
	}
	if c.BindAddr == "" {
		c.BindAddr = DefaultBindAddr
	}
	if c.DataAddr == "" {
		c.DataAddr = DefaultDataAddr
	}
	if c.PartitionCount == 0 {
		c.PartitionCount = partition.DefaultCount
	}
	if c.PartitionCount < 1 || c.PartitionCount > 1<<16 {
		return c, fmt.Errorf("%w: partition count %d out of range 1..65536", ErrConfig, c.PartitionCount)
	}
	if c.Backups == nil {
		b, err := c.Profile.defaults()
		if err != nil {
			return c, err
		}
		c.Backups = &b
	} else if _, err := c.Profile.defaults(); err != nil {
		return c, err
	}
	if err := c.Backups.validate("default"); err != nil {
		return c, err
	}
	for _, s := range c.StructureBackups {
		if _, err := path.Match(s.Pattern, ""); err != nil || s.Pattern == "" {
			return c, fmt.Errorf("%w: structure pattern %q is not valid", ErrConfig, s.Pattern)
		}
		if err := s.validate("pattern " + s.Pattern); err != nil {
			return c, err
		}
	}
	if c.Quorum == nil {
		r := quorum.Rule{Mode: quorum.Majority}
		if c.Profile == ProfilePerformance {
			r = quorum.Rule{Mode: quorum.Off}
		}
		c.Quorum = &r
	}
	if c.Quorum.Mode == quorum.Fixed && c.Quorum.Min < 1 {
		return c, fmt.Errorf("%w: quorum minimum size %d", ErrConfig, c.Quorum.Min)
	}
	if _, err := quorum.NewRules(*c.Quorum, c.StructureQuorum); err != nil {
		return c, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	for _, s := range c.StructureMerge {
		if _, err := path.Match(s.Pattern, ""); err != nil || s.Pattern == "" {
			return c, fmt.Errorf("%w: merge pattern %q is not valid", ErrConfig, s.Pattern)
		}
		if _, err := ParseMergePolicy(string(s.Policy)); err != nil {
			return c, err
		}
	}
	if c.BackupTimeout <= 0 {
		c.BackupTimeout = 5 * time.Second
	}
	if c.Placement > partition.ZoneAware {
		return c, fmt.Errorf("%w: unknown placement %d", ErrConfig, c.Placement)
	}
	if c.MigrationParallelism <= 0 {
		c.MigrationParallelism = 4
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.SessionTTL < MinSessionTTL {
		return c, fmt.Errorf("%w: session TTL %v is below %v", ErrConfig, c.SessionTTL, MinSessionTTL)
	}
	if c.MaxMemory < 0 {
		return c, fmt.Errorf("%w: max memory %d is negative", ErrConfig, c.MaxMemory)
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Gossip = c.Gossip.withDefaults()
	c.Limits = c.Limits.WithDefaults()
	c.Conns = c.Conns.withDefaults()
	for _, a := range []struct{ name, v string }{{"bind", c.BindAddr}, {"addr", c.DataAddr}, {"advertise", c.AdvertiseAddr}, {"advertise-addr", c.AdvertiseDataAddr}} {
		if a.v == "" {
			continue
		}
		if _, _, err := splitHostPort(a.v); err != nil {
			return c, fmt.Errorf("%w: %s address %q: %v", ErrConfig, a.name, a.v, err)
		}
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return c, fmt.Errorf("%w: join address %q: %v", ErrConfig, j, err)
		}
	}
	return c, nil
}

func splitHostPort(addr string) (net.IP, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, 0, fmt.Errorf("bad port %q", port)
	}
	if host == "" {
		return net.IPv4zero, p, nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		ips, err := net.LookupIP(host)
		if err != nil || len(ips) == 0 {
			return nil, 0, fmt.Errorf("cannot resolve %q", host)
		}
		ip = ips[0]
	}
	return ip, p, nil
}
