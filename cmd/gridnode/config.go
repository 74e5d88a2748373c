package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	pathpkg "path"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/queues"
	"github.com/shoalgrid/shoal/quorum"
	"github.com/shoalgrid/shoal/wire"
)

// options is everything gridnode can be told, after merging the command
// line, the environment and the config file.
type options struct {
	name            string
	bind            string
	addr            string
	join            []string
	advertise       string
	advertiseAddr   string
	cluster         string
	zone            string
	host            string
	partitions      int
	config          string
	http            string
	pprof           bool // serve /debug/pprof/ on --http
	gossip          string
	probeInterval   time.Duration
	probeTimeout    time.Duration
	suspicionMult   int
	shutdownTimeout time.Duration
	joinTimeout     time.Duration
	logLevel        string
	logFormat       string
	maxValueSize    int
	maxKeySize      int
	// maxMemory is --max-memory as given (a size, a percentage or 0);
	// gridConfig resolves it.
	maxMemory string
	version   bool

	// Resource limits on what peers can make the member hold (see
	// grid.ConnLimits). idleTimeout 0 disables the idle timeout.
	maxNameSize      int
	maxConns         int
	maxConnsPerAddr  int
	maxInFlight      int
	handshakeTimeout time.Duration
	idleTimeout      time.Duration

	// Replication. backupCount and asyncBackupCount are -1 when no source
	// set them: the profile decides.
	profile          string
	backupCount      int
	asyncBackupCount int
	backupTimeout    time.Duration
	placement        string
	// sessionTTL is the member's own session TTL (grid.Config.SessionTTL).
	sessionTTL time.Duration
	// quorum is the default quorum rule ("" = from the profile).
	quorum string
	// structures are the per-structure backup rules of the config file
	// (the "structures" key); they have no flag or environment variable.
	structures []structureRule
	// queueRules are the config file's "queues" list (capacity,
	// visibility, dead letters per queue-name pattern).
	queueRules []queues.Rule
	// mapRules are the config file's "maps" list (default TTL, max
	// entries per map-name pattern).
	mapRules []maps.Rule

	// Security (see security.go). sec is loaded from the files by
	// parseOptions.
	clusterKeyFile string
	tokensFile     string
	tlsCert        string
	tlsKey         string
	tlsCA          string
	insecure       bool
	sec            securitySettings
}

// structureRule is one item of the config file's "structures" list. A
// count left out (-1) is the member's default count for that kind.
type structureRule struct {
	pattern     string
	sync, async int
	// quorum is the structure's quorum rule, "" for the member's default.
	quorum string
	// merge is the structure's merge policy after a split, "" for discard.
	merge string
}

// structuresKey is the config-file key of the per-structure backup rules.
const structuresKey = "structures"

// defaultBackupTimeout is grid's default Config.BackupTimeout.
const defaultBackupTimeout = 5 * time.Second

// envPrefix prefixes the environment variable of every flag: --probe-interval
// is SHOAL_PROBE_INTERVAL.
const envPrefix = "SHOAL_"

// commandLineOnly lists flags that the environment and the config file cannot
// set: --version is an action, and --config names the file itself (the
// environment may still give it as SHOAL_CONFIG).
var commandLineOnly = []string{"version", "config"}

