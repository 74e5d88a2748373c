package main

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/partition"
)

// TestReplicationFlags checks how --profile, --backup-count and
// --async-backup-count combine into grid.Config.Backups: a count given
// alone takes the other from the profile, and none given leaves the choice
// to grid (nil).
func TestReplicationFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		getenv  func(string) (string, bool)
		profile grid.Profile
		want    *grid.Backups
	}{
		{"defaults", nil, env(), grid.ProfileReliable, nil},
		{"performance", []string{"--profile", "performance"}, env(), grid.ProfilePerformance, nil},
		{"sync only, reliable", []string{"--backup-count", "2"}, env(), grid.ProfileReliable, &grid.Backups{Sync: 2}},
		{"async only, reliable", []string{"--async-backup-count", "1"}, env(), grid.ProfileReliable, &grid.Backups{Sync: 1, Async: 1}},
		{"async only, performance", []string{"--profile", "performance", "--async-backup-count", "1"}, env(), grid.ProfilePerformance, &grid.Backups{Async: 1}},
		{"sync only, performance", []string{"--profile=performance", "--backup-count=1"}, env(), grid.ProfilePerformance, &grid.Backups{Sync: 1}},
		{"both", []string{"--backup-count", "0", "--async-backup-count", "2"}, env(), grid.ProfileReliable, &grid.Backups{Async: 2}},
		{"env", nil, env("SHOAL_PROFILE", "performance", "SHOAL_BACKUP_COUNT", "3"), grid.ProfilePerformance, &grid.Backups{Sync: 3}},
		{"flag over env", []string{"--backup-count", "1"}, env("SHOAL_BACKUP_COUNT", "3", "SHOAL_ASYNC_BACKUP_COUNT", "2"), grid.ProfileReliable, &grid.Backups{Sync: 1, Async: 2}},
		{"empty env unsets", nil, env("SHOAL_BACKUP_COUNT", ""), grid.ProfileReliable, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := mustParse(t, c.args, c.getenv).gridConfig(nil)
			if cfg.Profile != c.profile || !reflect.DeepEqual(cfg.Backups, c.want) {
				t.Errorf("profile %q backups %+v, want %q %+v", cfg.Profile, cfg.Backups, c.profile, c.want)
			}
		})
	}

	cfg := mustParse(t, []string{"--backup-timeout", "250ms", "--placement", "zone"}, env()).gridConfig(nil)
	if cfg.BackupTimeout != 250*time.Millisecond || cfg.Placement != partition.ZoneAware {
		t.Errorf("backup timeout %v placement %v", cfg.BackupTimeout, cfg.Placement)
	}
	for word, want := range map[string]partition.Placement{"member": partition.PerMember, "host": partition.HostAware, "zone": partition.ZoneAware} {
		if got := mustParse(t, nil, env("SHOAL_PLACEMENT", word)).gridConfig(nil).Placement; got != want {
			t.Errorf("SHOAL_PLACEMENT=%s: %v, want %v", word, got, want)
		}
	}
	if d := mustParse(t, nil, env()).gridConfig(nil); d.BackupTimeout != 5*time.Second || d.Placement != partition.PerMember || d.StructureBackups != nil {
		t.Errorf("defaults: backup timeout %v placement %v structures %v", d.BackupTimeout, d.Placement, d.StructureBackups)
	}
}

func TestReplicationConfigFile(t *testing.T) {
	cfg := writeConfig(t, `
profile: performance
backup-count: 1
backup-timeout: 2s
placement: host
structures:
  - pattern: "orders.*"
    backup-count: 2
  - pattern: cache-?
    async-backup-count: 1
  - {pattern: audit, backup-count: 3, async-backup-count: 2}
`)
	c := mustParse(t, []string{"--config", cfg}, env()).gridConfig(nil)
	if c.Profile != grid.ProfilePerformance || !reflect.DeepEqual(c.Backups, &grid.Backups{Sync: 1}) || c.BackupTimeout != 2*time.Second || c.Placement != partition.HostAware {
		t.Errorf("profile %q backups %+v timeout %v placement %v", c.Profile, c.Backups, c.BackupTimeout, c.Placement)
	}
	// Counts left out come from the member's default (here 1 sync, 0 async).
	want := []grid.StructureBackups{
		{Pattern: "orders.*", Backups: grid.Backups{Sync: 2}},
		{Pattern: "cache-?", Backups: grid.Backups{Sync: 1, Async: 1}},
		{Pattern: "audit", Backups: grid.Backups{Sync: 3, Async: 2}},
	}
	if !reflect.DeepEqual(c.StructureBackups, want) {
		t.Errorf("structures\n got %+v\nwant %+v", c.StructureBackups, want)
	}
	// The environment and the command line override the file's defaults,
	// and the rules' left-out counts follow.
	c = mustParse(t, []string{"--config", cfg, "--backup-count", "0"}, env("SHOAL_ASYNC_BACKUP_COUNT", "1")).gridConfig(nil)
	if !reflect.DeepEqual(c.Backups, &grid.Backups{Async: 1}) || c.StructureBackups[0].Backups != (grid.Backups{Sync: 2, Async: 1}) || c.StructureBackups[1].Backups != (grid.Backups{Async: 1}) {
		t.Errorf("overridden: backups %+v structures %+v", c.Backups, c.StructureBackups)
	}
	// The resolved config is one grid accepts.
	for _, body := range []string{"structures:\n", "structures: []\n"} {
		if c := mustParse(t, []string{"--config", writeConfig(t, body)}, env()).gridConfig(nil); len(c.StructureBackups) != 0 {
			t.Errorf("%q: structures %+v", body, c.StructureBackups)
		}
	}
}

