// Package netcut cuts network traffic between loopback addresses with
// iptables, for tests of network partitions on one machine: members listen
// on distinct loopback addresses (127.0.0.11, 127.0.0.12, ...; Linux routes
// all of 127.0.0.0/8 to the loopback interface), and a cut drops packets
// from one set of addresses to another with rules such as
//
//	iptables -I INPUT -s 127.0.0.13 -d 127.0.0.11 -j DROP -m comment --comment <tag>
//
// Each Net tags its rules with a unique comment and removes exactly those
// (Heal, and t.Cleanup). Traffic is cut by source address, so every dialer
// of a member must bind the member's address: a socket left unbound would
// leave from 127.0.0.1 and slip past the rules.
//
// Tests call Skip first: it skips them unless the process runs as root
// with iptables installed (CI does both).
package netcut

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Addr returns the loopback address of member i (counting from 1):
// 127.0.0.1x for x = i, so 127.0.0.11, 127.0.0.12, ...; clients use
// ClientAddr.
func Addr(i int) string { return fmt.Sprintf("127.0.0.%d", 10+i) }

// ClientAddr returns the loopback address of test client i (from 1):
// 127.0.0.51, 127.0.0.52, ...
func ClientAddr(i int) string { return fmt.Sprintf("127.0.0.%d", 50+i) }

// Available reports why cuts cannot be made here, or nil: the process must
// run as root, iptables must be installed, and loopback must answer on
// 127.0.0.11.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("netcut: not root (iptables needs root)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return errors.New("netcut: iptables is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "iptables", "-w", "-S", "INPUT").CombinedOutput(); err != nil {
		return fmt.Errorf("netcut: iptables -S INPUT: %v: %s", err, bytes.TrimSpace(out))
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(Addr(1), "0"))
	if err != nil {
		return fmt.Errorf("netcut: cannot listen on %s: %v", Addr(1), err)
	}
	ln.Close()
	return nil
}

// Skip skips t unless cuts can be made here.
func Skip(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
}

// tags numbers the Nets of this process.
var tags atomic.Int64

// Net makes and heals cuts. Its methods are safe for concurrent use.
type Net struct {
	t   testing.TB
	tag string

	mu    sync.Mutex
	rules [][]string // iptables rule specs (without -I/-D INPUT)
}

// New returns a Net whose rules carry a tag unique to this process and
// test; they are all removed when the test ends.
func New(t testing.TB) *Net {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
	if len(name) > 160 {
		name = name[:160]
	}
	n := &Net{t: t, tag: fmt.Sprintf("shoal-netcut-%d-%d-%s", os.Getpid(), tags.Add(1), name)}
	t.Cleanup(func() {
		if err := n.Heal(); err != nil {
			t.Errorf("netcut cleanup: %v", err)
		}
	})
	return n
}

// Tag returns the comment on this Net's rules.
func (n *Net) Tag() string { return n.tag }

// Cut drops all traffic between the addresses of a and those of b, both
// ways.
func (n *Net) Cut(a, b []string) error {
	if err := n.OneWay(a, b); err != nil {
		return err
	}
	return n.OneWay(b, a)
}

// OneWay drops the packets sent from the addresses of from to those of to
// (an asymmetric cut: to still reaches from, but hears nothing back).
func (n *Net) OneWay(from, to []string) error {
	for _, s := range from {
		for _, d := range to {
			if s == d {
				continue
			}
			spec := []string{"-s", s, "-d", d, "-j", "DROP", "-m", "comment", "--comment", n.tag}
			n.mu.Lock()
			dup := slices.ContainsFunc(n.rules, func(r []string) bool { return slices.Equal(r, spec) })
			n.mu.Unlock()
			if dup {
				continue
			}
			if err := iptables(append([]string{"-I", "INPUT"}, spec...)...); err != nil {
				return err
			}
			n.mu.Lock()
			n.rules = append(n.rules, spec)
			n.mu.Unlock()
		}
	}
	return nil
}

// Heal removes every rule this Net added, and nothing else.
func (n *Net) Heal() error {
	n.mu.Lock()
	rules := n.rules
	n.rules = nil
	n.mu.Unlock()
	var errs []error
	for _, spec := range rules {
		if err := iptables(append([]string{"-D", "INPUT"}, spec...)...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Rules returns the number of rules in place.
func (n *Net) Rules() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.rules)
}

// Installed counts the rules carrying this Net's tag in the INPUT chain,
// as iptables lists them.
func (n *Net) Installed() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "iptables", "-w", "-S", "INPUT").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("netcut: iptables -S INPUT: %v: %s", err, bytes.TrimSpace(out))
	}
	count := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "--comment" && strings.Trim(f[i+1], `"`) == n.tag {
				count++
			}
		}
	}
	return count, nil
}

func iptables(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netcut: iptables %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