// usageError is a problem with the flags, environment or config file: the
// process exits with code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// envName returns the environment variable that sets flag name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// newFlagSet registers every flag on a fresh set writing into o. Values are
// validated by their flag.Value, so the command line, the environment and
// the config file all get the same checks.
func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("gridnode", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by the caller
	fs.StringVar(&o.name, "name", "", "unique member name (default: hostname-dataport)")
	fs.Var(addrFlag(&o.bind, grid.DefaultBindAddr, false), "bind", "gossip `host:port`")
	fs.Var(addrFlag(&o.addr, grid.DefaultDataAddr, false), "addr", "data `host:port` that clients and members connect to")
	fs.Var(&listFlag{p: &o.join}, "join", "comma-separated gossip `addresses` of members to join (empty: start a new cluster)")
	fs.Var(addrFlag(&o.advertise, "", true), "advertise", "gossip `host:port` announced to others, if it differs from --bind (NAT, containers)")
	fs.Var(addrFlag(&o.advertiseAddr, "", true), "advertise-addr", "data `host:port` announced to others, if it differs from --addr")
	fs.StringVar(&o.cluster, "cluster", grid.DefaultCluster, "cluster name; members of other clusters are refused")
	fs.StringVar(&o.zone, "zone", "", "failure zone label for replica placement")
	fs.StringVar(&o.host, "host", "", "physical host label for replica placement")
	fs.Var(intFlag(&o.partitions, partition.DefaultCount, 1, 1<<16), "partitions", "`number` of partitions, the same on every member")
	fs.StringVar(&o.config, "config", "", "YAML config `file`; its keys are flag names")
	fs.Var(addrFlag(&o.http, "", true), "http", "HTTP `host:port` for /healthz, /readyz, /status and /metrics (empty: off)")
	fs.BoolVar(&o.pprof, "pprof", false, "also serve Go's profiler at /debug/pprof/ on the --http address, with lock contention sampled for /debug/pprof/mutex (exposes internals: keep that address private)")
	fs.Var(enumFlag(&o.gossip, "lan", "lan", "fast"), "gossip", "failure-detection `timings`: lan (crash detected in ~2-3 s) or fast (~1 s, one machine)")
	fs.Var(durationFlag(&o.probeInterval, 0, false), "probe-interval", "gossip probe `interval` (0: from --gossip)")
	fs.Var(durationFlag(&o.probeTimeout, 0, false), "probe-timeout", "gossip probe `timeout` (0: from --gossip)")
	fs.Var(intFlag(&o.suspicionMult, 0, 0, 1000), "suspicion-mult", "suspicion `multiplier` before a silent member is declared dead (0: from --gossip)")
	fs.Var(durationFlag(&o.shutdownTimeout, 30*time.Second, true), "shutdown-timeout", "longest `duration` of the partition hand-over at a graceful stop")
	fs.Var(durationFlag(&o.joinTimeout, 60*time.Second, true), "join-timeout", "longest `duration` of the attempts to join the --join seeds")
	fs.Var(enumFlag(&o.logLevel, "info", "debug", "info", "warn", "error"), "log-level", "log `level`: debug, info, warn or error")
	fs.Var(enumFlag(&o.logFormat, "text", "text", "json"), "log-format", "log `format`: text or json")
	fs.Var(sizeFlag(&o.maxValueSize, wire.DefaultMaxValueSize), "max-value-size", "largest value accepted, in `bytes` (suffixes KiB, MiB, GiB)")
	fs.Var(sizeFlag(&o.maxKeySize, wire.DefaultMaxKeySize), "max-key-size", "largest key accepted, in `bytes` (suffixes KiB, MiB, GiB)")
	o.maxMemory = defaultMaxMemory
	fs.Var(stringValue{p: &o.maxMemory, check: checkMaxMemory}, "max-memory",
		"memory guard: above this Go heap in use, the member refuses writes that may grow state (map puts, queue offers, claims) with ErrMapFull (maps with an eviction policy evict instead); reads and deletes keep working. A `size` (512MiB, 2GiB), a percentage of the cgroup memory limit or else of the machine's memory (70%), or 0 (off)")
	fs.Var(sizeFlag(&o.maxNameSize, wire.DefaultMaxNameSize), "max-name-size", "longest structure name accepted, in `bytes` (suffixes KiB, MiB, GiB)")
	fs.Var(intFlag(&o.maxConns, grid.DefaultMaxConns, 1, 1<<24), "max-conns",
		"most `connections` open on the data port, handshakes included; keep it under the file descriptor limit (ulimit -n)")
	fs.Var(intFlag(&o.maxConnsPerAddr, grid.DefaultMaxConnsPerAddr, 1, 1<<24), "max-conns-per-addr", "most data-port `connections` open from one IP address")
	fs.Var(intFlag(&o.maxInFlight, grid.DefaultMaxInFlight, 1, 1<<20), "max-in-flight",
		"most `requests` of one client connection served at once; the member stops reading that connection at the limit")
	fs.Var(durationFlag(&o.handshakeTimeout, grid.DefaultHandshakeTimeout, true), "handshake-timeout", "longest `duration` of a connection's handshake")
	fs.Var(durationFlag(&o.idleTimeout, grid.DefaultIdleTimeout, false), "idle-timeout",
		"close a data connection on which nothing arrived for this `duration` (up to twice it) with no request in flight; clients ping every 30s (0: never)")
	fs.Var(enumFlag(&o.profile, string(grid.ProfileReliable), string(grid.ProfileReliable), string(grid.ProfilePerformance)), "profile",
		"replication `profile`: reliable (1 synchronous backup: an acknowledged write survives any one crash) or performance (no backups)")
	fs.Var(optIntFlag(&o.backupCount, 0, grid.MaxBackups), "backup-count",
		"`number` of synchronous backups of every partition, waited for by each write (default from --profile: reliable 1, performance 0)")
	fs.Var(optIntFlag(&o.asyncBackupCount, 0, grid.MaxBackups), "async-backup-count",
		"`number` of asynchronous backups of every partition, not waited for (default 0)")
	fs.Var(durationFlag(&o.backupTimeout, defaultBackupTimeout, true), "backup-timeout",
		"longest `duration` a write waits for its synchronous backups before failing with an unknown outcome")
	fs.Var(sessionTTLFlag(&o.sessionTTL), "session-ttl",
		"`duration` this member's session lives without a heartbeat (it heartbeats every third of it); when it ends, the cluster releases what the member held (locks, queue deliveries, idempotency claims). Clients set their own TTL. At least 30ms")
	fs.Var(enumFlag(&o.placement, "member", "member", "host", "zone"), "placement",
		"replica `placement`: member (distinct members), host (distinct --host labels) or zone (distinct --zone labels)")
	fs.Var(stringValue{p: &o.quorum, check: checkQuorum}, "quorum",
		"split-brain `rule`: majority (a side that sees fewer than half the cluster refuses operations), off, or a minimum member count (default from --profile: reliable majority, performance off)")
	fs.StringVar(&o.clusterKeyFile, "cluster-key-file", "", "`file` holding the cluster key: base64 of at least 32 random bytes (one key per line; the first is used, the others accepted, for rotation). Members prove it to each other; gossip is encrypted with a key derived from it")
	fs.StringVar(&o.tokensFile, "tokens-file", "", "YAML `file` of client tokens and their roles per structure pattern (needs --cluster-key-file); clients without a listed token are refused")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate `file`: serve clients and members over TLS (with --tls-key)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM CA `file`: members and clients must present certificates it signed (mutual TLS); members' certificates are checked against it")
	fs.BoolVar(&o.insecure, "insecure", false, "allow listening on non-loopback addresses without --cluster-key-file or TLS (only on a network you trust)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

// printUsage writes the help text.
func printUsage(w io.Writer) {
	fs := newFlagSet(&options{})
	fs.SetOutput(w)
	fmt.Fprintf(w, `Usage: gridnode [flags]

Runs one Shoal member. Every flag except --version can also be set with an
environment variable (%s + the flag name in upper case with dashes as
underscores: %s for --probe-interval) or as a key of the --config
YAML file ("name: n1", "join: [10.0.0.1:7946, 10.0.0.2:7946]"). The command
line wins over the environment, which wins over the file.

The file may also set per-structure backup counts and quorum rules (first
matching pattern wins; a setting left out is the member's default):

  structures:
    - pattern: "orders.*"
      backup-count: 2
    - pattern: cache-*
      backup-count: 0
      async-backup-count: 1
      quorum: "off"
      merge: put-if-absent   # after a split: discard, put-if-absent, pass-through, latest

Flags:
`, envPrefix, envName("probe-interval"))
	fs.PrintDefaults()
}

// parseOptions merges, from highest to lowest precedence, the command line
// args, the SHOAL_* environment variables (looked up with getenv) and the
// YAML config file, over the defaults. Errors are usageErrors, except
// flag.ErrHelp for -h.
func parseOptions(args []string, getenv func(string) (string, bool)) (options, error) {
	// Pass 1: the command line alone, to learn --config and --version.
	var first options
	fs := newFlagSet(&first)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return first, err
		}
		return first, usageError{err}
	}
	if fs.NArg() > 0 {
		return first, usagef("unexpected argument %q (flags only)", fs.Arg(0))
	}
	if first.version {
		return first, nil
	}
	cfgPath := first.config
	if !isSet(fs, "config") {
		if v, ok := getenv(envName("config")); ok {
			cfgPath = v
		}
	}

	// Pass 2: the defaults, then each source in rising precedence.
	var o options
	fs = newFlagSet(&o)
	if cfgPath != "" {
		if err := applyConfigFile(fs, &o.structures, &o.queueRules, &o.mapRules, cfgPath); err != nil {
			return o, err
		}
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if envErr != nil || slices.Contains(commandLineOnly, f.Name) {
			return
		}
		v, ok := getenv(envName(f.Name))
		if !ok {
			return
		}
		newSource(f)
		if err := f.Value.Set(v); err != nil {
			envErr = usagef("%s=%q: %v", envName(f.Name), v, err)
		}
	})
	if envErr != nil {
		return o, envErr
	}
	fs.VisitAll(newSource)
	if err := fs.Parse(args); err != nil {
		return o, usageError{err} // cannot happen: pass 1 accepted args
	}
	o.config = cfgPath
	if err := o.validate(); err != nil {
		return o, err
	}
	sec, err := o.loadSecurity()
	if err != nil {
		return o, err
	}
	o.sec = sec
	if err := o.checkExposure(); err != nil {
		return o, err
	}
	return o, nil
}

