package grid_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/wire"
)

// TestMaxValueReplicatesAsRecord: a put whose value is at the value limit
// reaches its synchronous backup as a record (a wire.KindRecord frame, with
// a frame limit of its own), not as a full copy of the partition, and the
// backup holds it: the owner's crash loses nothing. Sent the old way (a
// sysBackup request, the way to a member without wire.CapRecords) the
// record exceeds the request value limit and the owner falls back to a
// copy, which is what every owner did before.
func TestMaxValueReplicatesAsRecord(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			const maxValue = 64 << 10
			cl := gridtest.New(t, 3, gridtest.WithPartitions(1), gridtest.WithConfig(func(c *grid.Config) {
				c.Limits = wire.Limits{MaxValueSize: maxValue}
			}))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			counts := func() (records, copies uint64) {
				for _, m := range cl.Live() {
					st := m.Stats()
					records += st.BackupRecords
					copies += st.MigrationsIn
				}
				return records, copies
			}
			for _, m := range cl.Live() {
				m.SendLegacyRecordsForTest(legacy)
			}
			mp := maps.New(cl.Member(0), "records")
			// Until a small put replicates as a record the backup may still
			// be waiting for its first copy.
			gridtest.Eventually(t, 30*time.Second, func() (bool, string) {
				before, _ := counts()
				if err := mp.Put(ctx, "small", []byte("v")); err != nil {
					return false, err.Error()
				}
				after, _ := counts()
				return after == before+1, "small puts are not replicated as records yet"
			})
			records0, copies0 := counts()
			big := bytes.Repeat([]byte{0xab}, maxValue)
			if err := mp.Put(ctx, "big", big); err != nil {
				t.Fatalf("put of a %d-byte value: %v", len(big), err)
			}
			// The backup acknowledged the put before it returned: its
			// counters are settled.
			records, copies := counts()
			records, copies = records-records0, copies-copies0
			if legacy {
				if records != 0 || copies == 0 {
					t.Fatalf("sent as a request: %d records, %d copies; want the fallback to a copy", records, copies)
				}
				return
			}
			if records != 1 || copies != 0 {
				t.Fatalf("%d records and %d copies for one put at the value limit; want 1 record, no copy", records, copies)
			}
			// The owner's crash loses nothing: the backup holds the value.
			o, _ := cl.Member(0).Table().Owner(0)
			for i := range 3 {
				if cl.Member(i).Name() == o.Name {
					cl.Crash(i)
					break
				}
			}
			got := maps.New(cl.Live()[0], "records")
			gridtest.Eventually(t, 30*time.Second, func() (bool, string) {
				v, found, err := got.Get(ctx, "big")
				if err != nil || !found {
					return false, fmt.Sprintf("get after the owner's crash: found %v, %v", found, err)
				}
				if !bytes.Equal(v, big) {
					t.Fatalf("get after the owner's crash: %d bytes, not the value put", len(v))
				}
				return true, ""
			})
		})
	}
}
