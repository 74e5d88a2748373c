// Package proctest runs real gridnode processes for tests that need what an
// in-process member cannot give: kill -9, SIGSTOP/SIGCONT, signals and exit
// codes. Build compiles ./cmd/gridnode once per test binary; Start runs it
// with fast failure detection and an HTTP status port; every process is
// killed when its test ends, and its output is logged if the test failed.
//
// Waiting is done by polling with a deadline (Poll), never by sleeping.
package proctest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
)

// gridnodePkg is the package Build compiles.
const gridnodePkg = "github.com/shoalgrid/shoal/cmd/gridnode"

// build holds the one gridnode binary of this test binary.
var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Build compiles gridnode (static: CGO_ENABLED=0) into a temporary
// directory the first time it is called in this test binary, and returns
// the binary's path. Call Cleanup from TestMain to remove it.
func Build(t testing.TB) string {
	t.Helper()
	path, err := Prebuild()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Prebuild is Build for TestMain: calling it before m.Run keeps the
// compilation (tens of seconds on a cold cache) out of the first test's
// deadline.
func Prebuild() (string, error) {
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "proctest-gridnode-")
		if build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "gridnode")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", build.path, gridnodePkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build %s: %w\n%s", gridnodePkg, err, out)
		}
	})
	return build.path, build.err
}

// Cleanup removes the binary built by Build. Call it from TestMain after
// m.Run.
func Cleanup() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}

// handedOut holds every port FreePort returned in this test binary, with the
// lock files that reserve them against other test binaries.
var handedOut struct {
	sync.Mutex
	ports map[int]*os.File
}

// FreePort returns a loopback port that is free for both TCP and UDP at the
// time of the call (gossip uses both on one port), and that no FreePort call
// has returned before, in this test binary or in another one running at the
// same time (a lock file per port reserves it until the binary exits): the
// processes started a moment ago may not have bound theirs yet.
//
// Ports come from below the kernel's ephemeral range when there is room
// there: an ephemeral port can be taken at any moment as the source port of
// an outgoing connection — the gridnodes of a test dial each other all the
// time — and that once took a port between FreePort and the process binding
// it. Only a process outside the tests binding that port by number can
// still race the caller.
func FreePort(t testing.TB) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]*os.File{}
	}
	lo, hi := fixedPortRange()
	for range 200 {
		port := 0
		if hi > lo {
			port = lo + rand.IntN(hi-lo)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			if port != 0 {
				continue // in use: try another
			}
			t.Fatalf("free port: %v", err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		if _, ok := handedOut.ports[port]; ok {
			ln.Close()
			continue // given to an earlier caller, maybe not bound yet
		}
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		ln.Close()
		if err != nil {
			continue // UDP side taken: try another
		}
		pc.Close()
		lock, ok := reservePort(port)
		if !ok {
			continue // handed out by another test binary
		}
		handedOut.ports[port] = lock
		return port
	}
	t.Fatal("free port: no new port free for both TCP and UDP after 200 tries")
	return 0
}

// fixedPortRange returns the ports FreePort picks from: those between 10000
// and the start of the kernel's ephemeral range, or lo == hi (let the kernel
// choose) when that range is unknown or too small.
func fixedPortRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	start, err := strconv.Atoi(f[0])
	if err != nil || start < 10000+2000 {
		return 0, 0
	}
	return 10000, start
}

