package main

import (
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid/gridtest"
)

// TestMemberRemove: "member remove" refuses a live member and removes a
// crashed one from the expected size.
func TestMemberRemove(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"member"}, "needs a subcommand"},
		{[]string{"member", "frob"}, `unknown member subcommand "frob"`},
		{[]string{"member", "remove"}, "member remove needs NAME"},
		{[]string{"member", "remove", "a", "b"}, "member remove needs NAME"},
	} {
		r := gridctl(t, nil, tc.args...).expect(t, 2)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%q: stderr %q, want %q", tc.args, r.stderr, tc.want)
		}
	}

	cl := gridtest.New(t, 3)
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	addr := "--addr=" + strings.Join(addrs[:2], ",")
	crashed := cl.Member(2).Name()
	r := gridctl(t, nil, addr, "member", "remove", crashed).expect(t, 1)
	if !strings.Contains(r.stderr, "is alive") {
		t.Fatalf("removing a live member: %q", r.stderr)
	}
	cl.Crash(2)
	m0, m1 := cl.Member(0), cl.Member(1)
	gridtest.Eventually(t, 30*time.Second, func() (bool, string) {
		return len(m0.Members()) == 2 && len(m1.Members()) == 2, "the survivors still see the crashed member"
	})
	r = gridctl(t, nil, addr, "member", "remove", crashed).expect(t, 0)
	if !strings.Contains(r.stdout, "member \""+crashed+"\" removed from the expected size") {
		t.Fatalf("stdout %q", r.stdout)
	}
	if q := m0.QuorumView(); q.Expected != 2 {
		t.Fatalf("expected size %d after the removal, want 2", q.Expected)
	}
	r = gridctl(t, nil, addr, "--json", "member", "remove", crashed).expect(t, 0)
	if keys := jsonKeys(t, r.stdout); strings.Join(keys, ",") != "removed,table_version" {
		t.Fatalf("json keys %v", keys)
	}
}