// validate checks what no single flag can: the backup counts together, and
// the structure rules against them.
func (o options) validate() error {
	def := o.backups()
	if def.Sync+def.Async > grid.MaxBackups {
		return usagef("--backup-count %d plus --async-backup-count %d is more than %d backups", def.Sync, def.Async, grid.MaxBackups)
	}
	for _, r := range o.structures {
		b := r.resolve(def)
		if b.Sync+b.Async > grid.MaxBackups {
			return usagef("structure %q: backup-count %d plus async-backup-count %d is more than %d backups", r.pattern, b.Sync, b.Async, grid.MaxBackups)
		}
	}
	return nil
}

// backups returns the default backup counts: those given, the rest from
// the profile.
func (o options) backups() grid.Backups {
	b := grid.Backups{}
	if o.profile != string(grid.ProfilePerformance) {
		b.Sync = 1
	}
	if o.backupCount >= 0 {
		b.Sync = o.backupCount
	}
	if o.asyncBackupCount >= 0 {
		b.Async = o.asyncBackupCount
	}
	return b
}

// resolve fills the counts r leaves out from def.
func (r structureRule) resolve(def grid.Backups) grid.Backups {
	b := def
	if r.sync >= 0 {
		b.Sync = r.sync
	}
	if r.async >= 0 {
		b.Async = r.async
	}
	return b
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// newSource tells a list flag that the next Set starts a new source, which
// replaces (rather than extends) what a lower-precedence source set.
func newSource(f *flag.Flag) {
	if l, ok := f.Value.(*listFlag); ok {
		l.appending = false
	}
}

// applyConfigFile sets the flags named by the keys of the YAML mapping in
// path, and the structure rules of its "structures" key. Unknown or repeated
// keys, and values of the wrong shape, are errors: a typo in a config file
// must not be silently ignored.
func applyConfigFile(fs *flag.FlagSet, structures *[]structureRule, queueRules *[]queues.Rule, mapRules *[]maps.Rule, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return usagef("config file: %v", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return usagef("config file %s: %v", path, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty file
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return usagef("config file %s:%d: want a mapping of flag names to values", path, top.Line)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		at := fmt.Sprintf("config file %s:%d", path, k.Line)
		if k.Kind != yaml.ScalarNode {
			return usagef("%s: keys must be flag names", at)
		}
		if line, dup := seen[k.Value]; dup {
			return usagef("%s: key %q already set on line %d", at, k.Value, line)
		}
		seen[k.Value] = k.Line
		if k.Value == structuresKey {
			rules, err := structureRules(v, path)
			if err != nil {
				return err
			}
			*structures = rules
			continue
		}
		if k.Value == queuesKey {
			rules, err := parseQueueRules(v, path)
			if err != nil {
				return err
			}
			*queueRules = rules
			continue
		}
		if k.Value == mapsKey {
			rules, err := parseMapRules(v, path)
			if err != nil {
				return err
			}
			*mapRules = rules
			continue
		}
		f := fs.Lookup(k.Value)
		if f == nil || slices.Contains(commandLineOnly, k.Value) {
			return usagef("%s: unknown key %q", at, k.Value)
		}
		vals, err := yamlValues(v, f)
		if err != nil {
			return usagef("%s: %s: %v", at, k.Value, err)
		}
		newSource(f)
		for _, s := range vals {
			if err := f.Value.Set(s); err != nil {
				return usagef("%s: %s: %v", at, k.Value, err)
			}
		}
	}
	return nil
}

// yamlValues returns the strings to Set for node: one for a scalar, one per
// item for a sequence (list flags only).
func yamlValues(n *yaml.Node, f *flag.Flag) ([]string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return []string{""}, nil
		}
		return []string{n.Value}, nil
	case yaml.SequenceNode:
		if _, ok := f.Value.(*listFlag); !ok {
			return nil, errors.New("a list is not allowed here")
		}
		out := []string{}
		for _, it := range n.Content {
			if it.Kind != yaml.ScalarNode {
				return nil, errors.New("list items must be plain values")
			}
			out = append(out, it.Value)
		}
		if len(out) == 0 {
			out = append(out, "")
		}
		return out, nil
	}
	return nil, errors.New("want a plain value")
}

