package main

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestJSONLogs checks that with --log-format json every line a member logs
// from start to stop is one JSON object with time, level and msg, so a log
// pipeline can parse all of it.
func TestJSONLogs(t *testing.T) {
	o := mustParse(t, []string{"--name", "j1", "--bind", "127.0.0.1:0", "--addr", "127.0.0.1:0", "--gossip", "fast", "--log-format", "json"}, env())
	var logs syncBuffer
	sigs := make(chan os.Signal, 2)
	codes := make(chan int, 1)
	go func() { codes <- run(o, o.newLogger(&logs), &logs, sigs, func(int) { t.Error("exit called") }) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "gridnode running") {
		if time.Now().After(deadline) {
			t.Fatalf("member did not start:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling the log buffer, with a deadline
	}
	sigs <- syscall.SIGTERM
	if code := waitCode(t, codes, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	n := 0
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("not JSON: %q", sc.Text())
			continue
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("line lacks %q: %s", k, sc.Text())
			}
		}
		n++
	}
	if n < 3 {
		t.Errorf("only %d log lines:\n%s", n, logs.String())
	}
}
