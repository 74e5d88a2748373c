package backup

import (
	"context"
	"errors"

	"github.com/shoalgrid/shoal/op"
)

// The seam between replication's decisions and its IO. An owner sends each
// of its backups three things: the record of every mutation, a probe (does
// the backup already hold the owner's history?) and, when it does not, a
// copy of the partition as snapshot chunks. A Transport carries them to one
// backup, in the order they were sent, and hands each answer to the
// callback given with it; at the backup a Handler decides and answers. The
// member core (grid) implements Transport over its member connections and
// Handler with its partition replicas; backuptest.Inmem connects the two in
// memory for tests.

// Probe asks a backup whether it holds the owner's history of a partition
// up to Seq of Term (OnProbe decides).
type Probe struct {
	Partition int32
	// TableVersion is the owner's table version (Fence).
	TableVersion uint64
	Seq, Term    uint64
}

// Chunk is one piece of a partition snapshot (EncodeSnapshot) on its way
// to a backup. The chunks of one copy share ID and arrive in order (Offset
// is where Data starts in the snapshot); the last one is Final and carries
// the replication position the snapshot was taken at.
type Chunk struct {
	Partition    int32
	TableVersion uint64
	// ID names the copy: the backup gathers chunks per ID (Assembly).
	ID     string
	Offset int64
	Data   []byte
	// Final marks the last chunk; Seq and Term are then the position
	// the snapshot was taken at (Mark).
	Final     bool
	Seq, Term uint64
}

// Done receives a backup's answer to something sent through a Transport:
// its response (resp.Code op.OK when it accepted), or err when no answer
// can come (the message could not be delivered or the connection closed).
// It runs on the transport's delivery goroutine, never under the sender's
// call: it may take the locks the sender held.
type Done func(resp *op.Response, err error)

// Transport carries what a partition's owner sends to one of its backups.
// Messages sent through one Transport arrive in the order they were sent
// (records follow the probe or copy sent before them); each gets exactly
// one call of its Done, unless the transport loses it, which is observed as
// a later record refused as a gap or as no answer at all (the owner's
// acknowledgement wait times out).
//
// The methods only enqueue: they never wait for the network or the
// backup (the owner calls them under its partition lock), and return an
// error only when the message cannot be sent at all (then Done is not
// called). ctx bounds what the sending itself may wait for.
type Transport interface {
	// Record sends the record of one mutation. r and what it points to
	// are only read during the call.
	Record(ctx context.Context, r *Record, done Done) error
	// Probe asks whether the backup already holds the owner's history.
	Probe(ctx context.Context, p Probe, done Done) error
	// Chunk sends one piece of a partition copy; c.Data is only read
	// during the call.
	Chunk(ctx context.Context, c Chunk, done Done) error
}

// Handler is a backup's side of a Transport: what it does on receipt.
// Each method applies the rules of this package (OnRecord, OnProbe, Fence)
// to the backup's replica and answers: op.OK to accept (also a duplicate
// record), op.CodeBackupGap for a gap or a differing history,
// op.CodeWrongOwner for a deposed owner. The methods must not block: a
// transport calls them in arrival order on its delivery goroutine.
type Handler interface {
	HandleRecord(r *Record) *op.Response
	HandleProbe(p Probe) *op.Response
	HandleChunk(c Chunk) *op.Response
}

// ErrDisconnected is what a Transport's Done gets for the messages still
// in flight when its connection closed, and what its methods return once it
// is closed.
var ErrDisconnected = errors.New("backup: transport disconnected")
