// Package grid is a Shoal cluster member: membership (memberlist gossip),
// the partition table agreed through one coordinator, per-partition
// execution of structure operations, the TCP server that clients and other
// members talk to, forwarding and retries, and partition migration. All of
// Shoal's IO lives here; the structure packages (maps, ...) are pure state
// machines plus proxies over op.Invoker, which *Member implements. grid
// imports no structure package: the program that starts a member registers
// the services it runs in Config.Services.
package grid

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/internal/evsub"
	"github.com/shoalgrid/shoal/internal/invoke"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/sysop"
	"github.com/shoalgrid/shoal/wire"
)

// Member is one running cluster member. It implements op.Invoker, so
// structure proxies work on it directly: maps.New(member, "users") (with
// maps.Service{} in Config.Services).
type Member struct {
	cfg     Config
	sec     *security
	log     *slog.Logger
	started time.Time
	bindIP  net.IP
	// recordDecoders recycles backup-record decoders (backup.Decoder).
	recordDecoders sync.Pool
	// legacyRecords makes this owner send records as sysBackup requests,
	// as to a member without wire.CapRecords (a test hook).
	legacyRecords atomic.Bool
	// backupDial, when set, opens the links of later probe-or-copy rounds
	// to backups instead of member connections (a test hook: the
	// in-memory transport of backup/backuptest).
	backupDial atomic.Pointer[func(p int32, backup string) backup.Transport]

	metaMu sync.Mutex
	meta   nodeMeta

	ml         *memberlist.Memberlist
	ln         net.Listener
	dataAddr   string // advertised data address
	gossipAddr string

	services  []op.Service
	svcIndex  map[string]int
	wide      *wide // replicated (member-wide) services, see replicated.go
	slots     []*slot
	table     atomic.Pointer[partition.Table]
	tableMu   sync.Mutex // serialises adoption
	tableCond chan struct{}

	peers    *peers
	counters counters
	latency  *latencies // per service and operation, see latency.go

	restoreMu sync.Mutex
	restores  map[string]*backup.Assembly

	resyncMu sync.Mutex
	// resyncPending holds the jobs in resyncQueue (queued, not started).
	resyncPending map[resyncJob]bool
	resyncQueue   []resyncJob
	resyncKick    chan struct{}
	syncIDs       atomic.Uint64

	// lastTick and fenced implement pause fencing (see pauseWatch).
	lastTick  atomic.Int64
	fenced    atomic.Bool
	fenceKick chan struct{}

	// mem is the memory guard (nil when Config.MaxMemory is 0) and
	// growers the services' op.Grower, by service index (nil: never
	// refused).
	mem     *memGuard
	growers []op.Grower
	backups *backupRules
	// timers holds parked-call deadlines and state timers (timerLoop).
	timers *timerHeap
	// events holds the subscriptions to structure events (Emit), lsubs
	// the embedded ones (SubscribeEvents), connTab what is tracked per
	// remote connection (parked calls, subscriptions).
	events  *eventHub
	lsubs   *evsub.Registry
	connTab connTable
	// sess is the member's session, whose id is the origin of its
	// invocations (numbered by callSeq), and the session machinery.
	sess    *sessions
	callSeq atomic.Uint64
	pulling atomic.Bool
	// loop is the route-and-retry loop of Invoke, InvokeAll and
	// InvokeMany (shared with the client, see internal/invoke).
	loop *invoke.Loop

	connsMu sync.Mutex
	conns   map[*wire.Conn]struct{}
	// open counts the accepted connections not yet closed (handshake
	// included), in total and per remote IP, under connsMu.
	open       int
	openPerIP  map[string]int
	refusedLog *slog.Logger
	// forwarding maps a connection to its forwarding semaphore
	// (forwardSlots).
	forwarding sync.Map

	subsMu sync.Mutex
	subs   map[chan Event]struct{}

	failedMu sync.Mutex
	failed   map[string]failedNode

	// view is the live membership, copied from memberlist's event
	// callbacks: memberlist.Members() returns nodes that its own
	// goroutines keep mutating, so reading them later races.
	viewMu sync.Mutex
	view   map[string]MemberInfo

	coord  *coordinator
	quorum *quorumState
	votes  votes // coordinator terms granted (see term.go)

	// selfGossip is this member's gossip address once memberlist started;
	// joining is true while Start joins the seeds, and refused records why
	// the cluster refused this member (see admit).
	selfGossip atomic.Pointer[string]
	joining    atomic.Bool
	refusedMu  sync.Mutex
	refused    error

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closed    atomic.Bool
	closeOnce sync.Once
	leaving   atomic.Bool
}

