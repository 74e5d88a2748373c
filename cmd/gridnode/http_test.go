package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, gridtest.LeakOptions()...)
}

// testLogger discards logs unless SHOAL_TEST_LOG is set, as in gridtest.
func testLogger() *slog.Logger {
	if os.Getenv("SHOAL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startMember starts a single real member on free loopback ports and waits
// until it follows a table.
func startMember(t *testing.T) *grid.Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := grid.Start(ctx, grid.Config{
		Name: "h1", BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
		Gossip: grid.FastGossip(), Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

func get(t *testing.T, c *http.Client, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func TestHTTPWithMember(t *testing.T) {
	m := startMember(t)
	ts := httptest.NewServer(newHTTPHandler(func() *grid.Member { return m }, httpOptions{}))
	defer ts.Close()
	c := ts.Client()

	if code, body, _ := get(t, c, ts.URL+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body, _ := get(t, c, ts.URL+"/readyz"); code != 200 {
		t.Errorf("/readyz of a ready member: %d %q", code, body)
	}

	code, body, h := get(t, c, ts.URL+"/status")
	if code != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("/status: %d %s %q", code, h.Get("Content-Type"), body)
	}
	var doc statusDoc
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("decode /status: %v\n%s", err, body)
	}
	st := m.Stats()
	if doc.Name != "h1" || doc.Addr != m.Addr() || !doc.Ready || !doc.Coordinator || doc.TableVersion != st.TableVersion || doc.PartitionsOwned != 271 {
		t.Errorf("/status stats part: %+v", doc.Stats)
	}
	if len(doc.Members) != 1 || doc.Members[0] != (memberDoc{Name: "h1", Addr: m.Addr(), Gossip: m.GossipAddr()}) {
		t.Errorf("/status members: %+v", doc.Members)
	}
	if doc.Table.Version != st.TableVersion || doc.Table.Partitions != 271 || doc.Table.Owners["h1"] != 271 || doc.Table.Unowned != 0 || doc.Table.Assignment != nil {
		t.Errorf("/status table: %+v", doc.Table)
	}
	// The raw keys are the contract that scripts and the process tests use.
	for _, key := range []string{`"table_version":`, `"members": [`, `"gossip": "`, `"owners": {`, `"partitions_owned":`, `"leaving": false`,
		`"partitions_backup": 0`, `"unsynced_backups": 0`, `"backup_records": 0`, `"fenced": false`, `"table_backups": 1`} {
		if !strings.Contains(body, key) {
			t.Errorf("/status lacks %s:\n%s", key, body)
		}
	}

	code, body, _ = get(t, c, ts.URL+"/status?assignment=true")
	doc = statusDoc{}
	if err := json.Unmarshal([]byte(body), &doc); code != 200 || err != nil || len(doc.Table.Assignment) != 271 || doc.Table.Assignment[270] != "h1" {
		t.Errorf("/status?assignment=true: %d %v %v", code, err, doc.Table.Assignment)
	}
	if code, _, _ := get(t, c, ts.URL+"/status?assignment=maybe"); code != http.StatusBadRequest {
		t.Errorf("/status?assignment=maybe: %d, want 400", code)
	}

	code, body, h = get(t, c, ts.URL+"/metrics")
	if code != 200 || h.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("/metrics: %d %q", code, h.Get("Content-Type"))
	}
	samples := parseExposition(t, body)
	want := map[string]float64{
		"shoal_members": 1, "shoal_table_version": float64(st.TableVersion), "shoal_partitions_owned": 271,
		"shoal_entries": 0, "shoal_requests_served_total": 0, "shoal_migrations_in_total": 0,
		"shoal_migrations_out_total": 0, "shoal_coordinator": 1, "shoal_ready": 1, "shoal_leaving": 0,
		"shoal_partitions_backup": 0, "shoal_unsynced_backups": 0, "shoal_table_backups": 1,
		"shoal_backup_records_total": 0, "shoal_fenced": 0,
	}
	for name, v := range want {
		if got, ok := samples[name]; !ok || got != v {
			t.Errorf("metric %s = %v (present %v), want %v", name, got, ok, v)
		}
	}

	resp, err := c.Post(ts.URL+"/status", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: %d, want 405", resp.StatusCode)
	}
}

// parseExposition checks body against the text exposition format 0.0.4
// (HELP and TYPE before each family's samples; counters, and only they, end
// in _total; a histogram's buckets are cumulative and end with le="+Inf",
// equal to its _count) and returns the samples by series, as written
// ("name" or `name{label="v",...}`).
func parseExposition(t *testing.T, body string) map[string]float64 {
	t.Helper()
	samples := map[string]float64{}
	help, typ := map[string]bool{}, map[string]string{}
	lastBucket := map[string]float64{} // histogram series without le -> last cumulative count
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "# HELP "):
			if len(f) < 4 {
				t.Errorf("HELP without text: %q", line)
			}
			help[f[2]] = true
		case strings.HasPrefix(line, "# TYPE "):
			if len(f) != 4 || (f[3] != "gauge" && f[3] != "counter" && f[3] != "histogram") {
				t.Errorf("bad TYPE line %q", line)
				continue
			}
			typ[f[2]] = f[3]
		default:
			i := strings.LastIndexByte(line, ' ')
			if i < 0 {
				t.Errorf("bad sample line %q", line)
				continue
			}
			series, val := line[:i], line[i+1:]
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				t.Errorf("bad value in %q", line)
			}
			name, labels, _ := strings.Cut(series, "{")
			family := name
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suf); ok && typ[b] == "histogram" {
					family = b
				}
			}
			if !help[family] || typ[family] == "" {
				t.Errorf("sample %s before its HELP and TYPE", series)
			}
			if (typ[family] == "counter") != strings.HasSuffix(family, "_total") {
				t.Errorf("%s is a %s: counters, and only they, end in _total", family, typ[family])
			}
			if labels != "" && !strings.HasSuffix(labels, "}") {
				t.Errorf("bad labels in %q", line)
			}
			if typ[family] == "histogram" {
				key := family + "{" + leRE.ReplaceAllString(strings.TrimSuffix(labels, "}"), "") + "}"
				switch {
				case strings.HasSuffix(name, "_bucket"):
					if v < lastBucket[key] {
						t.Errorf("%s: bucket count falls to %v", series, v)
					}
					lastBucket[key] = v
				case strings.HasSuffix(name, "_count"):
					inf := strings.Replace(series, "_count{", "_bucket{", 1)
					if !strings.Contains(body, inf[:len(inf)-1]+`,le="+Inf"} `+val+"\n") {
						t.Errorf("%s = %v differs from its +Inf bucket", series, v)
					}
				}
			}
			samples[series] = v
		}
	}
	if !strings.HasSuffix(body, "\n") {
		t.Error("exposition does not end with a newline")
	}
	return samples
}

