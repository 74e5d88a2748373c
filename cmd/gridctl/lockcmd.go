package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/shoalgrid/shoal/locks"
	"github.com/shoalgrid/shoal/op"
)

// exitCodeError makes run exit with code, printing msg (if any) first.
// "lock run" and "elect" exit with their command's status.
type exitCodeError struct {
	code int
	msg  string
}

func (e *exitCodeError) Error() string { return e.msg }

// killGrace is how long a command gets between SIGTERM and SIGKILL.
const killGrace = 10 * time.Second

// lockCmd implements "gridctl lock SUBCOMMAND ...".
func lockCmd(ctx context.Context, e env, g *globals, args []string) error {
	fs := newFlagSet("lock")
	lease := fs.Duration("lease", 0, "release the lock by itself after this long (run only)")
	wait := fs.Duration("wait", 0, "give up if the lock is not acquired within this long (run only; 0: wait until interrupted)")
	pos, err := parseCommand(e, "lock", fs, g, args)
	if err != nil {
		return err
	}
	sub, pos, err := subcommand("lock", pos, []subSpec{
		{"run", 2, -1, "NAME -- CMD [ARGS...]"},
		{"status", 1, 1, "NAME"},
		{"force-unlock", 1, 1, "NAME"},
	})
	if err != nil {
		return err
	}
	if sub != "run" && (*lease != 0 || *wait != 0) {
		return usagef("lock", "--lease and --wait apply to lock run only")
	}
	if *lease < 0 || *wait < 0 {
		return usagef("lock", "--lease and --wait must not be negative")
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	l := locks.New(c, pos[0])
	switch sub {
	case "status":
		octx, cancel := context.WithTimeout(ctx, g.timeout)
		defer cancel()
		st, err := l.Status(octx)
		if err != nil {
			return err
		}
		if g.json {
			return printLockStatusJSON(e.stdout, &st)
		}
		printLockStatus(e.stdout, &st)
		return nil
	case "force-unlock":
		octx, cancel := context.WithTimeout(ctx, g.timeout)
		defer cancel()
		st, err := l.Status(octx)
		if err != nil {
			return err
		}
		released, err := l.ForceUnlock(octx)
		if err != nil {
			return err
		}
		if released {
			fmt.Fprintf(e.stdout, "released lock %q (token %d, holder %v)\n", pos[0], st.Token, st.Holder)
		} else {
			fmt.Fprintf(e.stdout, "lock %q was not held\n", pos[0])
		}
		return nil
	}

	// run
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if *wait > 0 {
		wctx, cancel = context.WithTimeout(ctx, *wait)
	}
	tok, err := l.Lock(wctx, locks.WithLease(*lease))
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted while waiting for lock %q", pos[0])
		}
		if errors.Is(err, op.ErrTimeout) && *wait > 0 {
			return fmt.Errorf("lock %q not acquired within %v", pos[0], *wait)
		}
		return err
	}
	code, runErr := runChild(ctx, e, pos[1:], "SHOAL_FENCE="+strconv.FormatUint(tok, 10), nil)
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), g.timeout)
	defer ucancel()
	if err := l.Unlock(uctx); err != nil {
		fmt.Fprintf(e.stderr, "gridctl: warning: releasing lock %q: %v\n", pos[0], err)
	}
	if runErr != nil {
		return runErr
	}
	return &exitCodeError{code: code}
}

// electCmd implements "gridctl elect NAME -- CMD [ARGS...]".
func electCmd(ctx context.Context, e env, g *globals, args []string) error {
	fs := newFlagSet("elect")
	wait := fs.Duration("wait", 0, "give up if not elected within this long (0: wait until interrupted)")
	check := fs.Duration("check", 0, "how often the leader confirms its leadership (default: the session heartbeat, else 1s)")
	pos, err := parseCommand(e, "elect", fs, g, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return usagef("elect", "elect needs NAME -- CMD [ARGS...]")
	}
	if pos[0] == "" {
		return usagef("elect", "election name is empty")
	}
	if *wait < 0 || *check < 0 {
		return usagef("elect", "--wait and --check must not be negative")
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	el := locks.NewElection(c, pos[0], locks.WithCheckInterval(*check))
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if *wait > 0 {
		wctx, cancel = context.WithTimeout(ctx, *wait)
	}
	term, err := el.Campaign(wctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted while campaigning in %q", pos[0])
		}
		if errors.Is(err, op.ErrTimeout) && *wait > 0 {
			return fmt.Errorf("not elected in %q within %v", pos[0], *wait)
		}
		return err
	}
	fmt.Fprintf(e.stderr, "gridctl: elected in %q with term %d\n", pos[0], term.Value())
	code, runErr := runChild(ctx, e, pos[1:], "SHOAL_TERM="+strconv.FormatUint(term.Value(), 10), term.Done())
	lost := term.Lost()
	cause := term.Err()
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), g.timeout)
	defer rcancel()
	if err := term.Resign(rctx); err != nil {
		fmt.Fprintf(e.stderr, "gridctl: warning: resigning from %q: %v\n", pos[0], err)
	}
	switch {
	case runErr != nil:
		return runErr
	case lost:
		return &exitCodeError{code: exitFailure, msg: fmt.Sprintf("gridctl: %v (command stopped, its status was %d)", cause, code)}
	}
	return &exitCodeError{code: code}
}

