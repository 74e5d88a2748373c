package grid

import (
	"fmt"
	"path"
	"sync"
	"sync/atomic"
)

// Profile picks the default backup counts.
type Profile string

// Profiles.
const (
	// ProfileReliable keeps one synchronous backup of every partition: an
	// acknowledged write survives the loss of any one member.
	ProfileReliable Profile = "reliable"
	// ProfilePerformance keeps no backups: no replication traffic, and a
	// crashed member's entries are lost.
	ProfilePerformance Profile = "performance"
)

// MaxBackups is the largest backup count (synchronous plus asynchronous).
const MaxBackups = 6

// Backups are the backup counts of a structure.
type Backups struct {
	// Sync is how many backups must apply a mutation before it is
	// acknowledged.
	Sync int `yaml:"backup-count" json:"backup_count"`
	// Async is how many further backups receive it without being waited
	// for.
	Async int `yaml:"async-backup-count" json:"async_backup_count"`
}

// StructureBackups sets the backup counts of the structures whose name
// matches Pattern (path.Match syntax: "orders.*", "cache-?", or an exact
// name).
type StructureBackups struct {
	Pattern string `yaml:"pattern"`
	Backups `yaml:",inline"`
}

func (b Backups) validate(what string) error {
	if b.Sync < 0 || b.Async < 0 || b.Sync+b.Async > MaxBackups {
		return fmt.Errorf("%w: %s: backup counts %d sync + %d async out of range 0..%d", ErrConfig, what, b.Sync, b.Async, MaxBackups)
	}
	return nil
}

// defaults returns the profile's backup counts.
func (p Profile) defaults() (Backups, error) {
	switch p {
	case "", ProfileReliable:
		return Backups{Sync: 1}, nil
	case ProfilePerformance:
		return Backups{}, nil
	}
	return Backups{}, fmt.Errorf("%w: unknown profile %q (reliable or performance)", ErrConfig, p)
}

// backupRules resolves a structure's backup counts; the partition table
// carries as many backups as the largest rule asks for, and every mutation
// is replicated to all of them, the first Sync synchronously.
type backupRules struct {
	def   Backups
	rules []StructureBackups
	table int // backups per partition in the table

	cache  sync.Map     // structure name -> Backups
	cached atomic.Int64 // entries in cache
}

// maxCachedBackups bounds backupRules' cache, as quorum.Rules bounds its
// own: names past it are matched against the patterns on every call.
const maxCachedBackups = 4096

func newBackupRules(cfg Config) *backupRules {
	r := &backupRules{def: *cfg.Backups, rules: cfg.StructureBackups}
	r.table = r.def.Sync + r.def.Async
	for _, s := range r.rules {
		r.table = max(r.table, s.Sync+s.Async)
	}
	return r
}

func (r *backupRules) forName(name string) Backups {
	if len(r.rules) == 0 {
		return r.def
	}
	if b, ok := r.cache.Load(name); ok {
		return b.(Backups)
	}
	b := r.def
	for _, s := range r.rules {
		if ok, _ := path.Match(s.Pattern, name); ok {
			b = s.Backups
			break
		}
	}
	if r.cached.Load() < maxCachedBackups {
		if _, loaded := r.cache.LoadOrStore(name, b); !loaded {
			r.cached.Add(1)
		}
	}
	return b
}

// syncBackups returns how many backups a mutation of structure name waits
// for.
func (m *Member) syncBackups(service, name string) int {
	return m.backups.forName(name).Sync
}
