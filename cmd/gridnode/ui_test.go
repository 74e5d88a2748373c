package main

import (
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
)

// uiCluster starts a 3-member cluster with some data and returns the
// status page server of its first member, and the members' names.
func uiCluster(t *testing.T) (*httptest.Server, []string) {
	t.Helper()
	cl := gridtest.New(t, 3)
	m := cl.Member(0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 100 {
		if err := maps.New(m, "users").Put(ctx, "u"+strconv.Itoa(i), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := maps.New(m, "users").Get(ctx, "u"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	events := newEventLog(10)
	events.add("started", "member <m0> started") // must be escaped
	ts := httptest.NewServer(newHTTPHandler(func() *grid.Member { return m }, httpOptions{cluster: "demo", events: events}))
	t.Cleanup(ts.Close)
	var names []string
	for _, mb := range cl.Live() {
		names = append(names, mb.Name())
	}
	return ts, names
}

func TestStatusPageHTML(t *testing.T) {
	ts, names := uiCluster(t)
	for _, path := range []string{"/", "/ui"} {
		code, body, h := get(t, ts.Client(), ts.URL+path)
		if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
			t.Fatalf("%s: %d %s", path, code, h.Get("Content-Type"))
		}
		for _, want := range append([]string{`<span id="cluster">demo</span>`, "users", "put", "get", "&lt;m0&gt;", "table version", `id="map"`}, names...) {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %q", path, want)
			}
		}
		if strings.Contains(body, "<m0>") {
			t.Errorf("%s: event text not escaped", path)
		}
		if n := strings.Count(body, `<tr class="member">`); n != len(names) {
			t.Errorf("%s: %d member rows, want %d", path, n, len(names))
		}
		if n := strings.Count(body, `title="partition `); n != 271 {
			t.Errorf("%s: %d partition cells, want 271", path, n)
		}
	}
	// Before the member started the page says so, with the events.
	ts2 := httptest.NewServer(newHTTPHandler(func() *grid.Member { return nil }, httpOptions{cluster: "demo"}))
	defer ts2.Close()
	if code, body, _ := get(t, ts2.Client(), ts2.URL+"/"); code != 200 || !strings.Contains(body, "joining") {
		t.Errorf("page while joining: %d %q", code, body)
	}
}
