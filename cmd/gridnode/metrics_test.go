package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/internal/proctest"
	"github.com/shoalgrid/shoal/maps"
)

// scrape fetches and parses /metrics at httpAddr.
func scrape(t *testing.T, ctx context.Context, httpAddr string) map[string]float64 {
	t.Helper()
	m, err := tryScrape(t, ctx, httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tryScrape is scrape returning the failure to fetch instead of failing.
func tryScrape(t *testing.T, ctx context.Context, httpAddr string) (map[string]float64, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", httpAddr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %d %v", httpAddr, resp.StatusCode, err)
	}
	return parseExposition(t, string(b)), nil
}

const putCount = `shoal_op_duration_seconds_count{service="map",op="put"}`

// TestMetricsMoveUnderLoadAndWhileJoining runs real gridnodes (in process)
// and reads their /metrics as an operator's Prometheus would: a member that
// is still joining answers with shoal_ready 0; under load the request
// counters and latency histograms grow; and a member that joins during the
// load reports migrations and then serves.
func TestMetricsMoveUnderLoadAndWhileJoining(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	addr := func() string { return proctest.FreeAddr(t) }
	aHTTP, aData, aGossip := addr(), addr(), addr()
	bHTTP, bData := addr(), addr()
	cHTTP, cData := addr(), addr()
	common := []string{"--gossip", "fast", "--shutdown-timeout", "20s"}

	// B starts first, joining A, which does not run yet: B is joining.
	bSigs, bCodes, _ := runAsync(t, append([]string{"--name", "b", "--bind", "127.0.0.1:0", "--addr", bData, "--http", bHTTP,
		"--join", aGossip, "--join-timeout", "60s"}, common...)...)
	err := proctest.Poll(ctx, 20*time.Millisecond, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+bHTTP+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	if err != nil {
		t.Fatalf("B's HTTP server never answered: %v", err)
	}
	m := scrape(t, ctx, bHTTP)
	if m["shoal_ready"] != 0 || m["shoal_starting"] != 1 || m["go_goroutines"] <= 0 {
		t.Errorf("while joining: shoal_ready %v shoal_starting %v go_goroutines %v, want 0, 1, > 0",
			m["shoal_ready"], m["shoal_starting"], m["go_goroutines"])
	}

	aSigs, aCodes, _ := runAsync(t, append([]string{"--name", "a", "--bind", aGossip, "--addr", aData, "--http", aHTTP}, common...)...)
	waitMetric(t, ctx, bHTTP, "shoal_ready", 1)
	waitMetric(t, ctx, aHTTP, "shoal_members", 2)

	c, err := client.Dial(ctx, client.Config{Addrs: []string{aData, bData}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	users := maps.New(c, "users")
	// Load: puts and gets until stop, counting failures.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failMu sync.Mutex
	var firstFail error
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("k%d-%d", w, i%500)
				octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
				err := users.Put(octx, k, []byte("v"+strconv.Itoa(i)))
				if err == nil {
					_, _, err = users.Get(octx, k)
				}
				ocancel()
				if err != nil {
					failMu.Lock()
					if firstFail == nil {
						firstFail = err
					}
					failMu.Unlock()
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()

	before := scrape(t, ctx, aHTTP)
	waitMetricAbove(t, ctx, aHTTP, putCount, before[putCount]+100)
	waitMetricAbove(t, ctx, aHTTP, "shoal_requests_served_total", before["shoal_requests_served_total"]+100)

	// C joins under load: its /metrics answers at once, its migrations in
	// and A's out grow, and it ends up executing requests.
	aBefore := scrape(t, ctx, aHTTP)
	cSigs, cCodes, _ := runAsync(t, append([]string{"--name", "c", "--bind", "127.0.0.1:0", "--addr", cData, "--http", cHTTP,
		"--join", aGossip}, common...)...)
	waitMetricAbove(t, ctx, cHTTP, "shoal_migrations_in_total", 0)
	waitMetric(t, ctx, cHTTP, "shoal_ready", 1)
	waitMetricAbove(t, ctx, cHTTP, putCount, 0)
	aAfter := scrape(t, ctx, aHTTP)
	if aAfter["shoal_migrations_out_total"]+scrape(t, ctx, bHTTP)["shoal_migrations_out_total"] <= aBefore["shoal_migrations_out_total"] {
		t.Errorf("no migration out of A or B while C joined")
	}
	if aAfter[putCount] <= aBefore[putCount] || aAfter[`shoal_op_duration_seconds_sum{service="map",op="get"}`] <= aBefore[`shoal_op_duration_seconds_sum{service="map",op="get"}`] {
		t.Errorf("A's latency histograms did not move while C joined: puts %v -> %v", aBefore[putCount], aAfter[putCount])
	}
	t.Logf("A: puts %v -> %v, migrations out %v -> %v; C: migrations in %v, puts %v",
		aBefore[putCount], aAfter[putCount], aBefore["shoal_migrations_out_total"], aAfter["shoal_migrations_out_total"],
		scrape(t, ctx, cHTTP)["shoal_migrations_in_total"], scrape(t, ctx, cHTTP)[putCount])

	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close
	if firstFail != nil {
		t.Errorf("an operation failed under load: %v", firstFail)
	}
	for _, n := range []struct {
		sigs  chan os.Signal
		codes <-chan int
	}{{cSigs, cCodes}, {bSigs, bCodes}, {aSigs, aCodes}} {
		n.sigs <- syscall.SIGTERM
		if code := waitCode(t, n.codes, 30*time.Second); code != 0 {
			t.Errorf("exit code %d", code)
		}
	}
}

func waitMetric(t *testing.T, ctx context.Context, httpAddr, series string, want float64) {
	t.Helper()
	var got float64
	err := proctest.Poll(ctx, 50*time.Millisecond, func(context.Context) error {
		m, err := tryScrape(t, ctx, httpAddr)
		if err != nil {
			return err
		}
		if got = m[series]; got != want {
			return fmt.Errorf("%s = %v", series, got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s at %s: %v, want %v", series, httpAddr, err, want)
	}
}

func waitMetricAbove(t *testing.T, ctx context.Context, httpAddr, series string, floor float64) {
	t.Helper()
	err := proctest.Poll(ctx, 50*time.Millisecond, func(context.Context) error {
		m, err := tryScrape(t, ctx, httpAddr)
		if err != nil {
			return err
		}
		if got := m[series]; got <= floor {
			return fmt.Errorf("%s = %v", series, got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s at %s never rose above %v: %v", series, httpAddr, floor, err)
	}
}
