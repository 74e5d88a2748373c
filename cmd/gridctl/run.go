package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed (unreachable, not found, ...)
	exitUsage   = 2 // the command line is wrong
)

// env is what a command may touch: its standard streams. Commands never use
// os.Stdin/os.Stdout directly, so tests run them in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// getenv looks up an environment variable (os.LookupEnv in main, a
	// map in tests, so that the test process's environment never leaks in).
	getenv func(string) (string, bool)
}

// usageError is a mistake on the command line: run exits with code 2 and
// points to the help of topic ("" = top level).
type usageError struct {
	topic string
	msg   string
}

func (e *usageError) Error() string { return e.msg }

func usagef(topic, format string, args ...any) error {
	return &usageError{topic: topic, msg: fmt.Sprintf(format, args...)}
}

// errHelpShown means help was requested and printed: exit 0.
var errHelpShown = errors.New("help shown")

// run executes one gridctl command line (without the program name) and
// returns the process exit code. Every failure is reported on stderr as one
// line starting with "gridctl: ".
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) (string, bool)) int {
	if getenv == nil {
		getenv = func(string) (string, bool) { return "", false }
	}
	e := env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	err := dispatch(ctx, e, args)
	var ue *usageError
	var xe *exitCodeError
	switch {
	case err == nil, errors.Is(err, errHelpShown):
		return exitOK
	case errors.As(err, &xe):
		if xe.msg != "" {
			fmt.Fprintln(stderr, oneLine(xe.msg))
		}
		return xe.code
	case errors.Is(err, errDuplicate):
		return exitDuplicate
	case errors.As(err, &ue):
		hint := "gridctl help"
		if ue.topic != "" {
			hint += " " + ue.topic
		}
		fmt.Fprintf(stderr, "gridctl: %s (see %s)\n", oneLine(ue.msg), hint)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "gridctl: %s\n", oneLine(tidy(err.Error())))
		return exitFailure
	}
}

// maxErrLine bounds the error line: an error may quote a key or value the
// user gave, and a 40 KB line helps nobody.
const maxErrLine = 1024

// oneLine folds a multi-line error (errors.Join output) onto one line, so
// every failure is a single line for logs and scripts, and cuts it to
// maxErrLine bytes.
func oneLine(s string) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
	if len(s) > maxErrLine {
		s = strings.ToValidUTF8(s[:maxErrLine], "") + fmt.Sprintf("... (%d bytes cut)", len(s)-maxErrLine)
	}
	return s
}

// tidy removes the layers of package prefixes an error picks up on its way
// up ("client: connect to [...]: shoal: unavailable: ... shoal: bad
// request: ..."): gridctl's own message already says what was attempted,
// and the sentinel's text repeated at every layer only hides the cause.
func tidy(s string) string {
	for _, p := range []string{"shoal: unavailable: ", "shoal: bad request: ", ": request not sent"} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}

// maxShown is how much of a user-supplied key or name a message quotes.
const maxShown = 64

// clip quotes s for a message, cut to maxShown bytes with its full length
// noted, so an oversized key is never echoed in full.
func clip(s string) string {
	if len(s) <= maxShown {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(strings.ToValidUTF8(s[:maxShown], "")), len(s))
}

// dispatch parses the global flags that precede the command, then runs the
// command with the remaining arguments.
func dispatch(ctx context.Context, e env, args []string) error {
	g, err := defaultGlobals(e.getenv)
	if err != nil {
		return err
	}
	fs := newFlagSet("gridctl")
	g.register(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(e.stdout)
			return errHelpShown
		}
		return usagef("", "%v", err)
	}
	rest := fs.Args()
	if *showVersion {
		return versionCmd(e, g, rest)
	}
	if len(rest) == 0 {
		return usagef("", "no command given")
	}
	cmd, rest := rest[0], rest[1:]
	switch cmd {
	case "help":
		return helpCmd(e, rest)
	case "version":
		return versionCmd(e, g, rest)
	case "completion":
		return completionCmd(e, rest)
	case "status":
		return statusCmd(ctx, e, g, rest)
	case "map":
		return mapCmd(ctx, e, g, rest)
	case "bench":
		return benchCmd(ctx, e, g, rest)
	case "lock":
		return lockCmd(ctx, e, g, rest)
	case "elect":
		return electCmd(ctx, e, g, rest)
	case "queue":
		return queueCmd(ctx, e, g, rest)
	case "idem":
		return idemCmd(ctx, e, g, rest)
	case "rmap":
		return rmapCmd(ctx, e, g, rest)
	case "member":
		return memberCmd(ctx, e, g, rest)
	}
	return usagef("", "unknown command %q", cmd)
}

