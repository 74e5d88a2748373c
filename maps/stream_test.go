package maps

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// TestStatePages walks one partition page by page with every page size
// and compares with the sorted entries; expired entries are left out.
func TestStatePages(t *testing.T) {
	s := newTestState()
	var want []string
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		k := strconv.Itoa(r.IntN(1_000_000))
		ttl := int64(0)
		if i%10 == 0 {
			ttl = 5 // expired by the walk
		} else if !slices.Contains(want, k) {
			want = append(want, k)
		}
		s.Apply(t0, ptr(put("m", k, "v"+k, ttl)))
	}
	s.Apply(t0, ptr(put("m", "", "empty key", 0)))
	want = append(want, "")
	slices.Sort(want)
	want = slices.Compact(want)
	for _, size := range []int64{1, 2, 7, 100, 0, 5000} {
		for _, code := range []uint8{OpKeysPage, OpEntriesPage} {
			var got []string
			cursor, after := "", false
			for pages := 0; ; pages++ {
				if pages > len(want)+1 {
					t.Fatalf("size %d: no end", size)
				}
				req := op.Request{Op: code, Name: "m", Key: cursor, Num: size}
				if after {
					req.Aux = []byte{pageAfter}
				}
				resp := s.Apply(ms(10), &req)
				if resp.Code != op.OK {
					t.Fatalf("page: %v %s", resp.Code, resp.Msg)
				}
				var keys []string
				if code == OpKeysPage {
					keys, _ = decodeKeys(resp.Value)
				} else {
					es, err := decodeEntries(resp.Value)
					if err != nil {
						t.Fatal(err)
					}
					for _, e := range es {
						if string(e.value) != "v"+e.key && e.key != "" {
							t.Fatalf("entry %q = %q", e.key, e.value)
						}
						keys = append(keys, e.key)
					}
				}
				limit := int(size)
				if limit == 0 || limit > MaxPageKeys {
					limit = MaxPageKeys
				}
				if len(keys) > limit || (resp.Found && len(keys) != limit) {
					t.Fatalf("size %d: page of %d keys, more=%v", size, len(keys), resp.Found)
				}
				got = append(got, keys...)
				if !resp.Found {
					break
				}
				cursor, after = keys[len(keys)-1], true
			}
			if !slices.Equal(got, want) {
				t.Fatalf("size %d op %d: walked %d keys, want %d", size, code, len(got), len(want))
			}
		}
	}
	if resp := s.Apply(t0, &op.Request{Op: OpKeysPage, Name: "m", Num: -1}); resp.Code != op.CodeBadRequest {
		t.Fatalf("negative page size: %v", resp.Code)
	}
	if resp := s.Apply(t0, &op.Request{Op: OpEntriesPage, Name: "none"}); resp.Found || resp.Code != op.OK {
		t.Fatalf("absent map: %+v", resp)
	}
}

// TestStatePageBytes: a page of large values stops at MaxPageBytes but
// always holds one entry, so a walk advances even past a huge value.
func TestStatePageBytes(t *testing.T) {
	s := newTestState()
	big := bytes.Repeat([]byte{'x'}, MaxPageBytes/3)
	for i := range 5 {
		s.Apply(t0, ptr(op.Request{Op: OpPut, Name: "m", Key: strconv.Itoa(i), Value: big}))
	}
	huge := bytes.Repeat([]byte{'y'}, MaxPageBytes+10)
	s.Apply(t0, ptr(op.Request{Op: OpPut, Name: "m", Key: "9", Value: huge}))
	var sizes []int
	cursor, after := "", false
	for {
		req := op.Request{Op: OpEntriesPage, Name: "m", Key: cursor}
		if after {
			req.Aux = []byte{pageAfter}
		}
		resp := s.Apply(t0, &req)
		es, err := decodeEntries(resp.Value)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Value) > MaxPageBytes+len(huge) {
			t.Fatalf("page of %d bytes", len(resp.Value))
		}
		sizes = append(sizes, len(es))
		if !resp.Found {
			break
		}
		cursor, after = es[len(es)-1].key, true
	}
	if !slices.Equal(sizes, []int{2, 2, 1, 1}) {
		t.Fatalf("page sizes %v, want [2 2 1 1]", sizes)
	}
	// Keys only: one page.
	if resp := s.Apply(t0, &op.Request{Op: OpKeysPage, Name: "m"}); resp.Found {
		t.Fatal("keys page cut by the values' size")
	}
}

// TestRangePaged: Range, RangeKeys, All and Keys walk through pages of
// every size and see every entry once; stopping early stops the walk.
func TestRangePaged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inv := newLocalInvoker(7)
	m := New(inv, "big")
	want := map[string][]byte{}
	for i := range 500 {
		k := "k" + strconv.Itoa(i)
		want[k] = []byte(strings.Repeat("v", i%5))
	}
	if err := m.PutAll(ctx, want); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{1, 3, 64, 0} {
		got := map[string][]byte{}
		err := m.Range(ctx, func(k string, v []byte) bool {
			if _, dup := got[k]; dup {
				t.Fatalf("size %d: %q twice", size, k)
			}
			got[k] = v
			return true
		}, PageSize(size))
		if err != nil || len(got) != len(want) {
			t.Fatalf("size %d: range saw %d of %d: %v", size, len(got), len(want), err)
		}
		for k, v := range want {
			if !bytes.Equal(got[k], v) {
				t.Fatalf("%q = %q, want %q", k, got[k], v)
			}
		}
		n := 0
		if err := m.RangeKeys(ctx, func(string) bool { n++; return true }, PageSize(size)); err != nil || n != len(want) {
			t.Fatalf("size %d: range-keys saw %d: %v", size, n, err)
		}
	}
	keys, err := m.Keys(ctx)
	if err != nil || len(keys) != len(want) || !slices.IsSorted(keys) {
		t.Fatalf("keys: %d %v", len(keys), err)
	}
	n := 0
	if err := m.Range(ctx, func(string, []byte) bool { n++; return n < 10 }, PageSize(3)); err != nil || n != 10 {
		t.Fatalf("early stop after %d: %v", n, err)
	}
	var iterErr error
	n = 0
	for k, v := range m.All(ctx, &iterErr, PageSize(4)) {
		if !bytes.Equal(v, want[k]) {
			t.Fatalf("all: %q = %q", k, v)
		}
		n++
	}
	if iterErr != nil || n != len(want) {
		t.Fatalf("all: %d %v", n, iterErr)
	}
	if err := m.Range(ctx, nil); !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("nil func: %v", err)
	}
}

// oldMember answers the paging operations as a member that predates them.
type oldMember struct{ *localInvoker }

func (o oldMember) Invoke(ctx context.Context, req *op.Request) (*op.Response, error) {
	if req.Op == OpKeysPage || req.Op == OpEntriesPage {
		return &op.Response{Code: op.CodeUnknownOp}, op.Errorf(op.CodeUnknownOp, "map: unknown operation %d", req.Op)
	}
	return o.localInvoker.Invoke(ctx, req)
}

// TestRangeOldMembers: against members without paging the walk falls back
// to whole partitions.
func TestRangeOldMembers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inv := oldMember{newLocalInvoker(5)}
	m := New(inv, "old")
	for i := range 50 {
		if err := m.Put(ctx, strconv.Itoa(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	if err := m.Range(ctx, func(string, []byte) bool { n++; return true }, PageSize(2)); err != nil || n != 50 {
		t.Fatalf("range saw %d: %v", n, err)
	}
	keys, err := m.Keys(ctx)
	if err != nil || len(keys) != 50 {
		t.Fatalf("keys: %d %v", len(keys), err)
	}
}