// structureRules parses the "structures" list: mappings with a pattern and
// at least one of backup-count and async-backup-count.
func structureRules(n *yaml.Node, path string) ([]structureRule, error) {
	at := func(n *yaml.Node) string { return fmt.Sprintf("config file %s:%d: %s", path, n.Line, structuresKey) }
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, usagef("%s: want a list of {pattern, backup-count, async-backup-count}", at(n))
	}
	rules := []structureRule{}
	patterns := map[string]int{}
	for _, it := range n.Content {
		if it.Kind != yaml.MappingNode {
			return nil, usagef("%s: want a mapping with pattern, backup-count and async-backup-count", at(it))
		}
		r := structureRule{sync: -1, async: -1}
		hasPattern := false
		keys := map[string]bool{}
		for i := 0; i+1 < len(it.Content); i += 2 {
			k, v := it.Content[i], it.Content[i+1]
			if k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode {
				return nil, usagef("%s: want plain keys and values", at(k))
			}
			if keys[k.Value] {
				return nil, usagef("%s: key %q repeated", at(k), k.Value)
			}
			keys[k.Value] = true
			switch k.Value {
			case "pattern":
				p := strings.TrimSpace(v.Value)
				if _, err := pathpkg.Match(p, ""); err != nil || p == "" {
					return nil, usagef("%s: pattern %q: want a name or a path.Match pattern such as orders.*", at(v), v.Value)
				}
				r.pattern, hasPattern = p, true
			case "quorum":
				if err := checkQuorum(strings.TrimSpace(v.Value)); err != nil || strings.TrimSpace(v.Value) == "" {
					return nil, usagef("%s: quorum %q: want majority, off or a minimum member count", at(v), v.Value)
				}
				r.quorum = strings.TrimSpace(v.Value)
			case "merge":
				if _, err := grid.ParseMergePolicy(strings.TrimSpace(v.Value)); err != nil || strings.TrimSpace(v.Value) == "" {
					return nil, usagef("%s: merge %q: want discard, put-if-absent, pass-through or latest", at(v), v.Value)
				}
				r.merge = strings.TrimSpace(v.Value)
			case "backup-count", "async-backup-count":
				var c int
				if err := intFlag(&c, 0, 0, grid.MaxBackups).Set(v.Value); err != nil {
					return nil, usagef("%s: %s: %v", at(v), k.Value, err)
				}
				if k.Value == "backup-count" {
					r.sync = c
				} else {
					r.async = c
				}
			default:
				return nil, usagef("%s: unknown key %q (want pattern, backup-count, async-backup-count, quorum, merge)", at(k), k.Value)
			}
		}
		if !hasPattern {
			return nil, usagef("%s: item without a pattern", at(it))
		}
		if r.sync < 0 && r.async < 0 && r.quorum == "" && r.merge == "" {
			return nil, usagef("%s: pattern %q sets none of backup-count, async-backup-count, quorum and merge", at(it), r.pattern)
		}
		if line, dup := patterns[r.pattern]; dup {
			return nil, usagef("%s: pattern %q already listed on line %d", at(it), r.pattern, line)
		}
		patterns[r.pattern] = it.Line
		rules = append(rules, r)
	}
	return rules, nil
}

