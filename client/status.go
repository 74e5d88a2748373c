package client

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/sysop"
)

// MemberStatus is what one member reports about itself (the member's
// grid.Stats; both are sysop.Stats, so they cannot drift).
type MemberStatus = sysop.Stats

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
				resp, err = cn.Call(ctx, &op.Request{Service: sysop.Service, Op: sysop.Status, Partition: -1})
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
		if !st.Quorum {
			return false, fmt.Sprintf("%s has no quorum (%d of %d members visible, %d needed)", st.Name, st.QuorumVisible, st.ExpectedSize, st.QuorumNeeded), nil
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
