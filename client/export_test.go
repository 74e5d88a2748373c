package client

// FramesOut is the number of frames c has queued on its connections to
// members (requests, cancels, pings): a count of round trips.
func FramesOut(c *Client) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n uint64
	for _, mc := range c.conns {
		mc.mu.Lock()
		for _, cn := range mc.conns {
			if cn != nil {
				_, out := cn.Frames()
				n += out
			}
		}
		mc.mu.Unlock()
	}
	return n
}

// WaitSynced waits until c registered its event subscriptions (the table
// announcements) with the members, so that frame counts that follow do not
// include the registrations.
func WaitSynced(c *Client) { <-c.synced }

// IgnoreTableAnnouncements makes c ignore the members' table
// announcements: its table then changes only when an answer shows it is
// stale or at its periodic refresh.
func IgnoreTableAnnouncements(c *Client) { c.ignoreAnn.Store(true) }

// CutOff cuts c off from the member at addr: it closes c's connections
// to it, and c's dials to it fail from now on as an unreachable member's
// would.
func CutOff(c *Client, addr string) {
	f := func(a string) bool { return a == addr }
	c.noDial.Store(&f)
	c.mu.Lock()
	mc := c.conns[addr]
	c.mu.Unlock()
	if mc == nil {
		return
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	for i, cn := range mc.conns {
		if cn != nil {
			cn.Close()
			mc.conns[i] = nil
		}
	}
}

// Relayed is the number of calls c sent through another member because
// their owner was unreachable.
func Relayed(c *Client) uint64 { return c.relayed.Load() }
