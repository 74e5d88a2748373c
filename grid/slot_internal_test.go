package grid

import (
	"errors"
	"testing"

	"github.com/shoalgrid/shoal/op"
)

// A backup with the owner's sequence number but another history (it
// applied a record from a previous owner that the new owner never saw)
// must not pass the probe: the owner has to copy the partition.
func TestProbeComparesTermNotJustSequence(t *testing.T) {
	m := &Member{cfg: Config{Name: "b"}}
	s := &slot{id: 3, role: 1, ownerSince: 7, seq: 42, term: 5}
	if r := s.probe(m, 9, 9, 42, 5); r.Code != op.OK {
		t.Fatalf("same sequence and term: %v", r.Err())
	}
	if r := s.probe(m, 9, 9, 42, 7); !errors.Is(r.Err(), op.ErrBackupGap) {
		t.Fatalf("same sequence, other term: %v, want ErrBackupGap", r.Err())
	}
	if r := s.probe(m, 9, 9, 41, 5); !errors.Is(r.Err(), op.ErrBackupGap) {
		t.Fatalf("other sequence: %v, want ErrBackupGap", r.Err())
	}
	if r := s.probe(m, 9, 6, 42, 5); !errors.Is(r.Err(), op.ErrWrongOwner) {
		t.Fatalf("probe from a deposed owner: %v, want ErrWrongOwner", r.Err())
	}
}