// globals are the flags every command accepts.
type globals struct {
	addr    string
	timeout time.Duration
	cluster string
	// Credentials (see credentials.go).
	tokenFile, tlsCA, tlsCert, tlsKey string
	// json asks for one JSON document on stdout instead of text.
	json bool
}

// Environment variables gridctl reads; flags win over them.
const (
	envAddr    = "SHOAL_ADDR"    // --addr
	envCluster = "SHOAL_CLUSTER" // --cluster
	envTimeout = "SHOAL_TIMEOUT" // --timeout
)

// defaultGlobals returns the global flags' defaults: gridctl's own, then
// the SHOAL_* environment variables over them. Credentials, once members
// require them, are read here too (SHOAL_* variables, never a flag that
// would show in ps), so every command gets them the same way.
func defaultGlobals(getenv func(string) (string, bool)) (*globals, error) {
	g := &globals{addr: "127.0.0.1:5701", timeout: 5 * time.Second, cluster: "shoal"}
	if v, ok := getenv(envAddr); ok && strings.TrimSpace(v) != "" {
		g.addr = v
	}
	if v, ok := getenv(envCluster); ok && v != "" {
		g.cluster = v
	}
	if v, ok := getenv(envTimeout); ok && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, usagef("", "%s=%q: want a positive duration such as 5s", envTimeout, v)
		}
		g.timeout = d
	}
	return g, nil
}

// register adds the global flags to fs. The current values are the
// defaults, so flags given before the command carry over to the command's
// own flag set, and flags given after it override them.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "comma-separated data `host:port` addresses of members to contact")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "bound on connecting and on each operation")
	fs.StringVar(&g.cluster, "cluster", g.cluster, "cluster `name`; must match the members'")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "`file` holding the client token (default: $SHOAL_TOKEN)")
	fs.StringVar(&g.tlsCA, "tls-ca", g.tlsCA, "PEM CA `file`: connect over TLS, trusting members' certificates it signed")
	fs.StringVar(&g.tlsCert, "tls-cert", g.tlsCert, "PEM client certificate `file`, for members that require one (with --tls-key)")
	fs.StringVar(&g.tlsKey, "tls-key", g.tlsKey, "PEM private key `file` of --tls-cert")
	fs.BoolVar(&g.json, "json", g.json, "print one JSON document")
}

// addrs validates and splits --addr. A port must be a number from 1 to
// 65535: a bad one is a usage error, found before any network work.
func (g *globals) addrs(topic string) ([]string, error) {
	var out []string
	for a := range strings.SplitSeq(g.addr, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, usagef(topic, "--addr %s: want host:port (%v)", clip(a), err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, usagef(topic, "--addr %s: port %s is not a number from 1 to 65535", clip(a), clip(port))
		}
		if host == "" {
			return nil, usagef(topic, "--addr %s: host is empty", clip(a))
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, usagef(topic, "--addr is empty")
	}
	return out, nil
}

// check validates the global flags before any network work.
func (g *globals) check(topic string) error {
	if g.timeout <= 0 {
		return usagef(topic, "--timeout must be positive, got %v", g.timeout)
	}
	if g.cluster == "" {
		return usagef(topic, "--cluster is empty")
	}
	_, err := g.addrs(topic)
	return err
}

// dial connects to the cluster within --timeout. Every address is first
// probed (see probe): when each of them fails for a reason that waiting
// will not fix (connection refused, unknown host, not a Shoal port, another
// cluster), dial reports that at once instead of retrying until --timeout.
func (g *globals) dial(ctx context.Context) (*client.Client, error) {
	addrs, err := g.addrs("")
	if err != nil {
		return nil, err
	}
	token, tlsCfg, err := g.credentials()
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	if why := probeAll(dctx, addrs, g.cluster, token, tlsCfg); why != "" {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("interrupted while connecting to %s", strings.Join(addrs, ","))
		}
		return nil, fmt.Errorf("cannot reach cluster %q: %s", g.cluster, why)
	}
	c, err := client.Dial(dctx, client.Config{
		Addrs:       addrs,
		Cluster:     g.cluster,
		Name:        fmt.Sprintf("gridctl-%d", os.Getpid()),
		DialTimeout: g.timeout,
		Token:       token,
		TLS:         tlsCfg,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("interrupted while connecting to %s", strings.Join(addrs, ","))
		}
		if errors.Is(err, op.ErrUnauthenticated) || errors.Is(err, op.ErrForbidden) {
			return nil, fmt.Errorf("cannot join cluster %q: %w", g.cluster, err)
		}
		return nil, fmt.Errorf("cannot reach cluster %q: nothing answered at %s within %v (%s)",
			g.cluster, strings.Join(addrs, ", "), g.timeout, lastError(err))
	}
	return c, nil
}

