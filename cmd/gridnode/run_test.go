package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/proctest"
)

// runAsync runs the node with args in a goroutine and returns its signal
// channel and a channel that yields the exit code.
func runAsync(t *testing.T, args ...string) (chan os.Signal, <-chan int, *syncBuffer) {
	t.Helper()
	o := mustParse(t, args, env())
	sigs := make(chan os.Signal, 2)
	codes := make(chan int, 1)
	stderr := &syncBuffer{}
	go func() {
		codes <- run(o, testLogger(), stderr, sigs, func(code int) { t.Errorf("exit(%d) called", code) })
	}()
	return sigs, codes, stderr
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitCode(t *testing.T, codes <-chan int, within time.Duration) int {
	t.Helper()
	select {
	case c := <-codes:
		return c
	case <-time.After(within):
		t.Fatalf("run did not return within %v", within)
		return 0
	}
}

func TestRunServesAndStopsCleanlyOnSignal(t *testing.T) {
	httpAddr := proctest.FreeAddr(t)
	sigs, codes, _ := runAsync(t, "--name", "r1", "--bind", "127.0.0.1:0", "--addr", "127.0.0.1:0", "--http", httpAddr, "--gossip", "fast")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	err := proctest.Poll(ctx, 20*time.Millisecond, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/readyz", nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return &statusError{resp.StatusCode}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("never ready: %v", err)
	}
	sigs <- syscall.SIGTERM
	if code := waitCode(t, codes, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	// The HTTP server stopped with the member.
	if resp, err := client.Get("http://" + httpAddr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("HTTP server still answers after stop")
	}
}

type statusError struct{ code int }

func (e *statusError) Error() string { return http.StatusText(e.code) }

func TestRunFailsWhenAddressTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, args := range [][]string{
		{"--bind", "127.0.0.1:0", "--addr", ln.Addr().String()},
		{"--bind", "127.0.0.1:0", "--addr", "127.0.0.1:0", "--http", ln.Addr().String()},
	} {
		_, codes, _ := runAsync(t, args...)
		if code := waitCode(t, codes, 10*time.Second); code != 1 {
			t.Errorf("%q: exit code %d, want 1", args, code)
		}
	}
}

func TestRunJoinTimeoutAndSignalDuringJoin(t *testing.T) {
	dead := proctest.FreeAddr(t) // nothing listens there
	_, codes, _ := runAsync(t, "--bind", "127.0.0.1:0", "--addr", "127.0.0.1:0", "--join", dead, "--join-timeout", "300ms")
	if code := waitCode(t, codes, 10*time.Second); code != 1 {
		t.Errorf("join of a dead seed: exit code %d, want 1", code)
	}

	sigs, codes, _ := runAsync(t, "--bind", "127.0.0.1:0", "--addr", "127.0.0.1:0", "--join", dead, "--join-timeout", "1m")
	sigs <- syscall.SIGINT
	if code := waitCode(t, codes, 10*time.Second); code != 0 {
		t.Errorf("signal while joining: exit code %d, want 0", code)
	}
}

func TestRunGridConfigErrorExit2(t *testing.T) {
	_, codes, stderr := runAsync(t, "--bind", "127.0.0.1:0", "--addr", "127.0.0.1:0", "--host", strings.Repeat("h", 600))
	if code := waitCode(t, codes, 10*time.Second); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	if msg := stderr.String(); !strings.HasPrefix(msg, "gridnode: ") || strings.Count(msg, "\n") != 1 {
		t.Errorf("stderr %q, want one gridnode: line", msg)
	}
}

// fakeClock returns the given times, one per call, and counts the calls.
type fakeClock struct {
	mu    sync.Mutex
	times []time.Time
	calls int
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if len(c.times) == 0 {
		return time.Time{}
	}
	t := c.times[0]
	c.times = c.times[1:]
	return t
}

func TestWatchSignals(t *testing.T) {
	t0 := time.Unix(1000, 0)
	// Three signals: at t0, 5 ms later (timeout(1) signalling the process
	// and then its group), and 2 s later. Only the third exits.
	clock := &fakeClock{times: []time.Time{t0, t0.Add(5 * time.Millisecond), t0.Add(2 * time.Second)}}
	sigs := make(chan os.Signal) // unbuffered: a send returns once the watcher took it
	stopped := make(chan struct{})
	exited := make(chan int, 1)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		watchSignals(sigs, testLogger(), func() { close(stopped) }, func(c int) {
			clock.mu.Lock()
			exited <- clock.calls
			clock.mu.Unlock()
		}, done, clock.now)
	}()
	sigs <- syscall.SIGTERM
	<-stopped
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGTERM
	select {
	case calls := <-exited:
		if calls != 3 {
			t.Errorf("exit called after %d signals, want after the third (the second, 5 ms after the first, is the same request)", calls)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after a signal 2 s after the first")
	}
	close(done)
	<-finished

	// Closing done ends the watcher without any signal.
	done2, finished2 := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished2)
		watchSignals(make(chan os.Signal), testLogger(), func() { t.Error("stop called") }, func(int) { t.Error("exit called") }, done2, time.Now)
	}()
	close(done2)
	<-finished2
}

func TestSysmonAwake(t *testing.T) {
	for godebug, want := range map[string]bool{
		"":                                      false,
		"schedtrace=2147483647":                 true,
		"madvdontneed=1, schedtrace=1000":       true,
		"schedtrace=0":                          false,
		"schedtrace=1000,schedtrace=0":          false,
		"schedtrace=0,schedtrace=5":             true,
		"schedtrace=x":                          false,
		"scheddetail=1":                         false,
		"http2client=0,schedtrace=2147483647,x": true,
	} {
		if got := sysmonAwake(godebug); got != want {
			t.Errorf("sysmonAwake(%q) = %v, want %v", godebug, got, want)
		}
	}
}
