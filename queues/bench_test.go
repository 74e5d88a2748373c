package queues

import (
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// BenchmarkStateOfferTakeAck is the owner's state-machine cost of one
// reliable hand-off (offer, take, ack), without the core or the network.
func BenchmarkStateOfferTakeAck(b *testing.B) {
	s := Service{}.NewState(0).(*state)
	var x op.Exec
	item := make([]byte, 100)
	offer := &op.Request{Name: "q", Op: OpOffer, Value: item, Origin: 1}
	take := &op.Request{Name: "q", Op: OpTake, Origin: 1}
	ack := &op.Request{Name: "q", Op: OpAck, Origin: 1}
	now := time.Unix(1_800_000_000, 0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		x.Reset(now, 0, true, offer)
		s.Execute(&x, offer)
		x.Reset(now, 0, true, take)
		r := s.Execute(&x, take)
		ack.Num = r.Num
		x.Reset(now, 0, true, ack)
		s.Execute(&x, ack)
	}
}

// BenchmarkStateOfferPoll is the same for at-most-once use.
func BenchmarkStateOfferPoll(b *testing.B) {
	s := Service{}.NewState(0).(*state)
	var x op.Exec
	item := make([]byte, 100)
	offer := &op.Request{Name: "q", Op: OpOffer, Value: item, Origin: 1}
	poll := &op.Request{Name: "q", Op: OpPoll, Origin: 1}
	now := time.Unix(1_800_000_000, 0)
	b.ReportAllocs()
	for b.Loop() {
		x.Reset(now, 0, true, offer)
		s.Execute(&x, offer)
		x.Reset(now, 0, true, poll)
		s.Execute(&x, poll)
	}
}