type failedNode struct {
	addr  string
	since time.Time
}

// Start starts a member: it listens for clients and members on DataAddr,
// starts gossip on BindAddr and joins the seeds in Join (if any). It returns
// once the member is listening and has joined (or started) a cluster; the
// partition table arrives shortly after (see WaitReady).
func Start(ctx context.Context, cfg Config) (*Member, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	sec, err := newSecurity(cfg)
	if err != nil {
		return nil, err
	}
	bindIP, _, err := splitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: bind address: %v", ErrConfig, err)
	}
	dataIP, _, err := splitHostPort(cfg.DataAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: data address: %v", ErrConfig, err)
	}
	ln, err := net.Listen("tcp", cfg.DataAddr)
	if err != nil {
		return nil, fmt.Errorf("grid: listen on %s: %w", cfg.DataAddr, err)
	}
	dataAddr := ln.Addr().String()
	if cfg.AdvertiseDataAddr != "" {
		dataAddr = cfg.AdvertiseDataAddr
	} else if dataIP.IsUnspecified() {
		// Listening on every interface: publish an address others can
		// dial.
		_, port, _ := net.SplitHostPort(dataAddr)
		dataAddr = net.JoinHostPort(reachableIP(bindIP, cfg.AdvertiseAddr).String(), port)
	}
	if cfg.Name == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "member"
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		cfg.Name = host + "-" + port
	}

	mctx, cancel := context.WithCancel(context.Background())
	m := &Member{
		cfg:      cfg,
		sec:      sec,
		log:      cfg.Logger.With("member", cfg.Name),
		started:  time.Now(),
		bindIP:   bindIP,
		ln:       ln,
		dataAddr: dataAddr,
		svcIndex: map[string]int{},
		conns:    map[*wire.Conn]struct{}{},
		subs:     map[chan Event]struct{}{},
		failed:   map[string]failedNode{},
		view:     map[string]MemberInfo{},

		resyncPending: map[resyncJob]bool{},
		resyncKick:    make(chan struct{}, 1),
		fenceKick:     make(chan struct{}, 1),
		restores:      map[string]*backup.Assembly{},
		tableCond:     make(chan struct{}),
		ctx:           mctx,
		cancel:        cancel,
	}
	// Refused connections are logged, but an attacker controls how many.
	m.refusedLog = slog.New(newRateLimited(m.log.Handler(), gossipLogLimit, gossipLogWindow))
	m.meta = nodeMeta{Addr: dataAddr, Zone: cfg.Zone, Host: cfg.Host, Started: m.started.UnixNano(), Proto: metaProto,
		Cluster: cfg.Cluster, Partitions: cfg.PartitionCount}
	if _, err := m.meta.encode(); err != nil {
		ln.Close()
		cancel()
		return nil, err
	}
	m.svcIndex[sysop.SessionService] = 0
	m.services = append(m.services, sessionService{})
	m.wide = newWide()
	for _, s := range cfg.Services {
		_, dup := m.svcIndex[s.Name()]
		if dup || m.wide.svcs[s.Name()] != nil || s.Name() == "" || s.Name()[0] == '_' {
			ln.Close()
			cancel()
			return nil, fmt.Errorf("%w: service name %q is empty, reserved or registered twice", ErrConfig, s.Name())
		}
		if rs, ok := s.(op.ReplicatedService); ok {
			m.wide.add(rs, cfg.Name)
			continue
		}
		m.svcIndex[s.Name()] = len(m.services)
		m.services = append(m.services, s)
	}
	m.mem = newMemGuard(cfg.MaxMemory)
	m.growers = make([]op.Grower, len(m.services))
	for i, s := range m.services {
		m.growers[i], _ = s.(op.Grower)
	}
	m.backups = newBackupRules(cfg)
	m.timers = newTimerHeap()
	m.events = newEventHub(m)
	m.lsubs = &evsub.Registry{Self: cfg.Name, Log: m.log, Conn: func(ctx context.Context, mb partition.Member) (*wire.Conn, error) {
		return m.peers.get(ctx, mb.Name, mb.Addr)
	}}
	m.connTab.conns = map[*wire.Conn]*connState{}
	m.sess = newSessions(m)
	m.newLoop()
	m.meta.Session = m.sess.id.Load()
	m.quorum = newQuorumState(cfg)
	m.latency = newMemberLatencies(m.services)
	m.lastTick.Store(time.Now().UnixNano())
	m.slots = make([]*slot, cfg.PartitionCount)
	for i := range m.slots {
		m.slots[i] = &slot{id: int32(i), role: -1, partial: true, states: make([]op.State, len(m.services))}
	}
	localIP := dataIP
	if localIP.IsUnspecified() {
		localIP = nil
	}
	m.peers = newPeers(m, localIP)
	m.coord = newCoordinator(m)

	m.wg.Add(1)
	go m.acceptLoop()

	_, bindPort, _ := splitHostPort(cfg.BindAddr)
	mc, err := m.memberlistConfig(bindIP, bindPort)
	if err != nil {
		m.Close()
		return nil, err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		mc.Transport.Shutdown()
		m.Close()
		return nil, fmt.Errorf("grid: start gossip on %s: %w", cfg.BindAddr, err)
	}
	m.ml = ml
	m.gossipAddr = ml.LocalNode().Address() // read once: memberlist mutates the node later
	m.selfGossip.Store(&m.gossipAddr)
	m.log.Info("member started", "gossip", m.gossipAddr, "data", dataAddr, "partitions", cfg.PartitionCount, "cluster", cfg.Cluster,
		"cluster_key", len(cfg.ClusterKeys) > 0, "tls", cfg.TLS != nil, "tokens", len(cfg.Tokens))

	if len(cfg.Join) > 0 {
		m.joining.Store(true)
		err := m.join(ctx, cfg.Join)
		m.joining.Store(false)
		if err != nil {
			m.Close()
			return nil, err
		}
		// Age counts from joining: a member that spent a while retrying
		// its seeds must not take over coordination from the members that
		// were already serving.
		m.metaMu.Lock()
		m.meta.Started = time.Now().UnixNano()
		m.metaMu.Unlock()
		if err := m.ml.UpdateNode(time.Second); err != nil {
			m.log.Warn("announce start time", "err", err)
		}
	}
	m.wg.Add(12 + cfg.MigrationParallelism)
	go m.wideLoop()
	go m.subsLoop()
	go m.timerLoop()
	go m.heartbeatLoop()
	go m.broadcastLoop()
	go m.coord.run()
	go m.leaseLoop()
	go m.reconnectLoop()
	go m.sweepLoop()
	go m.waitLoop()
	go m.pauseWatch()
	go m.unfenceLoop()
	for range cfg.MigrationParallelism {
		go m.resyncWorker()
	}
	m.coord.trigger()
	return m, nil
}