// probeResult is what probing one address found.
type probeResult struct {
	ok bool
	// why is the reason it failed, when that reason is final (waiting
	// will not change it); "" when the address may still answer later.
	why string
}

// probeAll probes every address at once. It returns "" as soon as one
// answers like a member of the cluster (or when ctx ends first: the caller
// then reports the timeout), and the reasons when every address failed for
// good.
func probeAll(ctx context.Context, addrs []string, cluster, token string, tlsCfg *tls.Config) string {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan probeResult, len(addrs))
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, a := range addrs {
		wg.Go(func() { results <- probe(ctx, a, cluster, token, tlsCfg) })
	}
	var whys []string
	for range addrs {
		select {
		case r := <-results:
			switch {
			case r.ok:
				return ""
			case r.why != "":
				whys = append(whys, r.why)
			default:
				return "" // may answer later: let the client retry until --timeout
			}
		case <-ctx.Done():
			return ""
		}
	}
	return strings.Join(whys, "; ")
}

// probe dials addr and performs the client handshake, and classifies a
// failure: a refused connection, a host that does not resolve, a port that
// answers in HTTP and a member of another cluster are final.
func probe(ctx context.Context, addr, cluster, token string, tlsCfg *tls.Config) probeResult {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		var dnsErr *net.DNSError
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return probeResult{why: fmt.Sprintf("nothing answered at %s: connection refused (is gridnode running, and is this its data port, --addr?)", addr)}
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			return probeResult{why: fmt.Sprintf("host of %s not found", addr)}
		}
		return probeResult{}
	}
	nc.Close()
	// A member answers the hello at once; give it half the time left (at
	// most handshakeWait), and then look at what else may be listening.
	wait := handshakeWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	hctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	hello := wire.Hello{Role: wire.RoleClient, Name: fmt.Sprintf("gridctl-%d", os.Getpid()), Cluster: cluster, Token: token}
	cn, err := wire.Dial(hctx, &d, addr, hello, wire.Options{TLS: tlsCfg})
	switch {
	case err == nil:
		cn.Close()
		return probeResult{ok: true}
	case !errors.Is(err, op.ErrUnavailable):
		return probeResult{why: refusal(addr, err.Error())} // refused handshake
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && answersHTTP(ctx, addr):
		return probeResult{why: fmt.Sprintf("%s is not a Shoal data port: it answers HTTP (is it gridnode's --http port? the data port is --addr, 5701 by default)", addr)}
	}
	return probeResult{}
}

// handshakeWait bounds how long probe waits for a hello answer before it
// checks whether an HTTP server holds the port.
const handshakeWait = time.Second

// answersHTTP reports whether an HTTP server listens at addr. An HTTP
// server may sit silent on a Shoal hello (it waits for the end of a request
// line that never comes), so it is asked a question of its own, on a
// connection of its own.
func answersHTTP(ctx context.Context, addr string) bool {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(nc, "HEAD / HTTP/1.0\r\n\r\n"); err != nil {
		return false
	}
	b := make([]byte, 5)
	_, err = io.ReadFull(nc, b)
	return err == nil && string(b) == "HTTP/"
}

