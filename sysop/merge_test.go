package sysop

import (
	"reflect"
	"testing"
)

func TestMergeReportRoundTrip(t *testing.T) {
	r := &MergeReport{Member: "n3", TableVersion: 1<<32 | 4, Partitions: 2, Entries: 80,
		Structures: []MergeCount{{Service: "map", Structure: "pia", Policy: "put-if-absent", Entries: 80, Stored: 40, Discarded: 40}}}
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMergeReport(b)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := DecodeMergeReport([]byte("{")); err == nil {
		t.Fatal("truncated report decoded")
	}
	if !SystemStream(Service, MergeStream) || SystemStream("map", MergeStream) || SystemStream(Service, "other") {
		t.Fatal("SystemStream")
	}
}

func FuzzDecodeMergeReport(f *testing.F) {
	f.Add([]byte(`{"member":"a","structures":[{"service":"map","entries":3}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeMergeReport(b)
		if err != nil {
			return
		}
		if _, err := r.Encode(); err != nil {
			t.Fatal(err)
		}
	})
}