// gridConfig translates the options into the member's config.
func (o options) gridConfig(log *slog.Logger) grid.Config {
	g := grid.LANGossip()
	if o.gossip == "fast" {
		g = grid.FastGossip()
	}
	if o.probeInterval > 0 {
		g.ProbeInterval = o.probeInterval
	}
	if o.probeTimeout > 0 {
		g.ProbeTimeout = o.probeTimeout
	}
	if o.suspicionMult > 0 {
		g.SuspicionMult = o.suspicionMult
	}
	lim := wire.Limits{MaxKeySize: o.maxKeySize, MaxValueSize: o.maxValueSize, MaxNameSize: o.maxNameSize}
	// A frame must hold a full-size value and Aux operand plus the key and
	// headers; never go below the default.
	lim.MaxFrameSize = max(wire.DefaultMaxFrameSize, 2*lim.MaxValueSize+lim.MaxKeySize+1<<20)
	c := grid.Config{
		Name:              o.name,
		Cluster:           o.cluster,
		BindAddr:          o.bind,
		AdvertiseAddr:     o.advertise,
		DataAddr:          o.addr,
		AdvertiseDataAddr: o.advertiseDataAddr(),
		Join:              o.join,
		Zone:              o.zone,
		Host:              o.host,
		PartitionCount:    o.partitions,
		Gossip:            g,
		Limits:            lim,
		Conns:             o.connLimits(),
		ShutdownTimeout:   o.shutdownTimeout,
		Logger:            log,
		Profile:           grid.Profile(o.profile),
		BackupTimeout:     o.backupTimeout,
		SessionTTL:        o.sessionTTL,
		Placement:         placements[o.placement],
		Services:          services(o),
		ClusterKeys:       o.sec.keys,
		Tokens:            o.sec.tokens,
		TLS:               o.sec.serverTLS,
		PeerTLS:           o.sec.peerTLS,
	}
	if n, from, err := resolveMaxMemory(o.maxMemory, availableMemory); err != nil {
		if log != nil {
			log.Warn("memory guard off: cannot tell how much memory this process may use", "max_memory", o.maxMemory, "err", err)
		}
	} else {
		c.MaxMemory = int64(n)
		if log != nil && n > 0 {
			log.Debug("memory guard", "max_memory_bytes", n, "from", cmp.Or(from, "--max-memory"))
		}
	}
	def := o.backups()
	if o.backupCount >= 0 || o.asyncBackupCount >= 0 {
		c.Backups = &def
	}
	for _, r := range o.structures {
		if r.sync >= 0 || r.async >= 0 {
			c.StructureBackups = append(c.StructureBackups, grid.StructureBackups{Pattern: r.pattern, Backups: r.resolve(def)})
		}
		if r.quorum != "" {
			q, _ := quorum.ParseRule(r.quorum) // checked when parsed
			c.StructureQuorum = append(c.StructureQuorum, quorum.Pattern{Pattern: r.pattern, Rule: q})
		}
		if r.merge != "" {
			c.StructureMerge = append(c.StructureMerge, grid.StructureMerge{Pattern: r.pattern, Policy: grid.MergePolicy(r.merge)})
		}
	}
	if o.quorum != "" {
		q, _ := quorum.ParseRule(o.quorum) // checked by the flag
		c.Quorum = &q
	}
	return c
}

