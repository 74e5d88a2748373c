package main

import (
	"strconv"
	"testing"
)

func TestEventLog(t *testing.T) {
	l := newEventLog(3)
	if got := l.recent(); len(got) != 0 {
		t.Fatalf("empty log: %v", got)
	}
	for i := range 5 {
		l.add("k", strconv.Itoa(i))
	}
	got := l.recent()
	if len(got) != 3 || got[0].Text != "4" || got[1].Text != "3" || got[2].Text != "2" {
		t.Errorf("recent = %+v, want 4, 3, 2", got)
	}
	var nilLog *eventLog
	nilLog.add("k", "x") // no panic
	if nilLog.recent() != nil {
		t.Error("nil log has events")
	}
}
