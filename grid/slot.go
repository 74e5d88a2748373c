package grid

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/op"
)

// slot is one partition on this member. Its lock serialises every access to
// the partition's service states, which makes per-key operations
// linearizable on the owner without a goroutine per partition.
type slot struct {
	id int32

	mu     sync.Mutex
	owned  bool   // this member owns the partition in its current table
	since  uint64 // table version since which it has owned it continuously
	frozen uint64 // non-zero: a migration out started at this table version
	states []op.State
}

// execute applies req if this member owns the partition at the request's
// table version. cur is this member's current table version.
func (s *slot) execute(m *Member, cur uint64, req *op.Request) *op.Response {
	svc, ok := m.svcIndex[req.Service]
	if !ok {
		return &op.Response{Code: op.CodeUnknownService, Msg: fmt.Sprintf("no service %q", req.Service), TableVersion: cur}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.TableVersion > cur {
		return &op.Response{Code: op.CodeStaleTable, Msg: fmt.Sprintf("member %s has table %d, request has %d", m.cfg.Name, cur, req.TableVersion), TableVersion: cur}
	}
	if !s.owned || (req.TableVersion != 0 && req.TableVersion < s.since) {
		return &op.Response{Code: op.CodeWrongOwner, Msg: fmt.Sprintf("member %s does not own partition %d at table %d", m.cfg.Name, s.id, req.TableVersion), TableVersion: cur}
	}
	if s.frozen != 0 {
		return &op.Response{Code: op.CodeMigrating, Msg: fmt.Sprintf("partition %d is migrating", s.id), TableVersion: cur}
	}
	st := s.states[svc]
	if st == nil {
		st = m.services[svc].NewState(s.id)
		s.states[svc] = st
	}
	resp := st.Apply(time.Now(), req)
	resp.TableVersion = cur
	m.counters.served.Add(1)
	return resp
}

func (s *slot) sweep(now time.Time, budget int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.owned {
		return
	}
	for _, st := range s.states {
		if sw, ok := st.(op.Sweeper); ok {
			sw.Sweep(now, budget)
		}
	}
}

// entries counts live entries in the partition.
func (s *slot) entries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, st := range s.states {
		if st != nil {
			n += st.Len()
		}
	}
	return n
}

// partitionSnapshot is the migration payload of one partition: every
// service's snapshot by service name.
type partitionSnapshot struct {
	Partition int32             `msgpack:"p"`
	Services  map[string][]byte `msgpack:"s"`
}

// freezeAndSnapshot stops the partition from serving (requests get
// ErrMigrating) and returns its state; version tags the freeze so a later
// table unfreezes it if the move is not committed.
func (s *slot) freezeAndSnapshot(m *Member, version uint64) ([]byte, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.owned {
		return nil, 0, op.Errorf(op.CodeWrongOwner, "member %s does not own partition %d", m.cfg.Name, s.id)
	}
	s.frozen = version
	snap := partitionSnapshot{Partition: s.id, Services: map[string][]byte{}}
	now := time.Now()
	n := 0
	for i, st := range s.states {
		if st == nil || st.Len() == 0 {
			continue
		}
		b, err := st.Snapshot(now)
		if err != nil {
			s.frozen = 0
			return nil, 0, fmt.Errorf("%w: snapshot of %s in partition %d: %v", op.ErrInternal, m.services[i].Name(), s.id, err)
		}
		snap.Services[m.services[i].Name()] = b
		n += st.Len()
	}
	var buf bytes.Buffer
	if err := msgpack.NewEncoder(&buf).Encode(&snap); err != nil {
		s.frozen = 0
		return nil, 0, fmt.Errorf("%w: encode partition %d: %v", op.ErrInternal, s.id, err)
	}
	return buf.Bytes(), n, nil
}

func (s *slot) unfreeze(version uint64) {
	s.mu.Lock()
	if s.frozen == version {
		s.frozen = 0
	}
	s.mu.Unlock()
}

// restore replaces the partition's states with a migrated snapshot. The
// partition is not served until a table makes this member its owner.
func (s *slot) restore(m *Member, data []byte) (int, error) {
	var snap partitionSnapshot
	if err := msgpack.Unmarshal(data, &snap); err != nil {
		return 0, fmt.Errorf("%w: partition snapshot: %v", op.ErrBadRequest, err)
	}
	if snap.Partition != s.id {
		return 0, fmt.Errorf("%w: snapshot is of partition %d, not %d", op.ErrBadRequest, snap.Partition, s.id)
	}
	states := make([]op.State, len(m.services))
	now := time.Now()
	n := 0
	for name, b := range snap.Services {
		i, ok := m.svcIndex[name]
		if !ok {
			return 0, fmt.Errorf("%w: snapshot has unknown service %q", op.ErrUnknownService, name)
		}
		st := m.services[i].NewState(s.id)
		if err := st.Restore(now, b); err != nil {
			return 0, fmt.Errorf("%w: restore %s in partition %d: %v", op.ErrBadRequest, name, s.id, err)
		}
		states[i] = st
		n += st.Len()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owned {
		return 0, fmt.Errorf("%w: partition %d is owned here already", op.ErrBadRequest, s.id)
	}
	s.states = states
	return n, nil
}

// adopt updates the slot for a new table: owned says whether this member
// owns the partition in it.
func (s *slot) adopt(version uint64, owned bool) (dropped int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if owned && !s.owned {
		s.since = version
	}
	if owned && s.frozen != 0 && version > s.frozen {
		s.frozen = 0 // the migration was not committed: serve again
	}
	if !owned {
		for i, st := range s.states {
			if st != nil {
				dropped += st.Len()
				s.states[i] = nil
			}
		}
		s.frozen = 0
	}
	s.owned = owned
	return dropped
}