// reachableIP picks the IP to publish for a wildcard data address: the
// gossip advertise or bind IP when set, else the first non-loopback IPv4
// address of this host, else loopback.
func reachableIP(bindIP net.IP, advertise string) net.IP {
	if advertise != "" {
		if ip, _, err := splitHostPort(advertise); err == nil && !ip.IsUnspecified() {
			return ip
		}
	}
	if !bindIP.IsUnspecified() {
		return bindIP
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return ipn.IP
			}
		}
	}
	return net.IPv4(127, 0, 0, 1)
}

// join contacts the seeds until one answers or ctx ends.
func (m *Member) join(ctx context.Context, seeds []string) error {
	backoff := 100 * time.Millisecond
	for {
		n, err := m.ml.Join(seeds)
		if rerr := m.refusal(); rerr != nil {
			return rerr
		}
		if n > 0 {
			m.log.Info("joined cluster", "seeds", seeds, "contacted", n)
			return nil
		}
		if isKeyMismatch(err) {
			return fmt.Errorf("grid: join %v: %w (%v)", seeds, ErrClusterKey, err)
		}
		m.log.Warn("join failed, retrying", "seeds", seeds, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("grid: join %v: %w (last error: %v)", seeds, op.FromContext(ctx), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// Name returns the member's name.
func (m *Member) Name() string { return m.cfg.Name }

// Addr returns the member's advertised data (client) address.
func (m *Member) Addr() string { return m.dataAddr }

// GossipAddr returns the member's gossip address.
func (m *Member) GossipAddr() string { return m.gossipAddr }

// PartitionCount returns the number of partitions.
func (m *Member) PartitionCount() int { return m.cfg.PartitionCount }

// PartitionOf returns the partition of key.
func (m *Member) PartitionOf(key string) int32 { return partition.ID(key, m.cfg.PartitionCount) }

// Table returns the partition table this member currently follows, or nil
// before the first table arrived.
func (m *Member) Table() *partition.Table { return m.table.Load() }

// Members returns the live members as this member's gossip sees them,
// sorted by name.
func (m *Member) Members() []MemberInfo {
	m.viewMu.Lock()
	out := make([]MemberInfo, 0, len(m.view))
	for _, mi := range m.view {
		out = append(out, mi)
	}
	m.viewMu.Unlock()
	slices.SortFunc(out, func(a, b MemberInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// IsCoordinator reports whether this member is the oldest live member, the
// one that publishes partition tables.
func (m *Member) IsCoordinator() bool {
	c, ok := m.coordinatorInfo()
	return ok && c.Name == m.cfg.Name
}

func (m *Member) coordinatorInfo() (MemberInfo, bool) {
	var best MemberInfo
	found := false
	for _, mi := range m.Members() {
		if !found || older(mi, best) {
			best, found = mi, true
		}
	}
	return best, found
}

// WaitReady waits until this member has a partition table that includes it
// and no migration involving it is pending, or ctx ends.
func (m *Member) WaitReady(ctx context.Context) error {
	for {
		ch := m.tableChanged()
		if t := m.Table(); t != nil {
			if _, ok := t.Member(m.cfg.Name); ok {
				return nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("grid: wait for partition table: %w", op.FromContext(ctx))
		case <-m.ctx.Done():
			return fmt.Errorf("grid: wait for partition table: %w", op.ErrClosed)
		}
	}
}

// tableChanged returns a channel closed at the next table adoption.
func (m *Member) tableChanged() <-chan struct{} {
	m.tableMu.Lock()
	defer m.tableMu.Unlock()
	return m.tableCond
}

// Subscribe returns a channel of membership events and a function that ends
// the subscription. Events are dropped (and logged) when the subscriber
// falls more than buffer events behind; buffer < 1 means 64.
func (m *Member) Subscribe(buffer int) (<-chan Event, func()) {
	if buffer < 1 {
		buffer = 64
	}
	ch := make(chan Event, buffer)
	m.subsMu.Lock()
	m.subs[ch] = struct{}{}
	m.subsMu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			m.subsMu.Lock()
			delete(m.subs, ch)
			m.subsMu.Unlock()
			close(ch)
		})
	}
}

func (m *Member) wasLeaving(name string) bool {
	m.viewMu.Lock()
	defer m.viewMu.Unlock()
	return m.view[name].Leaving
}

// onNode runs inside memberlist's event callbacks, which memberlist calls
// one at a time while it holds its node lock: n may be read here only.
func (m *Member) onNode(t EventType, n *memberlist.Node) {
	mi, ok := nodeInfo(n)
	if !ok {
		mi = MemberInfo{Name: n.Name, GossipAddr: n.Address()}
	}
	m.viewMu.Lock()
	switch t {
	case MemberJoined, MemberUpdated:
		if ok {
			m.view[n.Name] = mi
		}
	case MemberLeft, MemberFailed:
		delete(m.view, n.Name)
	}
	m.viewMu.Unlock()
	if n.Name != m.cfg.Name {
		switch t {
		case MemberJoined:
			m.log.Info("member joined", "peer", n.Name, "gossip", n.Address(), "data", mi.Addr)
		case MemberLeft:
			m.log.Info("member left", "peer", n.Name)
		case MemberFailed:
			m.log.Warn("member failed", "peer", n.Name, "gossip", n.Address())
		case MemberUpdated:
			m.log.Info("member updated", "peer", n.Name, "leaving", mi.Leaving)
		}
	}
	m.failedMu.Lock()
	switch t {
	case MemberFailed:
		m.failed[n.Name] = failedNode{addr: n.Address(), since: time.Now()}
	case MemberJoined, MemberLeft:
		delete(m.failed, n.Name)
	}
	m.failedMu.Unlock()
	if t == MemberFailed || t == MemberLeft {
		m.peers.drop(n.Name)
		// The coordinator ends a departed member's session at once: its
		// holds are released without waiting for the session's TTL.
		if ok && mi.Session != 0 && n.Name != m.cfg.Name && m.IsCoordinator() {
			id := mi.Session
			m.spawn(func() { m.endSession(id) })
		}
	}
	switch t {
	case MemberLeft:
		m.noteLeft(n.Name, true)
	case MemberJoined:
		m.noteLeft(n.Name, false)
	}
	m.wideOnNode(t, n.Name)
	m.refreshQuorum()
	ev := Event{Type: t, Member: mi, Time: time.Now()}
	m.subsMu.Lock()
	for ch := range m.subs {
		select {
		case ch <- ev:
		default:
			m.log.Warn("membership subscriber is too slow, event dropped", "event", t.String(), "peer", n.Name)
		}
	}
	m.subsMu.Unlock()
	if m.coord != nil {
		m.coord.trigger()
	}
}

// declaredFailed reports whether the failure detector declared member
// name dead (and it has not rejoined since).
func (m *Member) declaredFailed(name string) bool {
	m.failedMu.Lock()
	defer m.failedMu.Unlock()
	_, ok := m.failed[name]
	return ok
}

// reconnectLoop periodically re-joins members that failed (not those that
// left) and, while alone, the seeds: memberlist does not re-merge after a
// healed network partition by itself.
func (m *Member) reconnectLoop() {
	defer m.wg.Done()
	tick := time.NewTicker(m.cfg.Gossip.ReconnectInterval)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C:
		}
		var addrs []string
		now := time.Now()
		m.failedMu.Lock()
		for name, f := range m.failed {
			if now.Sub(f.since) > m.cfg.Gossip.ReconnectTimeout {
				delete(m.failed, name)
				continue
			}
			addrs = append(addrs, f.addr)
		}
		m.failedMu.Unlock()
		if len(m.Members()) <= 1 {
			addrs = append(addrs, m.cfg.Join...)
		}
		if len(addrs) == 0 || m.leaving.Load() {
			continue
		}
		if n, err := m.ml.Join(addrs); n > 0 {
			m.log.Info("reconnected", "contacted", n)
		} else if err != nil {
			m.log.Debug("reconnect failed", "addrs", addrs, "err", err)
		}
	}
}

// waitLoop fails the mutations whose synchronous backups did not
// acknowledge them within BackupTimeout (one loop instead of a timer per
// mutation). It checks every eighth of the timeout, so a mutation fails
// at most 12.5% late.
func (m *Member) waitLoop() {
	defer m.wg.Done()
	every := min(max(m.cfg.BackupTimeout/8, 5*time.Millisecond), 250*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-tick.C:
			for _, s := range m.slots {
				s.expireWaits(now, m.cfg.BackupTimeout)
			}
		}
	}
}

// sweepLoop reclaims expired entries in owned partitions.
func (m *Member) sweepLoop() {
	defer m.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		for _, s := range m.slots {
			s.sweep(now, 256)
		}
		// A snapshot whose sender died mid-copy never completes.
		m.restoreMu.Lock()
		for k, rb := range m.restores {
			if now.Sub(rb.Started) > time.Minute {
				delete(m.restores, k)
			}
		}
		m.restoreMu.Unlock()
	}
}

// Shutdown leaves the cluster gracefully: it asks the coordinator to move
// this member's partitions to others, waits until none is left here (or ctx
// ends; without a deadline, ShutdownTimeout applies), then leaves gossip and
// stops. Partitions not handed over in time are lost with this member.
func (m *Member) Shutdown(ctx context.Context) error {
	if m.closed.Load() {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.cfg.ShutdownTimeout)
		defer cancel()
	}
	start := time.Now()
	owned := 0
	if t := m.Table(); t != nil {
		owned = len(t.Owned(m.cfg.Name))
	}
	m.log.Info("shutting down: handing partitions over", "owned", owned)
	m.leaving.Store(true)
	m.metaMu.Lock()
	m.meta.Leaving = true
	m.metaMu.Unlock()
	if err := m.ml.UpdateNode(time.Second); err != nil {
		m.log.Warn("announce leaving", "err", err)
	}
	m.coord.trigger()
	var handErr error
	for {
		ch := m.tableChanged()
		t := m.Table()
		left := 0
		if t != nil {
			left = len(t.Owned(m.cfg.Name)) + len(t.BackedUp(m.cfg.Name))
		}
		if left == 0 {
			m.log.Info("partitions handed over", "partitions", owned, "took", time.Since(start).Round(time.Millisecond))
			break
		}
		if m.othersAllLeaving() {
			m.log.Warn("no member stays to take the partitions: their data is discarded", "partitions", left)
			break
		}
		select {
		case <-ch:
		case <-time.After(200 * time.Millisecond):
			m.coord.poke()
			m.nudgeCoordinator()
		case <-ctx.Done():
			handErr = fmt.Errorf("grid: shutdown: %d partitions not handed over: %w", left, op.FromContext(ctx))
			m.log.Error("shutdown deadline passed before hand-over finished", "partitions_left", left)
		}
		if handErr != nil {
			break
		}
	}
	leaveTimeout := 2 * m.cfg.Gossip.ProbeInterval
	if err := m.ml.Leave(max(leaveTimeout, time.Second)); err != nil {
		m.log.Warn("gossip leave", "err", err)
	}
	m.Close()
	return handErr
}