func TestReplicationUsageErrors(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		getenv func(string) (string, bool)
		file   string
		want   string
	}{
		{"bad profile", []string{"--profile", "fast"}, env(), "", "want one of reliable, performance"},
		{"bad placement", []string{"--placement", "rack"}, env(), "", "want one of member, host, zone"},
		{"negative backups", []string{"--backup-count", "-1"}, env(), "", "want 0..6"},
		{"too many backups", []string{"--backup-count", "7"}, env(), "", "want 0..6"},
		{"sum too large", []string{"--backup-count", "4", "--async-backup-count", "3"}, env(), "", "more than 6 backups"},
		{"bad env count", nil, env("SHOAL_ASYNC_BACKUP_COUNT", "x"), "", `SHOAL_ASYNC_BACKUP_COUNT="x": want an integer`},
		{"bad backup timeout", []string{"--backup-timeout", "0"}, env(), "", "want a positive duration"},
		{"bad env timeout", nil, env("SHOAL_BACKUP_TIMEOUT", "soon"), "", "SHOAL_BACKUP_TIMEOUT"},
		{"structures not a list", nil, env(), "structures: orders\n", ":1: structures: want a list"},
		{"structure not a mapping", nil, env(), "structures: [orders]\n", "want a mapping with pattern"},
		{"structure without pattern", nil, env(), "structures:\n  - backup-count: 2\n", ":2: structures: item without a pattern"},
		{"structure without counts", nil, env(), "structures:\n  - pattern: a\n", `pattern "a" sets none of`},
		{"structure bad pattern", nil, env(), "structures:\n  - {pattern: \"[\", backup-count: 1}\n", `pattern "[": want a name`},
		{"structure unknown key", nil, env(), "structures:\n  - {pattern: a, backups: 1}\n", `unknown key "backups"`},
		{"structure repeated key", nil, env(), "structures:\n  - {pattern: a, backup-count: 1, backup-count: 2}\n", `key "backup-count" repeated`},
		{"structure bad count", nil, env(), "structures:\n  - {pattern: a, backup-count: two}\n", "backup-count: want an integer"},
		{"structure count range", nil, env(), "structures:\n  - {pattern: a, async-backup-count: 9}\n", "async-backup-count: want 0..6"},
		{"structure sum", nil, env(), "backup-count: 3\nstructures:\n  - {pattern: a, async-backup-count: 4}\n", `structure "a": backup-count 3 plus async-backup-count 4`},
		{"structure duplicate", nil, env(), "structures:\n  - {pattern: a, backup-count: 1}\n  - {pattern: a, backup-count: 2}\n", `:3: structures: pattern "a" already listed on line 2`},
		{"structures twice", nil, env(), "structures: []\nstructures: []\n", `key "structures" already set on line 1`},
		{"structures not from env", nil, env("SHOAL_STRUCTURES", "x"), "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if c.file != "" {
				args = append([]string{"--config", writeConfig(t, c.file)}, args...)
			}
			if c.want == "" {
				// Not an error: there is no such variable.
				if _, err := parseOptions(args, c.getenv); err != nil {
					t.Fatalf("parseOptions: %v", err)
				}
				return
			}
			var stdout, stderr bytes.Buffer
			code := gridnode(args, c.getenv, &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr.String())
			}
			if msg := stderr.String(); !strings.HasPrefix(msg, "gridnode: ") || !strings.Contains(msg, c.want) || strings.Count(msg, "\n") != 1 {
				t.Errorf("stderr %q, want one gridnode: line containing %q", msg, c.want)
			}
		})
	}
}

func TestReplicationUsageText(t *testing.T) {
	var stdout bytes.Buffer
	gridnode([]string{"-h"}, env(), &stdout, &bytes.Buffer{})
	for _, want := range []string{"-profile profile", "(default reliable)", "-backup-count number", "-async-backup-count number", "-backup-timeout duration", "(default 5s)", "-placement placement", "structures:", "pattern:"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("usage does not mention %q", want)
		}
	}
	if strings.Contains(stdout.String(), "(default -1)") {
		t.Error("usage shows the internal 'not set' value -1")
	}
}

// TestReplicationConfigStartsMember starts a member from a config file with
// replication settings: grid accepts what gridnode resolved, and the table
// carries as many backups as the largest rule asks for.
func TestReplicationConfigStartsMember(t *testing.T) {
	cfg := writeConfig(t, `
bind: 127.0.0.1:0
addr: 127.0.0.1:0
gossip: fast
backup-count: 1
async-backup-count: 1
structures:
  - {pattern: "orders.*", backup-count: 2, async-backup-count: 2}
`)
	o := mustParse(t, []string{"--config", cfg}, env())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := grid.Start(ctx, o.gridConfig(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats(); st.TableBackups != 4 || st.PartitionsBackup != 0 || st.UnsyncedBackups != 0 {
		t.Errorf("stats %+v, want table_backups 4 and nothing to back up alone", st)
	}
}
