//go:build process

package process_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/proctest"
	shoalmaps "github.com/shoalgrid/shoal/maps"
)

// TestRepeatedSIGTERMStillHandsOver is `timeout 20 gridnode`: timeout(1)
// signals the process and then its process group, so gridnode receives
// SIGTERM twice within a few milliseconds. That is one stop request: the
// member must hand its partitions over and exit 0, not exit at once.
func TestRepeatedSIGTERMStillHandsOver(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	procs := startCluster(t, ctx, 2)
	waitSettled(t, ctx, procs...)
	c := dial(t, ctx, procs[0])
	m := shoalmaps.New(c, "twice")
	const entries = 300
	for i := range entries {
		if err := m.Put(ctx, strconv.Itoa(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	gone := procs[1]
	if err := gone.Term(); err != nil {
		t.Fatal(err)
	}
	// The second signal once the first was taken (the kernel would merge
	// two pending ones), well within the one-second window.
	err := proctest.Poll(ctx, 2*time.Millisecond, func(context.Context) error {
		if !strings.Contains(gone.Output(), "signal received") {
			return errors.New("first signal not handled yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := gone.Term(); err != nil {
		t.Fatal(err)
	}
	code, err := gone.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := gone.Output()
	if code != 0 || !strings.Contains(out, "partitions handed over") || strings.Contains(out, "second signal received") {
		t.Fatalf("exit code %d after two quick SIGTERMs, want 0 after a hand-over", code)
	}
	if !strings.Contains(out, "signal repeated within the coalescing window") {
		t.Error("the repeated signal was not seen (merged by the kernel?): the test proves nothing")
	}
	waitSettled(t, ctx, procs[0])
	n, err := m.Size(ctx)
	if err != nil || n != entries {
		t.Fatalf("size after the leave: %d, %v; want %d", n, err, entries)
	}
}
