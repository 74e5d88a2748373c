package invoke

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
)

// manyParallelism bounds the requests InvokeMany runs at once when the
// transport cannot batch.
const manyParallelism = 32

// InvokeMany runs every request of reqs as Invoke would (each with its own
// identity, judged and retried on its own), and returns the results in the
// order of reqs. With a BatchTransport the requests with the same owner
// travel together: one round trip per member per round; requests answered
// with "not applied here" (stale table, wrong owner, migrating, unreachable
// owner) are grouped again by the refreshed table and re-sent, until ctx
// ends. Without one, the requests are invoked one by one, concurrently
// (bounded).
func (l *Loop) InvokeMany(ctx context.Context, reqs []*op.Request, internal bool) []op.Result {
	out := make([]op.Result, len(reqs))
	bt, ok := l.T.(BatchTransport)
	if !ok {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(manyParallelism)
		for i, req := range reqs {
			g.Go(func() error {
				out[i].Resp, out[i].Err = l.Invoke(gctx, req, internal)
				return nil
			})
		}
		_ = g.Wait()
		return out
	}
	type call struct {
		i       int
		r       op.Request
		owner   partition.Member
		res     op.Result
		lastErr error
	}
	var pending []*call
	for i, req := range reqs {
		r, err := l.Prepare(req, internal)
		if err != nil {
			out[i].Err = err
			continue
		}
		pending = append(pending, &call{i: i, r: r})
	}
	backoff := op.Backoff{Max: l.MaxBackoff}
	for len(pending) > 0 {
		t, changed := l.T.Table()
		type group struct {
			owner partition.Member
			calls []*call
		}
		var groups []*group
		byOwner := map[partition.Member]*group{}
		for _, c := range pending {
			c.owner, c.res = partition.Member{}, op.Result{}
			resp, err := l.route(&c.r, t, &c.owner)
			if resp != nil || err != nil {
				c.res = op.Result{Resp: resp, Err: err}
				continue
			}
			g := byOwner[c.owner]
			if g == nil {
				g = &group{owner: c.owner}
				byOwner[c.owner] = g
				groups = append(groups, g)
			}
			g.calls = append(g.calls, c)
		}
		var wg sync.WaitGroup
		for _, g := range groups {
			wg.Go(func() {
				rs := make([]*op.Request, len(g.calls))
				for j, c := range g.calls {
					rs[j] = &c.r
				}
				res := bt.SendMany(ctx, g.owner, rs)
				for j, c := range g.calls {
					c.res = res[j]
				}
			})
		}
		wg.Wait()
		memo := map[partition.Member]error{}
		var retry []*call
		for _, c := range pending {
			verdict, ferr := l.judge(ctx, t, c.owner, c.res.Resp, c.res.Err, &c.lastErr, memo)
			switch verdict {
			case op.Done:
				out[c.i] = op.Result{Resp: c.res.Resp, Err: c.res.Resp.Err()}
			case op.Fail:
				out[c.i].Err = ferr
			default:
				retry = append(retry, c)
			}
		}
		pending = retry
		if len(pending) == 0 {
			break
		}
		if werr := backoff.Wait(ctx, changed); werr != nil {
			for _, c := range pending {
				out[c.i].Err = fmt.Errorf("%w (last attempt: %v)", werr, c.lastErr)
			}
			break
		}
	}
	return out
}