// checkQuorum validates a --quorum value ("" leaves it to the profile).
func checkQuorum(s string) error {
	if s == "" {
		return nil
	}
	if _, err := quorum.ParseRule(s); err != nil {
		return errors.New("want majority, off or a minimum member count")
	}
	return nil
}

// connLimits returns the connection limits of the options.
func (o options) connLimits() grid.ConnLimits {
	idle := o.idleTimeout
	if idle == 0 {
		idle = -1 // grid: negative disables
	}
	return grid.ConnLimits{
		MaxConns:         o.maxConns,
		MaxConnsPerAddr:  o.maxConnsPerAddr,
		MaxInFlight:      o.maxInFlight,
		HandshakeTimeout: o.handshakeTimeout,
		IdleTimeout:      idle,
	}
}

// placements maps --placement to grid's placement.
var placements = map[string]partition.Placement{
	"member": partition.PerMember,
	"host":   partition.HostAware,
	"zone":   partition.ZoneAware,
}

// advertiseDataAddr returns --advertise-addr or, when --addr listens on all
// interfaces (0.0.0.0 or ::) at a fixed port, an address others can reach:
// the --advertise host, else this machine's first private IPv4 address. The
// member would otherwise publish the unroutable wildcard address.
func (o options) advertiseDataAddr() string {
	if o.advertiseAddr != "" {
		return o.advertiseAddr
	}
	host, port, err := net.SplitHostPort(o.addr)
	if err != nil || port == "0" {
		return ""
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return ""
	}
	if o.advertise != "" {
		if h, _, err := net.SplitHostPort(o.advertise); err == nil && h != "" {
			return net.JoinHostPort(h, port)
		}
	}
	if ip := privateIPv4(); ip != nil {
		return net.JoinHostPort(ip.String(), port)
	}
	return ""
}