// reservePort takes an exclusive lock on a file named after port in a
// directory shared by all test binaries of this machine. The lock lasts as
// long as the returned file stays open — the life of the test binary, as
// the kernel releases it when the process exits however it exits.
func reservePort(port int) (*os.File, bool) {
	dir := filepath.Join(os.TempDir(), "shoal-proctest-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, true // cannot coordinate: the checks above must do
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// FreeAddr returns "127.0.0.1:<FreePort>".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// Proc is one running gridnode process.
type Proc struct {
	// Name labels the process in logs (the --name given to Member).
	Name string
	// HTTPAddr is the address of its /status, /readyz... endpoints.
	HTTPAddr string
	// GossipAddr and DataAddr are its --bind and --addr values, when given.
	GossipAddr, DataAddr string
	// LogPath is the file holding its stdout and stderr.
	LogPath string
	// Args are the arguments given to Start (without the --gossip and
	// --http that Start puts first).
	Args []string

	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	state  *os.ProcessState
	client *http.Client
}

// Start starts gridnode with --gossip fast --http <free port> followed by
// args (so args may override both). Output goes to a file in t.TempDir(),
// logged with t.Log if the test fails. The process is killed (SIGKILL) when
// the test ends.
func Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	bin := Build(t)
	dir := t.TempDir() // before the cleanup below, so the log outlives it
	p := &Proc{
		Name:     name,
		HTTPAddr: FreeAddr(t),
		LogPath:  filepath.Join(dir, name+".log"),
		done:     make(chan struct{}),
		client:   &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		Args:     slices.Clone(args),
	}
	args = append([]string{"--gossip", "fast", "--http", p.HTTPAddr}, args...)
	p.GossipAddr, p.DataAddr = flagValue(args, "bind"), flagValue(args, "addr")
	if v := flagValue(args, "http"); v != "" {
		p.HTTPAddr = v
	}
	out, err := os.Create(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the child has its own descriptor
	fmt.Fprintf(out, "$ gridnode %s\n", strings.Join(args, " "))
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start gridnode %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			_ = p.cmd.Process.Kill()
		}
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(p.LogPath)
			t.Logf("--- output of gridnode %s (%s) ---\n%s", name, p.state, b)
		}
	})
	return p
}

// Member starts a member named name with --name, free --bind and --addr
// ports, and --join at the gossip addresses of seeds, plus extra args.
func Member(t testing.TB, name string, seeds []*Proc, extra ...string) *Proc {
	t.Helper()
	args := []string{"--name", name, "--bind", FreeAddr(t), "--addr", FreeAddr(t)}
	if len(seeds) > 0 {
		var join []string
		for _, s := range seeds {
			join = append(join, s.GossipAddr)
		}
		args = append(args, "--join", strings.Join(join, ","))
	}
	return Start(t, name, append(args, extra...)...)
}

// MemberAt is Member with the member's gossip and data addresses on ip
// (e.g. netcut.Addr(i)), so that network cuts by address catch all of its
// traffic: gridnode binds its outgoing connections to that address too.
func MemberAt(t testing.TB, name, ip string, seeds []*Proc, extra ...string) *Proc {
	t.Helper()
	at := func() string { return net.JoinHostPort(ip, strconv.Itoa(FreePort(t))) }
	args := []string{"--name", name, "--bind", at(), "--addr", at()}
	if len(seeds) > 0 {
		var join []string
		for _, s := range seeds {
			join = append(join, s.GossipAddr)
		}
		args = append(args, "--join", strings.Join(join, ","))
	}
	return Start(t, name, append(args, extra...)...)
}

// Restart starts p again, after it exited, with the same arguments and
// HTTP address (so the same --name, --bind and --addr), but joining seeds
// instead of p's --join (seeds may be empty: start a new cluster), plus
// extra args.
func Restart(t testing.TB, p *Proc, seeds []*Proc, extra ...string) *Proc {
	t.Helper()
	if !p.Exited() {
		t.Fatalf("restart gridnode %s: still running", p.Name)
	}
	args := withoutFlag(p.Args, "join")
	if len(seeds) > 0 {
		var join []string
		for _, s := range seeds {
			join = append(join, s.GossipAddr)
		}
		args = append(args, "--join", strings.Join(join, ","))
	}
	args = append(withoutFlag(args, "http"), "--http", p.HTTPAddr)
	return Start(t, p.Name, append(args, extra...)...)
}

// withoutFlag returns args without any --name v, -name v or --name=v.
func withoutFlag(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		switch {
		case a == name && args[i] != a:
			i++ // and its value
		case strings.HasPrefix(a, name+"=") && args[i] != a:
		default:
			out = append(out, args[i])
		}
	}
	return out
}

// flagValue returns the last value of --name (or -name, or --name=v) in
// args, or "".
func flagValue(args []string, name string) string {
	v := ""
	for i, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name && i+1 < len(args) {
			v = args[i+1]
		} else if s, ok := strings.CutPrefix(a, name+"="); ok {
			v = s
		}
	}
	return v
}

