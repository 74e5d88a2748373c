package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/locks"
)

func TestLockUsage(t *testing.T) {
	for _, args := range [][]string{
		{"lock"},
		{"lock", "nope", "x"},
		{"lock", "run", "x"},
		{"lock", "status"},
		{"lock", "status", "a", "b"},
		{"lock", "status", "x", "--wait", "1s"},
		{"lock", "run", "x", "--lease", "-1s", "--", "true"},
		{"lock", "run", "", "--", "true"},
		{"elect", "x"},
		{"elect", "", "--", "true"},
		{"elect", "x", "--wait", "-1s", "--", "true"},
	} {
		r := gridctl(t, nil, args...)
		if r.code != exitUsage || !strings.HasPrefix(r.stderr, "gridctl: ") {
			t.Errorf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	for _, topic := range []string{"lock", "elect"} {
		if r := gridctl(t, nil, "help", topic).expect(t, 0); !strings.Contains(r.stdout, "SHOAL_") {
			t.Errorf("help %s: %q", topic, r.stdout)
		}
	}
}

// TestLockCommands runs the lock and elect commands against an in-process
// cluster with the lock service.
func TestLockCommands(t *testing.T) {
	cl := gridtest.New(t, 3, gridtest.WithConfig(func(c *grid.Config) { c.Services = append(c.Services, locks.Service{}) }))
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	addr := "--addr=" + strings.Join(addrs, ",")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	t.Run("run passes the token and the exit status", func(t *testing.T) {
		r := gridctl(t, nil, addr, "lock", "run", "job", "--", "sh", "-c", `echo "$SHOAL_FENCE"; exit 3`).expect(t, 3)
		tok, err := strconv.ParseUint(strings.TrimSpace(r.stdout), 10, 64)
		if err != nil || tok == 0 {
			t.Fatalf("SHOAL_FENCE %q", r.stdout)
		}
		r2 := gridctl(t, nil, addr, "lock", "run", "job", "--", "sh", "-c", `echo "$SHOAL_FENCE"`).expect(t, 0)
		if tok2, _ := strconv.ParseUint(strings.TrimSpace(r2.stdout), 10, 64); tok2 <= tok {
			t.Fatalf("second token %q after %d", r2.stdout, tok)
		}
		if r := gridctl(t, nil, addr, "lock", "status", "job").expect(t, 0); !strings.Contains(r.stdout, "held: false") {
			t.Fatalf("status after run:\n%s", r.stdout)
		}
	})

	t.Run("a command that cannot start", func(t *testing.T) {
		r := gridctl(t, nil, addr, "lock", "run", "job2", "--", "/nonexistent/cmd").expect(t, exitFailure)
		if !strings.Contains(r.stderr, "start") {
			t.Fatalf("stderr %q", r.stderr)
		}
		if r := gridctl(t, nil, addr, "lock", "status", "job2").expect(t, 0); !strings.Contains(r.stdout, "held: false") {
			t.Fatalf("lock kept after a failed start:\n%s", r.stdout)
		}
	})

	t.Run("status and force-unlock", func(t *testing.T) {
		l := locks.New(c, "held", locks.WithOwner("tester"))
		tok, err := l.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r := gridctl(t, nil, addr, "lock", "status", "held").expect(t, 0)
		for _, want := range []string{"held: true", "token: " + strconv.FormatUint(tok, 10), "/tester", "holds: 1", "lease: none", "waiters: 0"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("status lacks %q:\n%s", want, r.stdout)
			}
		}
		r = gridctl(t, nil, addr, "lock", "status", "held", "--json").expect(t, 0)
		if got, want := jsonKeys(t, r.stdout), []string{"held", "holder", "holds", "name", "queue", "token", "waiters"}; !slices.Equal(got, want) {
			t.Errorf("json keys %v, want %v", got, want)
		}
		if !strings.Contains(r.stdout, `"owner":"tester"`) {
			t.Errorf("json %s", r.stdout)
		}
		r = gridctl(t, nil, addr, "lock", "force-unlock", "held").expect(t, 0)
		if !strings.Contains(r.stdout, "released") {
			t.Fatalf("force-unlock: %q", r.stdout)
		}
		if r := gridctl(t, nil, addr, "lock", "force-unlock", "held").expect(t, 0); !strings.Contains(r.stdout, "was not held") {
			t.Fatalf("second force-unlock: %q", r.stdout)
		}
		if err := l.Unlock(ctx); err == nil {
			t.Fatal("unlock after force-unlock succeeded")
		}
	})

	t.Run("run gives up after --wait", func(t *testing.T) {
		l := locks.New(c, "busy")
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		r := gridctl(t, nil, addr, "lock", "run", "busy", "--wait", "200ms", "--", "sh", "-c", "echo ran").expect(t, exitFailure)
		if !strings.Contains(r.stderr, `lock "busy" not acquired within 200ms`) || r.stdout != "" {
			t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
		}
		// The waiter left the queue; the next run waits and gets the lock
		// once it is released.
		done := make(chan result, 1)
		go func() { done <- gridctl(t, nil, addr, "lock", "run", "busy", "--", "sh", "-c", "echo ran") }()
		el := locks.New(c, "busy")
		gridtest.Eventually(t, 20*time.Second, func() (bool, string) {
			st, err := el.Status(ctx)
			return err == nil && st.Waiters == 1, "no waiter yet"
		})
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if r := (<-done).expect(t, 0); r.stdout != "ran\n" {
			t.Fatalf("stdout %q", r.stdout)
		}
	})

	t.Run("elect runs the command with the term", func(t *testing.T) {
		r := gridctl(t, nil, addr, "elect", "leader", "--", "sh", "-c", `echo "$SHOAL_TERM"; exit 4`).expect(t, 4)
		if tok, err := strconv.ParseUint(strings.TrimSpace(r.stdout), 10, 64); err != nil || tok == 0 {
			t.Fatalf("SHOAL_TERM %q", r.stdout)
		}
	})

	t.Run("elect stops the command when leadership is lost", func(t *testing.T) {
		done := make(chan result, 1)
		// The command marks a file once its TERM trap is installed: a
		// SIGTERM before that would kill the shell without "got-term".
		ready := filepath.Join(t.TempDir(), "ready")
		go func() {
			done <- gridctl(t, nil, addr, "elect", "lost", "--check", "50ms", "--",
				"sh", "-c", `trap 'echo got-term; exit 0' TERM; echo started; : > "$0"; while :; do sleep 0.05; done`, ready)
		}()
		el := locks.NewElection(c, "lost")
		gridtest.Eventually(t, 20*time.Second, func() (bool, string) {
			ld, err := el.Leader(ctx)
			return err == nil && ld.Elected, "no leader yet"
		})
		gridtest.Eventually(t, 20*time.Second, func() (bool, string) {
			_, err := os.Stat(ready)
			return err == nil, "the elected command has not started"
		})
		if _, err := locks.New(c, "lost").ForceUnlock(ctx); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		r := (<-done).expect(t, exitFailure)
		if !strings.Contains(r.stderr, "leadership lost") || !strings.Contains(r.stdout, "got-term") {
			t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
		}
		t.Logf("leadership loss stopped the command after %v", time.Since(start).Round(time.Millisecond))
	})
}