// othersAllLeaving reports whether no other member stays in the cluster.
func (m *Member) othersAllLeaving() bool {
	for _, mi := range m.Members() {
		if mi.Name != m.cfg.Name && !mi.Leaving {
			return false
		}
	}
	return true
}

// nudgeCoordinator tells the coordinator (if another member) that this
// member is leaving, in case the metadata gossip has not reached it yet.
func (m *Member) nudgeCoordinator() {
	c, ok := m.coordinatorInfo()
	if !ok || c.Name == m.cfg.Name {
		return
	}
	ctx, cancel := context.WithTimeout(m.ctx, time.Second)
	defer cancel()
	_, _ = m.peers.call(ctx, c.Name, c.Addr, &op.Request{Service: sysService, Op: sysTrigger, Partition: -1})
}

// Close stops the member at once, without handing partitions over: to the
// cluster it looks like a crash (tests use it as one). Use Shutdown to leave
// gracefully. Close is idempotent.
func (m *Member) Close() error {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		m.cancel()
		if m.ml != nil {
			_ = m.ml.Shutdown()
		}
		_ = m.ln.Close()
		m.connsMu.Lock()
		conns := make([]*wire.Conn, 0, len(m.conns))
		for c := range m.conns {
			conns = append(conns, c)
		}
		m.connsMu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		m.peers.closeAll()
		m.wg.Wait()
		m.log.Info("member stopped")
	})
	return nil
}

func (m *Member) errClosed() error {
	return fmt.Errorf("grid: member %s: %w", m.cfg.Name, op.ErrClosed)
}

var (
	_ op.Invoker      = (*Member)(nil)
	_ op.BatchInvoker = (*Member)(nil)
	_ op.EventSource  = (*Member)(nil)
)
