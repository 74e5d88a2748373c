package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/sysop"
)

// RemoveMember removes member name, which crashed or disappeared for good,
// from the cluster's expected size (see grid.Member.RemoveMember and
// docs/quorum.md): members refuse it while name is alive (op.ErrBadRequest)
// and, unless force is set, while the coordinator has no quorum
// (op.ErrQuorum). On clusters with client tokens it needs the admin role
// on "*". It returns the version of the first table without the member.
func (c *Client) RemoveMember(ctx context.Context, name string, force bool) (uint64, error) {
	if c.closed.Load() {
		return 0, c.errClosed()
	}
	num := int64(0)
	if force {
		num = 1
	}
	req := &op.Request{Service: sysop.Service, Op: sysop.RemoveMember, Partition: -1, Key: name, Num: num}
	var errs []error
	for _, mb := range c.Table().Members {
		if mb.Name == name {
			continue
		}
		cn, err := c.conn(ctx, mb.Addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", mb.Name, err))
			continue
		}
		resp, err := cn.Call(ctx, req)
		if err == nil {
			err = resp.Err()
		}
		if err == nil {
			return resp.TableVersion, nil
		}
		if !errors.Is(err, op.ErrUnavailable) || ctx.Err() != nil {
			return 0, fmt.Errorf("remove member %s: %w", op.Quote(name), err)
		}
		errs = append(errs, fmt.Errorf("%s: %w", mb.Name, err))
	}
	return 0, fmt.Errorf("%w: remove member %s: no member answered: %w", op.ErrUnavailable, op.Quote(name), errors.Join(errs...))
}