// clusterMismatch matches the reason a member gives when it refuses a
// connection for another cluster (grid's checkPeer, written from the
// member's side).
var clusterMismatch = regexp.MustCompile(`peer is in cluster ("(?:[^"\\]|\\.)*"), this member in ("(?:[^"\\]|\\.)*")`)

// refusal rewrites a refused handshake from the user's side: which cluster
// the member belongs to and which flag fixes it.
func refusal(addr, msg string) string {
	m := clusterMismatch.FindStringSubmatch(msg)
	if m == nil {
		return tidy(msg)
	}
	theirs, err := strconv.Unquote(m[2])
	if err != nil {
		return tidy(msg)
	}
	return fmt.Sprintf("the member at %s belongs to cluster %s, not %s: use --cluster %s (or %s=%s)",
		addr, m[2], m[1], theirs, envCluster, theirs)
}

// lastError extracts the cause from a client.Dial failure, whose text
// repeats the addresses and the timeout already stated by dial.
func lastError(err error) string {
	s := err.Error()
	const marker = "(last error: "
	if i := strings.LastIndex(s, marker); i >= 0 && strings.HasSuffix(s, ")") {
		return "last error: " + s[i+len(marker):len(s)-1]
	}
	return s
}

// newFlagSet returns a flag set that reports errors to its caller instead
// of printing them, so every failure goes through run's one-line format.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseInterspersed parses fs over args with flags allowed anywhere, and
// returns the positional arguments in order: "map put m k v --ttl 10s"
// works as users of most CLIs expect, which the flag package alone (it stops
// at the first positional argument) does not allow. "--" ends the flags; a
// lone "-" is positional (it means stdin).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		used := len(args) - len(rest)
		if used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseCommand parses a command's flags (its own plus the globals) and
// checks the globals. Help requests print the command's help.
func parseCommand(e env, topic string, fs *flag.FlagSet, g *globals, args []string) ([]string, error) {
	g.register(fs)
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		printHelp(e.stdout, topic)
		return nil, errHelpShown
	}
	if err != nil {
		return nil, usagef(topic, "%v", err)
	}
	if err := g.check(topic); err != nil {
		return nil, err
	}
	return pos, nil
}

// subSpec is one subcommand of a command with subcommands: its name and
// how many positional arguments follow it (min to max; max < 0: no upper
// bound), described by want ("NAME KEY").
type subSpec struct {
	name     string
	min, max int
	want     string
}

// subcommand splits pos into a subcommand of cmd (one of subs) and its
// arguments, checking their count and that the first, a structure name, is
// not empty.
func subcommand(cmd string, pos []string, subs []subSpec) (string, []string, error) {
	var names []string
	for _, s := range subs {
		names = append(names, s.name)
	}
	if len(pos) == 0 {
		list := strings.Join(names, ", ")
		if len(names) > 1 {
			list = strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
		}
		return "", nil, usagef(cmd, "%s needs a subcommand: %s", cmd, list)
	}
	sub, args := pos[0], pos[1:]
	i := slices.IndexFunc(subs, func(s subSpec) bool { return s.name == sub })
	if i < 0 {
		return "", nil, usagef(cmd, "unknown %s subcommand %q", cmd, sub)
	}
	if s := subs[i]; len(args) < s.min || (s.max >= 0 && len(args) > s.max) {
		return "", nil, usagef(cmd, "%s %s needs %s, got %d argument(s)", cmd, sub, s.want, len(args))
	}
	if len(args) > 0 && args[0] == "" {
		return "", nil, usagef(cmd, "%s name is empty", cmd)
	}
	return sub, args, nil
}

// helpCmd prints the help of the command named in args, or the overview.
func helpCmd(e env, args []string) error {
	topic := ""
	if len(args) > 0 {
		topic = args[0] // "help map put" shows the map help
	}
	switch topic {
	case "", "status", "map", "bench", "lock", "elect", "queue", "idem", "rmap", "member", "completion":
	default:
		return usagef("", "no help for %q", topic)
	}
	printHelp(e.stdout, topic)
	return errHelpShown
}
