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
	"strings"
	"sync"
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
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := env{stdin: stdin, stdout: stdout, stderr: stderr}
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
		fmt.Fprintf(stderr, "gridctl: %s\n", oneLine(err.Error()))
		return exitFailure
	}
}

// oneLine folds a multi-line error (errors.Join output) onto one line, so
// every failure is a single line for logs and scripts.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

// dispatch parses the global flags that precede the command, then runs the
// command with the remaining arguments.
func dispatch(ctx context.Context, e env, args []string) error {
	g := defaultGlobals()
	fs := newFlagSet("gridctl")
	g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(e.stdout)
			return errHelpShown
		}
		return usagef("", "%v", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usagef("", "no command given")
	}
	cmd, rest := rest[0], rest[1:]
	switch cmd {
	case "help":
		return helpCmd(e, rest)
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
}

func defaultGlobals() *globals {
	return &globals{addr: "127.0.0.1:5701", timeout: 5 * time.Second, cluster: "shoal"}
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
}

// addrs validates and splits --addr.
func (g *globals) addrs(topic string) ([]string, error) {
	var out []string
	for a := range strings.SplitSeq(g.addr, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, usagef(topic, "--addr %q: %v", a, err)
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

// dial connects to the cluster within --timeout. The client itself retries
// until its context ends and reports a generic timeout, so the failure is
// rephrased to say which addresses were tried and that none answered.
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
		if why := diagnose(ctx, addrs, g.cluster, token, tlsCfg, min(g.timeout/2, time.Second)); why != "" {
			return nil, fmt.Errorf("cannot join cluster %q: %s", g.cluster, why)
		}
		return nil, fmt.Errorf("cannot reach cluster %q: nothing answered at %s within %v (%s)",
			g.cluster, strings.Join(addrs, ", "), g.timeout, lastError(err))
	}
	return c, nil
}

// diagnose looks for a member that answers but refuses us, after Dial has
// failed. Dial retries a refused handshake (a wrong --cluster, say) like an
// unreachable member until its deadline and then reports only the timeout,
// which sends the operator looking at the network instead of the flags. It
// returns "" when every address is simply unreachable.
func diagnose(ctx context.Context, addrs []string, cluster, token string, tlsCfg *tls.Config, budget time.Duration) string {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	whys := make([]string, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() {
			hello := wire.Hello{Role: wire.RoleClient, Name: fmt.Sprintf("gridctl-%d", os.Getpid()), Cluster: cluster, Token: token}
			cn, err := wire.Dial(ctx, &net.Dialer{}, a, hello, wire.Options{TLS: tlsCfg})
			switch {
			case err == nil:
				cn.Close()
			case !errors.Is(err, op.ErrUnavailable):
				whys[i] = err.Error() // it names the address
			}
		})
	}
	wg.Wait()
	var out []string
	for _, w := range whys {
		if w != "" {
			out = append(out, w)
		}
	}
	return strings.Join(out, "; ")
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

// helpCmd prints the help of the command named in args, or the overview.
func helpCmd(e env, args []string) error {
	topic := ""
	if len(args) > 0 {
		topic = args[0] // "help map put" shows the map help
	}
	switch topic {
	case "", "status", "map", "bench", "lock", "elect", "queue", "idem":
	default:
		return usagef("", "no help for %q", topic)
	}
	printHelp(e.stdout, topic)
	return errHelpShown
}