// runChild runs argv with the extra environment variable, its standard
// streams connected to e's. It sends SIGTERM to the command when ctx ends
// (gridctl was interrupted) or stop is closed (leadership lost), and
// SIGKILL killGrace later. It returns the command's exit status (128+N
// when signal N killed it) or an error if the command could not start.
func runChild(ctx context.Context, e env, argv []string, extraEnv string, stop <-chan struct{}) (int, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), extraEnv)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %q: %w", argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = terminate(cmd, done)
	case <-stop:
		err = terminate(cmd, done)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, fmt.Errorf("run %q: %w", argv[0], err)
}

// terminate sends SIGTERM, then SIGKILL after killGrace, and returns the
// command's Wait result.
func terminate(cmd *exec.Cmd, done <-chan error) error {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(killGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		_ = cmd.Process.Kill()
		return <-done
	}
}

// lockStatusJSON is the --json form of "lock status".
type lockStatusJSON struct {
	Name     string       `json:"name"`
	Held     bool         `json:"held"`
	Holder   *holderJSON  `json:"holder,omitempty"`
	Token    uint64       `json:"token"`
	Holds    int          `json:"holds"`
	LeaseEnd string       `json:"lease_end,omitempty"`
	Waiters  int          `json:"waiters"`
	Queue    []holderJSON `json:"queue"`
}

type holderJSON struct {
	Session string `json:"session"`
	Owner   string `json:"owner"`
}

func printLockStatusJSON(w io.Writer, st *locks.Status) error {
	out := lockStatusJSON{Name: st.Name, Held: st.Held, Token: st.Token, Holds: st.Count, Waiters: st.Waiters, Queue: []holderJSON{}}
	if st.Held {
		out.Holder = &holderJSON{Session: fmt.Sprintf("%016x", st.Holder.Session), Owner: st.Holder.Owner}
	}
	if !st.LeaseEnd.IsZero() {
		out.LeaseEnd = st.LeaseEnd.UTC().Format(time.RFC3339Nano)
	}
	for _, h := range st.Queue {
		out.Queue = append(out.Queue, holderJSON{Session: fmt.Sprintf("%016x", h.Session), Owner: h.Owner})
	}
	enc := json.NewEncoder(w)
	return enc.Encode(out)
}

func printLockStatus(w io.Writer, st *locks.Status) {
	fmt.Fprintf(w, "lock: %s\n", st.Name)
	if !st.Held {
		fmt.Fprintln(w, "held: false")
	} else {
		fmt.Fprintln(w, "held: true")
		fmt.Fprintf(w, "holder: %v\n", st.Holder)
		fmt.Fprintf(w, "token: %d\n", st.Token)
		fmt.Fprintf(w, "holds: %d\n", st.Count)
		switch {
		case st.LeaseEnd.IsZero():
			fmt.Fprintln(w, "lease: none")
		case st.LeaseEnded:
			fmt.Fprintf(w, "lease: ended %s (release pending)\n", st.LeaseEnd.UTC().Format(time.RFC3339Nano))
		default:
			fmt.Fprintf(w, "lease: until %s\n", st.LeaseEnd.UTC().Format(time.RFC3339Nano))
		}
	}
	fmt.Fprintf(w, "waiters: %d\n", st.Waiters)
	for i, h := range st.Queue {
		fmt.Fprintf(w, "  %d. %v\n", i+1, h)
	}
}
