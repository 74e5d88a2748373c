package maps

import (
	"context"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/op"
)

// Typed is a Map whose values are V, stored as msgpack. Encoding happens in
// the caller, so members only ever see bytes and any client language that
// speaks msgpack can share the map. A value that does not decode as V (a
// different type was written under the key) fails with an error wrapping
// op.ErrWrongType.
//
// Typed has no CompareAndSwap: msgpack of equal values need not be equal
// bytes (Go map iteration order), so comparing encodings would be a trap. Use
// Map().CompareAndSwap on bytes you control.
type Typed[V any] struct {
	m *Map
}

// NewTyped returns the typed view of the map called name, reached through
// inv. Typed and untyped handles on one name share the same entries.
func NewTyped[V any](inv op.Invoker, name string) *Typed[V] {
	return &Typed[V]{m: New(inv, name)}
}

// Map returns the untyped map under t.
func (t *Typed[V]) Map() *Map {
	if t == nil {
		return nil
	}
	return t.m
}

// Name returns the map's name.
func (t *Typed[V]) Name() string { return t.Map().Name() }

// Put stores v under key, replacing any previous value and TTL.
func (t *Typed[V]) Put(ctx context.Context, key string, v V, opts ...Option) error {
	b, err := encodeValue(v)
	if err != nil {
		return fmt.Errorf("maps: put %s: %w", op.Quote(key), err)
	}
	return t.Map().Put(ctx, key, b, opts...)
}

// Get returns the value under key; found is false (and v the zero V) when key
// is absent or expired.
func (t *Typed[V]) Get(ctx context.Context, key string) (v V, found bool, err error) {
	b, found, err := t.Map().Get(ctx, key)
	if err != nil || !found {
		return v, false, err
	}
	if v, err = decodeValue[V](b); err != nil {
		return v, false, fmt.Errorf("maps: get %s in map %s: %w", op.Quote(key), op.Quote(t.Name()), err)
	}
	return v, true, nil
}

// Delete removes key and reports whether it was present.
func (t *Typed[V]) Delete(ctx context.Context, key string) (bool, error) {
	return t.Map().Delete(ctx, key)
}

// PutIfAbsent stores v under key only if key is absent, atomically. stored
// reports whether it did; when it did not, existing is the value already
// there (if that fails to decode, err wraps op.ErrWrongType).
func (t *Typed[V]) PutIfAbsent(ctx context.Context, key string, v V, opts ...Option) (existing V, stored bool, err error) {
	b, err := encodeValue(v)
	if err != nil {
		return existing, false, fmt.Errorf("maps: put-if-absent %s: %w", op.Quote(key), err)
	}
	raw, stored, err := t.Map().PutIfAbsent(ctx, key, b, opts...)
	if err != nil || stored {
		return existing, stored, err
	}
	if existing, err = decodeValue[V](raw); err != nil {
		return existing, false, fmt.Errorf("maps: put-if-absent %s in map %s: existing value: %w", op.Quote(key), op.Quote(t.Name()), err)
	}
	return existing, false, nil
}

// Replace stores v under key only if key is present, atomically, and reports
// whether it did.
func (t *Typed[V]) Replace(ctx context.Context, key string, v V, opts ...Option) (bool, error) {
	b, err := encodeValue(v)
	if err != nil {
		return false, fmt.Errorf("maps: replace %s: %w", op.Quote(key), err)
	}
	return t.Map().Replace(ctx, key, b, opts...)
}

// Contains reports whether key is present.
func (t *Typed[V]) Contains(ctx context.Context, key string) (bool, error) {
	return t.Map().Contains(ctx, key)
}

// Size returns the number of live entries (see Map.Size).
func (t *Typed[V]) Size(ctx context.Context) (int, error) { return t.Map().Size(ctx) }

// Keys returns every live key, sorted (see Map.Keys).
func (t *Typed[V]) Keys(ctx context.Context) ([]string, error) { return t.Map().Keys(ctx) }

// Clear removes every entry (see Map.Clear).
func (t *Typed[V]) Clear(ctx context.Context) error { return t.Map().Clear(ctx) }

// Range calls fn for every live entry until fn returns false, page by page
// (see Map.Range).
// It stops with an error wrapping op.ErrWrongType at the first value that
// does not decode as V.
func (t *Typed[V]) Range(ctx context.Context, fn func(key string, v V) bool, opts ...RangeOption) error {
	if fn == nil {
		return fmt.Errorf("maps: range: %w: nil func", op.ErrBadRequest)
	}
	var derr error
	err := t.Map().Range(ctx, func(key string, b []byte) bool {
		v, err := decodeValue[V](b)
		if err != nil {
			derr = fmt.Errorf("maps: range map %s: key %s: %w", op.Quote(t.Name()), op.Quote(key), err)
			return false
		}
		return fn(key, v)
	}, opts...)
	if err != nil {
		return err
	}
	return derr
}

func encodeValue[V any](v V) ([]byte, error) {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: encode %T: %w", op.ErrWrongType, v, err)
	}
	return b, nil
}

// decodeValue decodes b as exactly one msgpack V. b is validated first (see
// wellFormed): trailing bytes mean b was not written as a V (a raw "hello"
// would otherwise decode as the int 104), and a forged bin length would make
// the msgpack decoder allocate it up front.
func decodeValue[V any](b []byte) (V, error) {
	var v V
	err := wellFormed(b)
	if err == nil {
		err = msgpack.Unmarshal(b, &v)
	}
	if err != nil {
		var zero V
		return zero, fmt.Errorf("%w: decode %T: %w", op.ErrWrongType, zero, err)
	}
	return v, nil
}
