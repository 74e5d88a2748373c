package maps

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

type user struct {
	Name  string
	Age   int
	Tags  []string
	Since time.Time
}

func TestTyped(t *testing.T) {
	ctx := context.Background()
	inv := newLocalInvoker(7)
	users := NewTyped[user](inv, "users")
	if users.Name() != "users" || users.Map().Name() != "users" {
		t.Fatal("wrong name")
	}
	ada := user{Name: "Ada", Age: 36, Tags: []string{"math"}, Since: time.Unix(1_000, 0).UTC()}
	if err := users.Put(ctx, "ada", ada, WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, ok, err := users.Get(ctx, "ada")
	if err != nil || !ok || got.Name != ada.Name || got.Age != ada.Age || !slices.Equal(got.Tags, ada.Tags) || !got.Since.Equal(ada.Since) {
		t.Fatalf("Get = %+v, %v, %v", got, ok, err)
	}
	if got, ok, err := users.Get(ctx, "nobody"); ok || err != nil || got.Name != "" {
		t.Fatalf("Get missing = %+v, %v, %v", got, ok, err)
	}

	existing, stored, err := users.PutIfAbsent(ctx, "ada", user{Name: "other"})
	if err != nil || stored || existing.Name != "Ada" {
		t.Fatalf("PutIfAbsent present = %+v, %v, %v", existing, stored, err)
	}
	if _, stored, err := users.PutIfAbsent(ctx, "bob", user{Name: "Bob"}); err != nil || !stored {
		t.Fatalf("PutIfAbsent absent = %v, %v", stored, err)
	}
	if ok, err := users.Replace(ctx, "bob", user{Name: "Bob", Age: 2}); !ok || err != nil {
		t.Fatalf("Replace = %v, %v", ok, err)
	}
	if ok, err := users.Replace(ctx, "eve", user{}); ok || err != nil {
		t.Fatalf("Replace absent = %v, %v", ok, err)
	}
	if ok, err := users.Contains(ctx, "bob"); !ok || err != nil {
		t.Fatalf("Contains = %v, %v", ok, err)
	}
	if n, err := users.Size(ctx); n != 2 || err != nil {
		t.Fatalf("Size = %d, %v", n, err)
	}
	if ks, err := users.Keys(ctx); !slices.Equal(ks, []string{"ada", "bob"}) || err != nil {
		t.Fatalf("Keys = %q, %v", ks, err)
	}
	seen := map[string]int{}
	if err := users.Range(ctx, func(k string, u user) bool { seen[k] = u.Age; return true }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen["ada"] != 36 || seen["bob"] != 2 {
		t.Fatalf("Range saw %v", seen)
	}
	if ok, err := users.Delete(ctx, "bob"); !ok || err != nil {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	if err := users.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := users.Size(ctx); n != 0 {
		t.Fatalf("Size after Clear %d", n)
	}

	// Typed and untyped handles share entries.
	nums := NewTyped[int](inv, "nums")
	_ = nums.Put(ctx, "one", 1)
	if n, ok, err := NewTyped[int64](inv, "nums").Get(ctx, "one"); n != 1 || !ok || err != nil {
		t.Fatalf("cross-typed Get = %d, %v, %v", n, ok, err)
	}
}

func TestTypedWrongType(t *testing.T) {
	ctx := context.Background()
	inv := newLocalInvoker(7)
	raw := New(inv, "mixed")
	for _, v := range []string{"hello", "", "\xc6\xff\xff\xff\xff"} {
		if err := raw.Put(ctx, "k", []byte(v)); err != nil {
			t.Fatal(err)
		}
		for name, get := range map[string]func() error{
			"int":    func() error { _, _, err := NewTyped[int](inv, "mixed").Get(ctx, "k"); return err },
			"string": func() error { _, _, err := NewTyped[string](inv, "mixed").Get(ctx, "k"); return err },
			"user":   func() error { _, _, err := NewTyped[user](inv, "mixed").Get(ctx, "k"); return err },
			"bytes":  func() error { _, _, err := NewTyped[[]byte](inv, "mixed").Get(ctx, "k"); return err },
		} {
			if err := get(); !errors.Is(err, op.ErrWrongType) {
				t.Errorf("raw %q as %s: %v, want wrong type", v, name, err)
			}
		}
	}

	strs := NewTyped[string](inv, "mixed")
	if err := strs.Put(ctx, "k", "a string"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewTyped[user](inv, "mixed").Get(ctx, "k"); !errors.Is(err, op.ErrWrongType) {
		t.Errorf("string as user: %v", err)
	}
	if _, _, err := NewTyped[int](inv, "mixed").PutIfAbsent(ctx, "k", 1); !errors.Is(err, op.ErrWrongType) {
		t.Errorf("PutIfAbsent over string as int: %v", err)
	}
	calls := 0
	err := NewTyped[int](inv, "mixed").Range(ctx, func(string, int) bool { calls++; return true })
	if !errors.Is(err, op.ErrWrongType) || calls != 0 {
		t.Errorf("Range over string as int: %v after %d calls", err, calls)
	}

	// Values msgpack cannot encode fail before any request.
	chans := NewTyped[chan int](inv, "chans")
	if err := chans.Put(ctx, "c", make(chan int)); !errors.Is(err, op.ErrWrongType) {
		t.Errorf("encode chan: %v", err)
	}
	if _, _, err := chans.PutIfAbsent(ctx, "c", make(chan int)); !errors.Is(err, op.ErrWrongType) {
		t.Errorf("encode chan: %v", err)
	}
	if _, err := chans.Replace(ctx, "c", make(chan int)); !errors.Is(err, op.ErrWrongType) {
		t.Errorf("encode chan: %v", err)
	}
	if n, _ := chans.Size(ctx); n != 0 {
		t.Errorf("failed encode stored %d entries", n)
	}
}

func TestTypedValidation(t *testing.T) {
	ctx := context.Background()
	var nilTyped *Typed[int]
	if nilTyped.Map() != nil || nilTyped.Name() != "" {
		t.Fatal("nil Typed has a map")
	}
	for _, tm := range []*Typed[int]{nilTyped, NewTyped[int](newLocalInvoker(1), "")} {
		errs := []error{tm.Put(ctx, "k", 1), tm.Clear(ctx), tm.Range(ctx, func(string, int) bool { return true }), tm.Range(ctx, nil)}
		_, _, err := tm.Get(ctx, "k")
		errs = append(errs, err)
		_, err = tm.Size(ctx)
		errs = append(errs, err)
		for i, err := range errs {
			if !errors.Is(err, op.ErrBadRequest) {
				t.Errorf("call %d: %v, want bad request", i, err)
			}
		}
	}
}
