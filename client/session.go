package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/sysop"
)

// Session returns the client's session id: the origin of its calls, which
// structures use to name holders (of a lock, a delivery). It changes when
// the session expired (the client was cut off for longer than its TTL).
func (c *Client) Session() uint64 { return c.session.Load() }

// heartbeat creates or extends session id.
func (c *Client) heartbeat(ctx context.Context, id uint64) error {
	_, err := c.invoke(ctx, &op.Request{Service: sysop.SessionService, Op: sysop.SessionHeartbeat, Partition: sysop.SessionPartition(id, max(c.PartitionCount(), 1)), Key: strconv.FormatUint(id, 16), Num: c.cfg.SessionTTL.Milliseconds()}, true)
	return err
}

// heartbeatLoop keeps the client's session alive, heart-beating every
// third of its TTL. When the cluster answers that the session ended, the
// client takes a new one: what the old one held is gone, new calls work.
//
// One attempt waits at most a third of the TTL, and a failed attempt is
// followed by a table refresh and a prompt retry: the owner of the
// session's record may have been cut off or replaced, and a heartbeat
// stuck on it for the whole TTL would let the new owner (which grants one
// TTL from its promotion) expire a session whose client was alive all along.
func (c *Client) heartbeatLoop() {
	defer c.wg.Done()
	every := c.cfg.SessionTTL / 3
	first := true
	for {
		id := c.session.Load()
		var err error
		if first {
			first = false // Dial sent it
		} else {
			ctx, cancel := context.WithTimeout(c.ctx, every)
			err = c.heartbeat(ctx, id)
			cancel()
		}
		wait := every
		if errors.Is(err, op.ErrSessionExpired) {
			if c.session.CompareAndSwap(id, rand.Uint64()|1) {
				c.log.Warn("session expired; new session", "old", strconv.FormatUint(id, 16), "new", strconv.FormatUint(c.session.Load(), 16))
			}
			continue
		} else if err != nil && c.ctx.Err() == nil {
			c.log.Debug("session heartbeat", "err", err)
			rctx, cancel := context.WithTimeout(c.ctx, every)
			_ = c.sharedRefresh(rctx)
			cancel()
			wait = every / 8
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
