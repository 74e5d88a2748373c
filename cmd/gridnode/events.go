package main

import (
	"sync"
	"time"
)

// eventRec is one entry of the recent-events list of the status page.
type eventRec struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	Text string    `json:"text"`
}

// eventLog keeps the last events of the member (membership changes, the
// member's own start and stop) for the status page. It is safe for
// concurrent use; a nil *eventLog records nothing.
type eventLog struct {
	mu   sync.Mutex
	buf  []eventRec
	next int
	full bool
}

// newEventLog returns a log of the last size events.
func newEventLog(size int) *eventLog {
	return &eventLog{buf: make([]eventRec, max(size, 1))}
}

// add records an event now.
func (l *eventLog) add(kind, text string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf[l.next] = eventRec{Time: time.Now(), Kind: kind, Text: text}
	l.next = (l.next + 1) % len(l.buf)
	if l.next == 0 {
		l.full = true
	}
}

// recent returns the recorded events, newest first.
func (l *eventLog) recent() []eventRec {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.next
	if l.full {
		n = len(l.buf)
	}
	out := make([]eventRec, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, l.buf[(l.next-i+len(l.buf))%len(l.buf)])
	}
	return out
}
