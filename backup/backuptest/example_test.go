package backuptest_test

import (
	"context"
	"fmt"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/backup/backuptest"
	"github.com/shoalgrid/shoal/op"
)

// counter is a backup that accepts everything and counts records.
type counter struct{ records int }

func (c *counter) HandleRecord(*backup.Record) *op.Response { c.records++; return &op.Response{} }
func (c *counter) HandleProbe(backup.Probe) *op.Response    { return &op.Response{} }
func (c *counter) HandleChunk(backup.Chunk) *op.Response    { return &op.Response{} }

// The test decides when a record arrives and when the link breaks.
func ExampleInmem() {
	b := &counter{}
	link := backuptest.NewInmem(b)
	answer := func(resp *op.Response, err error) {
		if err != nil {
			fmt.Println("answer: error:", err)
			return
		}
		fmt.Println("answer: code", resp.Code)
	}
	ctx := context.Background()
	r := backup.Record{Partition: 1, Seq: 1, Term: 1, TableVersion: 1, Req: &op.Request{Key: "k", Value: []byte("v")}}
	link.Record(ctx, &r, answer)
	fmt.Println("queued:", link.Pending(), "applied:", b.records)
	link.Deliver()
	fmt.Println("applied:", b.records)
	r.Seq = 2
	link.Record(ctx, &r, answer)
	link.Disconnect()
	fmt.Println("applied:", b.records)
	// Output:
	// queued: 1 applied: 0
	// answer: code ok
	// applied: 1
	// answer: error: backup: transport disconnected
	// applied: 1
}
