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
	// for "no replica here"), each followed by its term (8 more bytes)
	// when the request's Num is 1, and by the term and a flags byte (bit
	// 0: a partial backup still waiting for its copy) when Num is 2
	// (builds that do not know a layout answer sequences only). A Value of
	// a table version and partition numbers (8 + 4 each, big endian) seals
	// those replicas at that version first (see backup.Replica.Sealed).
	ReplicaSeqs
	// Status returns the member's Stats (msgpack). Clients may call it.
	Status
	// BackupProbe asks a backup whether it holds the owner's mutations
	// up to sequence Num of Partition, so a resync can skip the copy.
	BackupProbe
	// Ping renews the sender's quorum lease (see grid's leaseLoop); the
	// answer carries the receiver's table version. Members only.
	Ping
	// Subscribe registers subscription Num of the caller's connection for
	// the events of structure Name of service Key: the member sends them
	// on that connection (wire.KindEvent) while it owns the structure.
	// Clients may call it.
	Subscribe
	// Unsubscribe ends subscription Num of the caller's connection.
	// Clients may call it.
	Unsubscribe
	// ReplDelta carries a change message (Value) of the replicated
	// service Key, which the receiver merges. Members only.
	ReplDelta
	// ReplPull sends the caller's digest (Value) of the replicated
	// service Key; the answer's Value is what the caller lacks (at most
	// about Num bytes) and Found says there is more. Members only.
	ReplPull
	// RemoveMember removes crashed member Key from the cluster's expected
	// size (the table's voters); Num 1 forces it without a quorum. Any
	// member forwards it to the coordinator, which refuses while Key is
	// alive and answers once a table without it is published
	// (TableVersion). Clients may call it with the admin role on "*".
	RemoveMember
	// Vote asks a member to grant coordinator term Num to candidate Key,
	// whose table version is TableVersion. The answer's Found is the
	// grant; its Num is the highest term the member promised, its
	// TableVersion the member's table version. Members only.
	Vote
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
	return o == GetTable || o == Status || o == Subscribe || o == Unsubscribe || o == RemoveMember
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
	// Quorum is false while this member sees fewer than a majority of the
	// cluster's expected size (with every quorum rule off: always true).
	Quorum bool `json:"quorum"`
	// QuorumVisible is how many members of its table it sees (itself
	// included), QuorumNeeded how many a majority is, and ExpectedSize the
	// cluster's expected size it counts against.
	QuorumVisible int `json:"quorum_visible"`
	QuorumNeeded  int `json:"quorum_needed"`
	ExpectedSize  int `json:"expected_size"`
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
	// MergeDiscarded counts entries this member discarded because it owned
	// their partitions on the losing side of a split (or while declared
	// dead): the winning side's values were kept.
	MergeDiscarded uint64 `json:"merge_discarded"`
	// MergeStored counts entries from the losing side that merge policies
	// (put-if-absent, pass-through) wrote into the winning side.
	MergeStored uint64 `json:"merge_stored"`
	// ReplicatedDropped counts replicated-map deltas this member could
	// not deliver to a peer (anti-entropy repairs them); ReplicatedPulled
	// the bytes its anti-entropy pulls merged.
	ReplicatedDropped uint64 `json:"replicated_dropped"`
	ReplicatedPulled  uint64 `json:"replicated_pulled_bytes"`
	// MergeReports counts the merge reports this member emitted (heals
	// after which it let go of partitions it owned on the losing side;
	// see MergeStream).
	MergeReports uint64 `json:"merge_reports"`
	// ConnsOpen is the number of connections accepted on the data port
	// and not yet closed, handshakes included (see grid.Config.Conns).
	ConnsOpen int `json:"conns_open"`
	// ConnsRefused counts connections closed at once for being over the
	// connection limits.
	ConnsRefused uint64 `json:"conns_refused"`
}
