package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
)

// TestSessionTTL: --session-ttl, SHOAL_SESSION_TTL and the config file's
// session-ttl set grid.Config.SessionTTL (flag over environment over file);
// the default is grid's.
func TestSessionTTL(t *testing.T) {
	if got := mustParse(t, nil, env()).gridConfig(nil).SessionTTL; got != grid.DefaultSessionTTL {
		t.Errorf("default %v, want %v", got, grid.DefaultSessionTTL)
	}
	file := writeConfig(t, "session-ttl: 7s\n")
	cases := []struct {
		name   string
		args   []string
		getenv func(string) (string, bool)
		want   time.Duration
	}{
		{"flag", []string{"--session-ttl", "500ms"}, env(), 500 * time.Millisecond},
		{"env", nil, env("SHOAL_SESSION_TTL", "3s"), 3 * time.Second},
		{"file", []string{"--config", file}, env(), 7 * time.Second},
		{"env over file", []string{"--config", file}, env("SHOAL_SESSION_TTL", "3s"), 3 * time.Second},
		{"flag over env", []string{"--session-ttl", "30ms"}, env("SHOAL_SESSION_TTL", "3s"), 30 * time.Millisecond},
	}
	for _, c := range cases {
		if got := mustParse(t, c.args, c.getenv).gridConfig(nil).SessionTTL; got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestSessionTTLUsageErrors: a session TTL grid would refuse is a usage
// error (exit 2) naming the problem.
func TestSessionTTLUsageErrors(t *testing.T) {
	for _, c := range []struct{ val, want string }{
		{"0", "want a positive duration"},
		{"-1s", "want a positive duration"},
		{"29ms", "want at least 30ms"},
		{"soon", "want a duration"},
	} {
		var stdout, stderr bytes.Buffer
		if code := gridnode([]string{"--session-ttl", c.val}, env(), &stdout, &stderr); code != 2 {
			t.Fatalf("--session-ttl %s: exit code %d, want 2; stderr:\n%s", c.val, code, stderr.String())
		}
		if msg := stderr.String(); !strings.Contains(msg, "session-ttl") || !strings.Contains(msg, c.want) {
			t.Errorf("--session-ttl %s: stderr %q, want %q", c.val, msg, c.want)
		}
	}
}