// privateIPv4 returns the first private IPv4 address of an interface that
// is up, or nil.
func privateIPv4() net.IP {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsPrivate() {
				return n.IP
			}
		}
	}
	return nil
}

// newLogger returns a slog logger writing to w at the configured level and
// format.
func (o options) newLogger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(o.logLevel)) // validated by enumFlag
	ho := &slog.HandlerOptions{Level: lvl}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// Flag values. Each validates in Set, so that a bad value is refused the
// same way whichever source it comes from.

// stringValue is a string flag whose Set validates.
type stringValue struct {
	p     *string
	check func(string) error
}

func (v stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v stringValue) Set(s string) error {
	s = strings.TrimSpace(s)
	if err := v.check(s); err != nil {
		return err
	}
	*v.p = s
	return nil
}

// addrFlag is a host:port flag; optional ones may be empty.
func addrFlag(p *string, def string, optional bool) stringValue {
	*p = def
	return stringValue{p: p, check: func(s string) error {
		if s == "" && optional {
			return nil
		}
		return checkHostPort(s)
	}}
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port: %v", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// enumFlag is a flag that takes one of a fixed set of words.
func enumFlag(p *string, def string, allowed ...string) stringValue {
	*p = def
	return stringValue{p: p, check: func(s string) error {
		if !slices.Contains(allowed, s) {
			return fmt.Errorf("want one of %s", strings.Join(allowed, ", "))
		}
		return nil
	}}
}

// listFlag is a comma-separated list of host:port addresses. Repeating the
// flag on the command line extends the list; a higher-precedence source
// replaces it (see newSource).
type listFlag struct {
	p         *[]string
	appending bool
}

func (l *listFlag) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l *listFlag) Set(s string) error {
	var add []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if err := checkHostPort(a); err != nil {
			return fmt.Errorf("%q: %v", a, err)
		}
		add = append(add, a)
	}
	if !l.appending {
		*l.p = nil
		l.appending = true
	}
	*l.p = append(*l.p, add...)
	return nil
}

