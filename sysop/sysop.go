// Package sysop holds what the member core (grid) and the client must agree
// on for the member core's own operations: the reserved service names, the
// system operation codes and the status record a member reports. It is a
// leaf (standard library only), so grid and client share one definition
// that cannot drift.
package sysop

// Service is the member core's own service; its operations travel as
// ordinary requests so one codec and one connection type carry everything.
const Service = "_grid"

// System operations of Service.
const (
	// GetTable returns the member's table (Value) and version (Num).
	// Clients may call it.
	GetTable uint8 = iota + 1
	// Publish offers a table (Value); the receiver adopts it if newer.
	Publish
	// Backup is one backup record: partition, sequence (Num), the
	// owner's table version, and the encoded mutation (Value).
	Backup
	// BackupSync is a chunk (Value at offset Num) of a full partition
	// snapshot for sync Key; Aux holds the snapshot's sequence on the last
	// chunk.
	BackupSync
	// Trigger asks the coordinator to re-plan now.
	Trigger
	// Handoff asks the owner of Partition to freeze it until backup Key
	// holds every mutation (before the coordinator makes Key the owner).
	Handoff
	// ReplicaSeqs returns, for every partition, the sequence of the
	// last mutation this member applied (8 bytes big endian each; all ones
	// for "no replica here").
	ReplicaSeqs
	// Status returns the member's Stats (msgpack). Clients may call it.
	Status
	// BackupProbe asks a backup whether it holds the owner's mutations
	// up to sequence Num of Partition, so a resync can skip the copy.
	BackupProbe
	// Subscribe registers subscription Num of the caller's connection for
	// the events of structure Name of service Key: the member sends them
	// on that connection (wire.KindEvent) while it owns the structure.
	// Clients may call it.
	Subscribe
	// Unsubscribe ends subscription Num of the caller's connection.
	// Clients may call it.
	Unsubscribe
)

// SessionService is the member core's session service: every member and
// client heartbeats its session there (see grid's session.go).
const SessionService = "_session"

// SessionHeartbeat creates or extends the session whose id (hex) is in
// Key, for Num milliseconds; it fails with op.ErrSessionExpired once the
// session ended. It is the only session operation clients may call.
const SessionHeartbeat uint8 = 1

// SessionPartition is the partition that holds session id's record, out
// of count partitions.
func SessionPartition(id uint64, count int) int32 { return int32(id % uint64(count)) }

// ClientAllowed reports whether a client connection may call system
// operation o (the others are reserved for members).
func ClientAllowed(o uint8) bool {
	return o == GetTable || o == Status || o == Subscribe || o == Unsubscribe
}

// Stats is a point-in-time view of a member, for health checks, metrics and
// status commands. Members send it (msgpack, by field name) in answer to
// Status; grid.Stats and client.MemberStatus are this type.
type Stats struct {
	// Name is the member's name.
	Name string `json:"name"`
	// Addr is its data address.
	Addr string `json:"addr"`
	// Coordinator is true when this member publishes tables.
	Coordinator bool `json:"coordinator"`
	// TableVersion is the version of the table it follows (0 = none yet).
	TableVersion uint64 `json:"table_version"`
	// Members is the number of live members it sees.
	Members int `json:"member_count"`
	// PartitionsOwned is how many partitions it owns.
	PartitionsOwned int `json:"partitions_owned"`
	// PartitionsBackup is how many partitions it holds a backup of.
	PartitionsBackup int `json:"partitions_backup"`
	// UnsyncedBackups counts backups of its owned partitions that are not
	// in sync (being copied, or cut off and waiting for a copy).
	UnsyncedBackups int `json:"unsynced_backups"`
	// Entries is the number of entries in its owned partitions.
	Entries int `json:"entries"`
	// Ready is true once it follows a table that includes it.
	Ready bool `json:"ready"`
	// Leaving is true while a graceful shutdown hands partitions over.
	Leaving bool `json:"leaving"`
	// Fenced is true while the member refuses owner operations after a
	// pause, until it has confirmed the table with the coordinator.
	Fenced bool `json:"fenced"`
	// TableBackups is the number of backups per partition this member's
	// configuration asks for.
	TableBackups int `json:"table_backups"`
	// RequestsServed counts requests executed on this member's partitions.
	RequestsServed uint64 `json:"requests_served"`
	// BackupRecords counts mutations replayed here as a backup.
	BackupRecords uint64 `json:"backup_records"`
	// MigrationsOut counts partition copies this member sent to others.
	MigrationsOut uint64 `json:"migrations_out"`
	// MigrationBytesOut counts the bytes of partition copies it sent.
	MigrationBytesOut uint64 `json:"migration_bytes_out"`
	// MigrationsIn counts partition copies this member received.
	MigrationsIn uint64 `json:"migrations_in"`
}