// leRE matches the le label of a bucket, to group a histogram's buckets.
var leRE = regexp.MustCompile(`,?le="[^"]*"`)

func TestHTTPBeforeMemberStarted(t *testing.T) {
	ts := httptest.NewServer(newHTTPHandler(func() *grid.Member { return nil }, httpOptions{}))
	defer ts.Close()
	c := ts.Client()
	want := map[string]int{"/healthz": 200, "/readyz": 503, "/status": 503, "/metrics": 200, "/nope": 404, "/debug/pprof/": 404}
	for path, code := range want {
		if got, body, _ := get(t, c, ts.URL+path); got != code {
			t.Errorf("%s before start: %d %q, want %d", path, got, body, code)
		}
	}
	// While joining, /metrics says so, and the runtime's metrics are there.
	_, body, _ := get(t, c, ts.URL+"/metrics")
	s := parseExposition(t, body)
	for name, want := range map[string]float64{"shoal_ready": 0, "shoal_starting": 1} {
		if got, ok := s[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if _, ok := s["go_gc_cycles_total"]; !ok {
		t.Error("no go_gc_cycles_total")
	}
	for _, name := range []string{"go_goroutines", "go_threads", "process_cpu_seconds_total",
		"process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"} {
		if s[name] <= 0 {
			t.Errorf("%s = %v, want > 0", name, s[name])
		}
	}
	if !strings.Contains(body, "shoal_build_info{version=\"") {
		t.Errorf("no shoal_build_info:\n%s", body)
	}
	if _, ok := s["shoal_members"]; ok {
		t.Error("shoal_members reported before the member started")
	}
}

func TestPprofFlag(t *testing.T) {
	ts := httptest.NewServer(newHTTPHandler(func() *grid.Member { return nil }, httpOptions{pprof: true}))
	defer ts.Close()
	if code, body, _ := get(t, ts.Client(), ts.URL+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d", code)
	}
	if code, body, _ := get(t, ts.Client(), ts.URL+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("/debug/pprof/goroutine: %d %.100q", code, body)
	}
	o := mustParse(t, []string{"--pprof"}, env())
	if !o.pprof {
		t.Error("--pprof not parsed")
	}
}