// intValue is an integer flag within [min, max].
type intValue struct {
	p        *int
	min, max int
}

func intFlag(p *int, def, lo, hi int) intValue {
	*p = def
	return intValue{p: p, min: lo, max: hi}
}

func (v intValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}

func (v intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want an integer")
	}
	if n < v.min || n > v.max {
		return fmt.Errorf("want %d..%d", v.min, v.max)
	}
	*v.p = n
	return nil
}

// optIntValue is an integer flag within [min, max] that is -1 until set, so
// that "not given" can be told from 0. It prints as "" when unset, so the
// usage text shows no default.
type optIntValue struct {
	p        *int
	min, max int
}

func optIntFlag(p *int, lo, hi int) optIntValue {
	*p = -1
	return optIntValue{p: p, min: lo, max: hi}
}

func (v optIntValue) String() string {
	if v.p == nil || *v.p < 0 {
		return ""
	}
	return strconv.Itoa(*v.p)
}

// Set parses s; an empty s unsets the flag again (so an empty environment
// variable or a null in the file hands the choice back to the profile).
func (v optIntValue) Set(s string) error {
	if strings.TrimSpace(s) == "" {
		*v.p = -1
		return nil
	}
	return intValue{p: v.p, min: v.min, max: v.max}.Set(s)
}

// durationValue is a non-negative (or, if positive is set, > 0) duration.
type durationValue struct {
	p        *time.Duration
	positive bool
}

// sessionTTLFlag is --session-ttl: a duration of at least
// grid.MinSessionTTL, default grid.DefaultSessionTTL.
func sessionTTLFlag(p *time.Duration) flag.Value {
	*p = grid.DefaultSessionTTL
	return minDurationValue{durationValue{p: p, positive: true}, grid.MinSessionTTL}
}

// minDurationValue is a duration of at least min.
type minDurationValue struct {
	durationValue
	min time.Duration
}

func (v minDurationValue) Set(s string) error {
	var d time.Duration
	if err := (durationValue{p: &d, positive: true}).Set(s); err != nil {
		return err
	}
	if d < v.min {
		return fmt.Errorf("want at least %v", v.min)
	}
	*v.p = d
	return nil
}

func durationFlag(p *time.Duration, def time.Duration, positive bool) durationValue {
	*p = def
	return durationValue{p: p, positive: positive}
}

func (v durationValue) String() string {
	if v.p == nil {
		return "0s"
	}
	return v.p.String()
}

func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want a duration such as 500ms or 30s")
	}
	if d < 0 || (v.positive && d == 0) {
		return errors.New("want a positive duration")
	}
	*v.p = d
	return nil
}

// sizeValue is a positive byte size, optionally with a binary suffix.
type sizeValue struct{ p *int }

func sizeFlag(p *int, def int) sizeValue {
	*p = def
	return sizeValue{p: p}
}

func (v sizeValue) String() string {
	if v.p == nil {
		return ""
	}
	return formatSize(*v.p)
}

func (v sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

var sizeUnits = []struct {
	suffix string
	mult   int
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// sizeLimit caps sizes so that the derived frame size cannot overflow.
const sizeLimit = 1 << 30

// parseSize parses "1024", "64KiB", "16MiB" or "1GiB" (1..1 GiB).
func parseSize(s string) (int, error) {
	s = strings.TrimSpace(s)
	mult := 1
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errors.New("want a size in bytes, e.g. 1048576 or 1MiB")
	}
	if n < 1 || n > sizeLimit/mult {
		return 0, errors.New("want a size from 1 byte to 1GiB")
	}
	return n * mult, nil
}

func formatSize(n int) string {
	for _, u := range sizeUnits {
		if n >= u.mult && n%u.mult == 0 && u.mult > 1 {
			return strconv.Itoa(n/u.mult) + u.suffix
		}
	}
	return strconv.Itoa(n)
}
