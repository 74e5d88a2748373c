package partition

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestIDDeterministicAndInRange(t *testing.T) {
	for _, count := range []int{1, 2, 7, DefaultCount, 1000} {
		for i := range 2000 {
			key := fmt.Sprintf("key-%d", i)
			p := ID(key, count)
			if p < 0 || int(p) >= count {
				t.Fatalf("ID(%q, %d) = %d out of range", key, count, p)
			}
			if q := ID(key, count); q != p {
				t.Fatalf("ID(%q, %d) not deterministic: %d then %d", key, count, p, q)
			}
		}
	}
	if p := ID("anything", 1); p != 0 {
		t.Fatalf("ID with count 1 = %d, want 0", p)
	}
}

func TestIDUniform(t *testing.T) {
	const keys = 100_000
	hist := make([]int, DefaultCount)
	for i := range keys {
		hist[ID(fmt.Sprintf("k%d", i), DefaultCount)]++
	}
	mean := float64(keys) / DefaultCount // ~369, stddev ~19
	lo, hi := int(0.75*mean), int(1.25*mean)
	minN, maxN := slices.Min(hist), slices.Max(hist)
	if minN < lo || maxN > hi {
		t.Fatalf("partition sizes outside [%d,%d]: min %d max %d", lo, hi, minN, maxN)
	}
}

func TestIDPanicsOnBadCount(t *testing.T) {
	for _, count := range []int{0, -1, math.MaxInt32 + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("ID with count %d did not panic", count)
				}
			}()
			ID("k", count)
		}()
	}
}

// sample is a small hand-built valid table used by accessor tests.
func sample() *Table {
	return &Table{
		Version: 3,
		Count:   4,
		Members: []Member{
			{Name: "a", Addr: "10.0.0.1:5701"},
			{Name: "b", Addr: "10.0.0.2:5701", Zone: "z1"},
			{Name: "c", Addr: "10.0.0.3:5701", Host: "h3"},
		},
		Replicas: [][]int32{{0, 1}, {1, 2}, {0, 2}, {2}},
	}
}

func TestTableAccessors(t *testing.T) {
	tb := sample()
	if err := tb.Validate(); err != nil {
		t.Fatal(err)
	}
	if m, ok := tb.Owner(1); !ok || m.Name != "b" {
		t.Errorf("Owner(1) = %v, %v", m, ok)
	}
	if m, ok := tb.Replica(2, 1); !ok || m.Name != "c" {
		t.Errorf("Replica(2,1) = %v, %v", m, ok)
	}
	for _, c := range []struct {
		p int32
		i int
	}{{-1, 0}, {4, 0}, {3, 1}, {0, -1}, {0, 2}} {
		if m, ok := tb.Replica(c.p, c.i); ok {
			t.Errorf("Replica(%d,%d) = %v, want none", c.p, c.i, m)
		}
	}
	if _, ok := tb.Owner(99); ok {
		t.Error("Owner(99) found")
	}
	if n := tb.ReplicaCount(3); n != 1 {
		t.Errorf("ReplicaCount(3) = %d", n)
	}
	if n := tb.ReplicaCount(-1); n != 0 {
		t.Errorf("ReplicaCount(-1) = %d", n)
	}
	if m, ok := tb.Member("c"); !ok || m.Addr != "10.0.0.3:5701" {
		t.Errorf("Member(c) = %v, %v", m, ok)
	}
	if _, ok := tb.Member("zz"); ok {
		t.Error("Member(zz) found")
	}
	if !tb.IsOwner(0, "a") || tb.IsOwner(0, "b") || tb.IsOwner(9, "a") {
		t.Error("IsOwner wrong")
	}
	if got := tb.Owned("a"); !slices.Equal(got, []int32{0, 2}) {
		t.Errorf("Owned(a) = %v", got)
	}
	if got := tb.Owned("zz"); got != nil {
		t.Errorf("Owned(zz) = %v", got)
	}
	if got := tb.BackedUp("c"); !slices.Equal(got, []int32{1, 2}) {
		t.Errorf("BackedUp(c) = %v", got)
	}
	if got := tb.BackedUp("a"); got != nil {
		t.Errorf("BackedUp(a) = %v", got)
	}

	var nilT *Table
	if _, ok := nilT.Owner(0); ok || nilT.ReplicaCount(0) != 0 || nilT.Owned("a") != nil {
		t.Error("nil table accessors should report nothing")
	}
}

