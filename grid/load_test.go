package grid_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
)

// writers runs w goroutines that each overwrite their own keys with
// increasing counters through member-chosen proxies until stop is closed,
// and records the last acknowledged value of every key.
type writers struct {
	mu    sync.Mutex
	acked map[string]int
	errs  int
	wg    sync.WaitGroup
}

func startWriters(ctx context.Context, c *gridtest.Cluster, w, keys int, stop <-chan struct{}) *writers {
	ws := &writers{acked: map[string]int{}}
	for g := range w {
		ws.wg.Add(1)
		go func() {
			defer ws.wg.Done()
			mp := maps.New(c.Live()[0], "load")
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-k%d", g, i%keys)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := mp.Put(cctx, key, []byte(strconv.Itoa(i)))
				cancel()
				ws.mu.Lock()
				if err != nil {
					ws.errs++
				} else {
					ws.acked[key] = i
				}
				ws.mu.Unlock()
			}
		}()
	}
	return ws
}

func (ws *writers) verify(t *testing.T, mp *maps.Map) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	lost := 0
	for k, want := range ws.acked {
		v, ok, err := mp.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || string(v) != strconv.Itoa(want) {
			lost++
		}
	}
	t.Logf("%d keys acknowledged, %d lost, %d errors", len(ws.acked), lost, ws.errs)
	if lost != 0 || ws.errs != 0 {
		t.Fatalf("lost %d acknowledged writes, %d errors", lost, ws.errs)
	}
}

func TestWritesDuringJoinAndLeaveAreNotLost(t *testing.T) {
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 90*time.Second)
	stop := make(chan struct{})
	ws := startWriters(ctx, c, 8, 200, stop)
	c.Add()
	c.WaitStable()
	c.Add()
	c.WaitStable()
	c.Shutdown(1)
	c.WaitStable()
	close(stop)
	ws.wg.Wait()
	ws.verify(t, maps.New(c.Live()[0], "load"))
}
