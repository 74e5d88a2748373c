package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/quorum"
)

// TestQuorumConfig checks --quorum (flag, environment, file) and the
// per-structure quorum key: a rule given is passed to grid, none given
// leaves it to the profile (nil), and a structure setting only its quorum
// adds no backup rule.
func TestQuorumConfig(t *testing.T) {
	if c := mustParse(t, nil, env()).gridConfig(nil); c.Quorum != nil || c.StructureQuorum != nil {
		t.Errorf("defaults: quorum %v structures %v, want nil (profile decides)", c.Quorum, c.StructureQuorum)
	}
	for _, c := range []struct {
		args   []string
		getenv func(string) (string, bool)
		want   quorum.Rule
	}{
		{[]string{"--quorum", "off"}, env(), quorum.Rule{Mode: quorum.Off}},
		{[]string{"--quorum=majority"}, env(), quorum.Rule{Mode: quorum.Majority}},
		{nil, env("SHOAL_QUORUM", "3"), quorum.Rule{Mode: quorum.Fixed, Min: 3}},
	} {
		got := mustParse(t, c.args, c.getenv).gridConfig(nil).Quorum
		if got == nil || *got != c.want {
			t.Errorf("%v: quorum %v, want %v", c.args, got, c.want)
		}
	}
	cfg := writeConfig(t, `
quorum: majority
structures:
  - pattern: "cache-*"
    quorum: "off"
    backup-count: 0
  - pattern: sessions
    quorum: 2
  - pattern: "carts"
    merge: pass-through
`)
	c := mustParse(t, []string{"--config", cfg}, env()).gridConfig(nil)
	if c.Quorum == nil || c.Quorum.Mode != quorum.Majority {
		t.Errorf("file quorum %v", c.Quorum)
	}
	wantQ := []quorum.Pattern{{Pattern: "cache-*", Rule: quorum.Rule{Mode: quorum.Off}}, {Pattern: "sessions", Rule: quorum.Rule{Mode: quorum.Fixed, Min: 2}}}
	if !reflect.DeepEqual(c.StructureQuorum, wantQ) {
		t.Errorf("structure quorum %+v, want %+v", c.StructureQuorum, wantQ)
	}
	if want := []grid.StructureMerge{{Pattern: "carts", Policy: grid.MergePassThrough}}; !reflect.DeepEqual(c.StructureMerge, want) {
		t.Errorf("structure merge %+v, want %+v", c.StructureMerge, want)
	}
	if len(c.StructureBackups) != 1 || c.StructureBackups[0].Pattern != "cache-*" {
		t.Errorf("structure backups %+v, want only cache-*", c.StructureBackups)
	}
	for body, want := range map[string]string{
		"quorum: most\n": "quorum: want majority, off or a minimum member count",
		"structures:\n  - pattern: a\n    quorum: half\n":  `quorum "half": want majority`,
		"structures:\n  - pattern: a\n    merge: newest\n": `merge "newest": want discard, put-if-absent, pass-through or latest`,
	} {
		_, err := parseOptions([]string{"--config", writeConfig(t, body)}, env())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", body, err, want)
		}
	}
}