func TestWithVersionAndEqual(t *testing.T) {
	a := sample()
	b := a.WithVersion(42)
	if b.Version != 42 || a.Version != 3 {
		t.Fatalf("versions: a=%d b=%d", a.Version, b.Version)
	}
	if !a.Equal(b) || !b.Equal(a) {
		t.Fatal("WithVersion copy should be Equal")
	}
	c := sample()
	c.Replicas = slices.Clone(c.Replicas)
	c.Replicas[3] = []int32{1}
	if a.Equal(c) {
		t.Fatal("different replicas reported Equal")
	}
	d := sample()
	d.Members = slices.Clone(d.Members)
	d.Members[0].Addr = "elsewhere:1"
	if a.Equal(d) {
		t.Fatal("different member addr reported Equal")
	}
	var nilT *Table
	if a.Equal(nil) || !nilT.Equal(nil) || nilT.WithVersion(1) != nil {
		t.Fatal("nil handling")
	}
}

func TestValidate(t *testing.T) {
	ms := sample().Members
	cases := []struct {
		name string
		t    *Table
		want string
	}{
		{"nil", nil, "nil table"},
		{"zero count", &Table{Count: 0, Members: ms}, "invalid partition count"},
		{"negative count", &Table{Count: -5, Members: ms}, "invalid partition count"},
		{"replica len", &Table{Count: 2, Members: ms, Replicas: [][]int32{{0}}}, "1 replica lists for 2"},
		{"no members", &Table{Count: 1, Replicas: [][]int32{{0}}}, "no members"},
		{"empty replica", &Table{Count: 2, Members: ms, Replicas: [][]int32{{0}, {}}}, "partition 1 has no replica"},
		{"index high", &Table{Count: 1, Members: ms, Replicas: [][]int32{{0, 3}}}, "out of range"},
		{"index negative", &Table{Count: 1, Members: ms, Replicas: [][]int32{{-1}}}, "out of range"},
		{"duplicate in list", &Table{Count: 1, Members: ms, Replicas: [][]int32{{1, 2, 1}}}, "twice"},
		{"unsorted", &Table{Count: 1, Members: []Member{{Name: "b"}, {Name: "a"}}, Replicas: [][]int32{{0}}}, "not sorted"},
		{"dup name", &Table{Count: 1, Members: []Member{{Name: "a"}, {Name: "a"}}, Replicas: [][]int32{{0}}}, "not sorted/unique"},
		{"empty name", &Table{Count: 1, Members: []Member{{Name: ""}}, Replicas: [][]int32{{0}}}, "empty name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.t.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want error containing %q", err, c.want)
			}
		})
	}
	// The same member may appear in different partitions' lists.
	if err := sample().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	tables := []*Table{sample()}
	for _, pl := range []Placement{PerMember, HostAware, ZoneAware} {
		tb, err := Assign(testMembers(5), DefaultCount, 2, pl)
		if err != nil {
			t.Fatal(err)
		}
		tables = append(tables, tb.WithVersion(7))
	}
	for _, tb := range tables {
		b, err := tb.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got, err := Unmarshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(tb) || got.Version != tb.Version {
			t.Fatalf("round trip mismatch:\n got %+v\nwant %+v", got, tb)
		}
	}
}