func (p *Proc) signal(s syscall.Signal) error {
	if err := p.cmd.Process.Signal(s); err != nil {
		return fmt.Errorf("gridnode %s: send %v: %w", p.Name, s, err)
	}
	return nil
}

// Kill sends SIGKILL: the member dies without a goodbye.
func (p *Proc) Kill() error { return p.signal(syscall.SIGKILL) }

// Stop sends SIGSTOP: the member freezes (it looks dead to the others).
func (p *Proc) Stop() error { return p.signal(syscall.SIGSTOP) }

// Cont sends SIGCONT, resuming a stopped member.
func (p *Proc) Cont() error { return p.signal(syscall.SIGCONT) }

// Term sends SIGTERM: the member leaves gracefully.
func (p *Proc) Term() error { return p.signal(syscall.SIGTERM) }

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits until the process exits and returns its exit code (-1 if a
// signal killed it), or ctx's error.
func (p *Proc) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.state.ExitCode(), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("gridnode %s still running: %w", p.Name, ctx.Err())
	}
}

// Output returns what the process has written so far.
func (p *Proc) Output() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Status is the document of GET /status (see cmd/gridnode): grid.Stats
// (replication included), the member list ("members") and the table.
type Status struct {
	grid.Stats
	Members []StatusMember `json:"members"`
	Table   StatusTable    `json:"table"`
}

// StatusMember is one member in Status.
type StatusMember struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Gossip  string `json:"gossip"`
	Zone    string `json:"zone"`
	Host    string `json:"host"`
	Leaving bool   `json:"leaving"`
}

// StatusTable summarises the partition table in Status.
type StatusTable struct {
	Version    uint64         `json:"version"`
	Partitions int            `json:"partitions"`
	Owners     map[string]int `json:"owners"`
	Unowned    int            `json:"unowned"`
	Assignment []string       `json:"assignment"`
}

// Status fetches GET /status?assignment=true.
func (p *Proc) Status(ctx context.Context) (Status, error) {
	var s Status
	code, body, err := p.get(ctx, "/status?assignment=true")
	if err != nil {
		return s, err
	}
	if code != http.StatusOK {
		return s, fmt.Errorf("gridnode %s: /status: HTTP %d: %s", p.Name, code, body)
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return s, fmt.Errorf("gridnode %s: decode /status: %w", p.Name, err)
	}
	return s, nil
}

func (p *Proc) get(ctx context.Context, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("gridnode %s: GET %s: %w", p.Name, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("gridnode %s: GET %s: %w", p.Name, path, err)
	}
	return resp.StatusCode, bytes.TrimSpace(body), nil
}

// Metrics fetches GET /metrics and returns its samples by name (the
// exposition has no labels).
func (p *Proc) Metrics(ctx context.Context) (map[string]float64, error) {
	code, body, err := p.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("gridnode %s: /metrics: HTTP %d: %s", p.Name, code, body)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("gridnode %s: /metrics: bad line %q", p.Name, line)
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return nil, fmt.Errorf("gridnode %s: /metrics: bad line %q", p.Name, line)
		}
		out[f[0]] = v
	}
	return out, nil
}

// Readyz fetches GET /readyz once: its status code and body.
func (p *Proc) Readyz(ctx context.Context) (int, string, error) {
	code, body, err := p.get(ctx, "/readyz")
	return code, string(body), err
}

// ErrExited is returned by WaitReady when the process exits first.
var ErrExited = errors.New("proctest: process exited")

// WaitReady polls GET /readyz until it answers 200, the process exits, or
// ctx ends.
func (p *Proc) WaitReady(ctx context.Context) error {
	return Poll(ctx, 50*time.Millisecond, func(ctx context.Context) error {
		if p.Exited() {
			return fmt.Errorf("gridnode %s (%s): %w", p.Name, p.state, ErrExited)
		}
		code, body, err := p.get(ctx, "/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("gridnode %s: /readyz: HTTP %d: %s", p.Name, code, body)
		}
		return nil
	})
}

// Poll calls f every interval until it returns nil or ErrExited (wrapped),
// or ctx ends; then it returns f's last error, wrapped with ctx's.
func Poll(ctx context.Context, interval time.Duration, f func(context.Context) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := f(ctx)
		if err == nil || errors.Is(err, ErrExited) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}
