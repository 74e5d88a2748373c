package client

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
	"github.com/shoalgrid/shoal/op"
)

// sysStatus is the member-core operation that returns a member's
// statistics (see grid.Stats); clients may call it.
const sysStatus = 8

// MemberStatus is what one member reports about itself.
type MemberStatus struct {
	Name             string
	Addr             string
	Coordinator      bool
	TableVersion     uint64
	Members          int
	PartitionsOwned  int
	PartitionsBackup int
	UnsyncedBackups  int
	Entries          int
	Ready            bool
	Leaving          bool
	Fenced           bool
	TableBackups     int
	RequestsServed   uint64
	BackupRecords    uint64
	MigrationsOut    uint64
	MigrationsIn     uint64
}

// Status asks every member of the client's table for its status. Members
// that do not answer are left out and reported in the error (which wraps
// op.ErrUnavailable); the statuses of those that answered are returned.
func (c *Client) Status(ctx context.Context) ([]MemberStatus, error) {
	if c.closed.Load() {
		return nil, c.errClosed()
	}
	t := c.Table()
	out := make([]*MemberStatus, len(t.Members))
	errs := make([]error, len(t.Members))
	var g errgroup.Group
	for i, mb := range t.Members {
		g.Go(func() error {
			cn, err := c.conn(ctx, mb.Addr)
			if err == nil {
				var resp *op.Response
				resp, err = cn.Call(ctx, &op.Request{Service: sysService, Op: sysStatus, Partition: -1})
				if err == nil {
					err = resp.Err()
				}
				if err == nil {
					var st MemberStatus
					derr := mpsafe.Check(resp.Value, mpsafe.MaxDepth)
					if derr == nil {
						derr = msgpack.Unmarshal(resp.Value, &st)
					}
					if derr != nil {
						err = fmt.Errorf("%w: status of %s: %v", op.ErrBadRequest, mb.Name, derr)
					} else {
						out[i] = &st
					}
				}
			}
			errs[i] = err
			return nil
		})
	}
	_ = g.Wait()
	var res []MemberStatus
	var failed []error
	for i, st := range out {
		if st != nil {
			res = append(res, *st)
		} else if errs[i] != nil {
			failed = append(failed, fmt.Errorf("%s: %w", t.Members[i].Name, errs[i]))
		}
	}
	if len(failed) > 0 {
		return res, fmt.Errorf("%w: %d member(s) did not report: %s", op.ErrUnavailable, len(failed), joinErrs(failed))
	}
	return res, nil
}

// Safe reports whether the cluster could lose one more member (up to its
// backup count) without losing data: every member answers and follows the
// same table, every partition has its full replica count on the target
// placement, and every backup holds every mutation. When it is not safe,
// the reason says why.
func (c *Client) Safe(ctx context.Context) (bool, string, error) {
	sts, err := c.Status(ctx)
	if err != nil {
		return false, "", err
	}
	t := c.Table()
	backups := 0
	for _, st := range sts {
		backups = max(backups, st.TableBackups)
		if st.TableVersion != t.Version {
			return false, fmt.Sprintf("%s follows table %d, not %d", st.Name, st.TableVersion, t.Version), nil
		}
		if st.UnsyncedBackups > 0 {
			return false, fmt.Sprintf("%s has %d backups still being copied", st.Name, st.UnsyncedBackups), nil
		}
		if st.Fenced {
			return false, st.Name + " is fenced after a pause", nil
		}
	}
	want := min(1+backups, len(t.Members))
	for p := range int32(t.Count) {
		if n := t.ReplicaCount(p); n != want {
			return false, fmt.Sprintf("partition %d has %d replicas, want %d", p, n, want), nil
		}
	}
	return true, "", nil
}