func TestUnmarshalRejects(t *testing.T) {
	good, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// Every strict prefix of a valid encoding must fail cleanly.
	for n := range len(good) {
		if _, err := Unmarshal(good[:n]); err == nil {
			t.Fatalf("truncated to %d/%d bytes: no error", n, len(good))
		}
	}
	garbage := [][]byte{
		nil,
		{0xc1},                 // never-used msgpack code
		{0xff, 0xff, 0xff},     // negative fixints, not a map
		[]byte("hello, world"), // text
		{0x81, 0xa1, 'r', 0xdd, 0xff, 0xff, 0xff, 0xff},             // r: array claiming 4G lists
		{0x81, 0xa1, 'r', 0x91, 0xdd, 0xff, 0xff, 0xff, 0xff},       // r[0]: list claiming 4G indexes
		{0x81, 0xa1, 'm', 0xdd, 0xff, 0xff, 0xff, 0xff},             // m: array claiming 4G members
		{0xdf, 0xff, 0xff, 0xff, 0xff},                              // map claiming 4G keys
		{0x81, 0xa1, 'r', 0x91, 0x91, 0xcf, 1, 0, 0, 0, 0, 0, 0, 0}, // index overflows int32
		bytes.Repeat([]byte{0x91}, 10000),                           // deeply nested arrays
	}
	for i, b := range garbage {
		if _, err := Unmarshal(b); err == nil {
			t.Errorf("garbage %d: no error", i)
		}
	}
	// Well-formed msgpack describing invalid tables.
	bad := []*Table{
		{Count: 1, Members: sample().Members, Replicas: [][]int32{{5}}},
		{Count: 1, Members: sample().Members, Replicas: [][]int32{{0, 0}}},
		{Count: 3, Members: sample().Members, Replicas: [][]int32{{0}}},
		{Count: 1, Members: []Member{{Name: "z"}, {Name: "a"}}, Replicas: [][]int32{{0}}},
	}
	for i, tb := range bad {
		b, err := msgpack.Marshal(tb)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Unmarshal(b); err == nil {
			t.Errorf("bad table %d: no error", i)
		}
	}
}

// TestEmbeddedCodec checks that a Table inside a larger message keeps its
// own wire format whatever the encoder options, as package grid will embed
// tables in its messages.
func TestEmbeddedCodec(t *testing.T) {
	type envelope struct {
		Kind  string
		Table Table
		Ptr   *Table
	}
	tb := mustAssign(t, testMembers(3), 17, 1, HostAware).WithVersion(5)
	for _, arrays := range []bool{false, true} {
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		enc.UseArrayEncodedStructs(arrays)
		if err := enc.Encode(envelope{Kind: "table", Table: *tb, Ptr: tb}); err != nil {
			t.Fatalf("arrays=%v: encode: %v", arrays, err)
		}
		var got envelope
		if err := msgpack.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatalf("arrays=%v: decode: %v", arrays, err)
		}
		if !got.Table.Equal(tb) || !got.Ptr.Equal(tb) || got.Ptr.Version != 5 || got.Kind != "table" {
			t.Fatalf("arrays=%v: mismatch: %+v", arrays, got)
		}
	}
}

func TestOwnerMoves(t *testing.T) {
	to := sample()
	all := OwnerMoves(nil, to)
	if len(all) != to.Count {
		t.Fatalf("from nil: %d moves, want %d", len(all), to.Count)
	}
	for i, m := range all {
		if m.Partition != int32(i) || m.From != "" {
			t.Fatalf("from nil: move %d = %+v", i, m)
		}
	}
	if got := OwnerMoves(to, to); len(got) != 0 {
		t.Fatalf("same table: %v", got)
	}
	// from: owners a,b,a,x where x is not in the new table.
	from := &Table{
		Count:    4,
		Members:  []Member{{Name: "a"}, {Name: "b"}, {Name: "x"}},
		Replicas: [][]int32{{0}, {0}, {1}, {2}},
	}
	want := []Move{
		{Partition: 1, From: "a", To: "b"},
		{Partition: 2, From: "b", To: "a"},
		{Partition: 3, From: "", To: "c"},
	}
	if got := OwnerMoves(from, to); !slices.Equal(got, want) {
		t.Fatalf("OwnerMoves = %+v, want %+v", got, want)
	}
	if OwnerMoves(to, nil) != nil {
		t.Fatal("nil target should yield no moves")
	}
}

