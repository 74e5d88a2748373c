package proctest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

func TestFlagValue(t *testing.T) {
	args := []string{"--gossip", "fast", "--bind", "127.0.0.1:1", "-addr=127.0.0.1:2", "--bind=127.0.0.1:3", "--name"}
	for name, want := range map[string]string{"bind": "127.0.0.1:3", "addr": "127.0.0.1:2", "gossip": "fast", "name": "", "http": ""} {
		if got := flagValue(args, name); got != want {
			t.Errorf("flagValue(%s) = %q, want %q", name, got, want)
		}
	}
}

func TestFreePortIsBindable(t *testing.T) {
	addr := FreeAddr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen tcp %s: %v", addr, err)
	}
	ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	pc.Close()
}

func TestPoll(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := 0
	if err := Poll(ctx, time.Millisecond, func(context.Context) error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Errorf("Poll: %v after %d calls, want success on the third", err, n)
	}
	short, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	err := Poll(short, time.Millisecond, func(context.Context) error { return errors.New("never") })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Poll past its deadline: %v, want DeadlineExceeded", err)
	}
	err = Poll(ctx, time.Millisecond, func(context.Context) error { return fmt.Errorf("p: %w", ErrExited) })
	if !errors.Is(err, ErrExited) {
		t.Errorf("Poll on an exited process: %v, want ErrExited at once", err)
	}
}

func TestWithoutFlag(t *testing.T) {
	args := []string{"--name", "n1", "--join", "127.0.0.1:1", "-join=127.0.0.1:2", "--bind", "127.0.0.1:3", "--joiner", "x", "join"}
	got := withoutFlag(args, "join")
	want := []string{"--name", "n1", "--bind", "127.0.0.1:3", "--joiner", "x", "join"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("withoutFlag = %q, want %q", got, want)
	}
}

func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}

// TestFreePortAvoidsEphemeralRange checks that ports come from below the
// kernel's ephemeral range, where no outgoing connection can take them.
func TestFreePortAvoidsEphemeralRange(t *testing.T) {
	lo, hi := fixedPortRange()
	if lo == hi {
		t.Skip("no room below the ephemeral port range on this machine")
	}
	for range 20 {
		if p := FreePort(t); p < lo || p >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, lo, hi)
		}
	}
}

// TestReservedPortRefusedToOthers checks the cross-binary reservation: a
// port FreePort handed out cannot be reserved again through another open
// file, as another test binary would try.
func TestReservedPortRefusedToOthers(t *testing.T) {
	p := FreePort(t)
	if f, ok := reservePort(p); ok {
		if f != nil {
			f.Close()
		}
		t.Fatalf("port %d reserved twice", p)
	}
}