func FuzzUnmarshal(f *testing.F) {
	tb, err := Assign(testMembers(4), 13, 2, ZoneAware)
	if err != nil {
		f.Fatal(err)
	}
	for _, t := range []*Table{tb.WithVersion(9), sample()} {
		b, err := t.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0xc1})
	// An unknown key whose value nests past the limit.
	f.Add(append(append([]byte{0x81, 0xa1, 'x'}, bytes.Repeat([]byte{0x91}, 70)...), 0xc0))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Accessors must not panic even on tables that fail Validate.
		var raw Table
		if msgpack.Unmarshal(b, &raw) == nil {
			for p := int32(-1); p < 3; p++ {
				raw.Owner(p)
				raw.Replica(p, 1)
				raw.ReplicaCount(p)
			}
			raw.Owned("a")
			raw.BackedUp("a")
			OwnerMoves(&raw, &raw)
			_ = raw.Validate()
		}

		got, err := Unmarshal(b)
		if err != nil {
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("Unmarshal accepted an invalid table: %v", err)
		}
		enc, err := got.Marshal()
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		again, err := Unmarshal(enc)
		if err != nil {
			t.Fatalf("re-unmarshal: %v", err)
		}
		if !again.Equal(got) || again.Version != got.Version {
			t.Fatalf("round trip mismatch")
		}
	})
}

func BenchmarkID(b *testing.B) {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d", i)
	}
	var sink int32
	for i := 0; b.Loop(); i++ {
		sink += ID(keys[i&1023], DefaultCount)
	}
	_ = sink
}

func TestNewAndReplicaNames(t *testing.T) {
	ms := []Member{{Name: "b", Addr: "b:1"}, {Name: "a", Addr: "a:1"}}
	tb, err := New(3, 2, ms, [][]string{{"a", "b"}, {"b"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := tb.ReplicaNames(0); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("replicas of 0 = %v", got)
	}
	if o, _ := tb.Owner(1); o.Name != "b" {
		t.Fatalf("owner of 1 = %v", o)
	}
	tb.Lost = []int32{1}
	b, err := tb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil || len(back.Lost) != 1 || back.Lost[0] != 1 || back.Version != 3 {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	if _, err := New(1, 1, ms, [][]string{{"zz"}}); err == nil {
		t.Fatal("unknown member accepted")
	}
	if _, err := New(1, 2, ms, [][]string{{"a"}}); err == nil {
		t.Fatal("wrong replica list count accepted")
	}
	tb.Lost = []int32{7}
	if err := tb.Validate(); err == nil {
		t.Fatal("lost partition out of range accepted")
	}
}

// A table is a peer's bytes: an unknown key nested millions of levels deep
// is refused without recursing (msgpack's Skip recursed once per level and
// overflowed the stack), and so is a deep value in a member entry.
func TestUnmarshalRefusesDeepNesting(t *testing.T) {
	deep := append(bytes.Repeat([]byte{0x91}, 5_000_000), 0xc0)
	for name, b := range map[string][]byte{
		"unknown table key":  append([]byte{0x81, 0xa1, 'x'}, deep...),
		"unknown member key": append([]byte{0x81, 0xa1, 'm', 0x91, 0x81, 0xa1, 'x'}, deep...),
	} {
		if _, err := Unmarshal(b); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
			t.Errorf("%s: %v, want a nesting error", name, err)
		}
		// Decoding without Unmarshal's check skips without recursion.
		var raw Table
		if err := msgpack.Unmarshal(b, &raw); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
			t.Errorf("%s: DecodeMsgpack: %v, want a nesting error", name, err)
		}
	}
}
