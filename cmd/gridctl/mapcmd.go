package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// errNotFound reports an absent key; it exits 1 like any failure, so
// scripts can test for presence with the exit status.
type errNotFound struct{ m, key string }

func (e errNotFound) Error() string {
	return fmt.Sprintf("key %s not found in map %s", clip(e.key), clip(e.m))
}

// quieter replaces the quoted key and map name in err's text by clipped
// ones: the maps package quotes the key in full, and a key may be 32 KiB.
type quieter struct {
	err    error
	m, key string
}

func (q quieter) Error() string {
	s := q.err.Error()
	if len(q.key) > maxShown {
		s = strings.ReplaceAll(s, strconv.Quote(q.key), clip(q.key))
	}
	if len(q.m) > maxShown {
		s = strings.ReplaceAll(s, strconv.Quote(q.m), clip(q.m))
	}
	return s
}

func (q quieter) Unwrap() error { return q.err }

// mapSubs are the map subcommands and their positional arguments.
var mapSubs = []subSpec{
	{"put", 3, 3, "NAME KEY VALUE"},
	{"get", 2, 2, "NAME KEY"},
	{"delete", 2, 2, "NAME KEY"},
	{"size", 1, 1, "NAME"},
	{"keys", 1, 1, "NAME"},
	{"entries", 1, 1, "NAME"},
	{"listen", 1, 2, "NAME [KEY]"},
	{"getall", 1, -1, "NAME [KEY...]"},
	{"putall", 1, -1, "NAME [KEY VALUE...]"},
	{"deleteall", 1, -1, "NAME [KEY...]"},
}

// mapCmd implements "gridctl map SUBCOMMAND ...". One flag set serves every
// subcommand so flags may appear before the subcommand too; --ttl is then
// rejected where it has no meaning.
func mapCmd(ctx context.Context, e env, g *globals, args []string) error {
	fs := newFlagSet("map")
	ttl := fs.Duration("ttl", 0, "expire the entry after this long (put only)")
	asMsgpack := fs.Bool("msgpack", false, "put: VALUE is JSON, stored msgpack-encoded as maps.NewTyped does; get: decode the value to JSON")
	raw := fs.Bool("raw", false, "keys: print keys as they are, even when not printable")
	sf := streamFlags(fs)
	pos, err := parseCommand(e, "map", fs, g, args)
	if err != nil {
		return err
	}
	sub, pos, err := subcommand("map", pos, mapSubs)
	if err != nil {
		return err
	}
	if *ttl != 0 && sub != "put" && sub != "putall" {
		return usagef("map", "--ttl applies to map put and putall only")
	}
	if *ttl < 0 {
		return usagef("map", "--ttl must not be negative")
	}
	if *asMsgpack && sub != "put" && sub != "get" && sub != "entries" && sub != "listen" && sub != "getall" {
		return usagef("map", "--msgpack applies to map put, get, entries, listen and getall only")
	}
	if *raw && sub != "keys" && sub != "entries" && sub != "listen" && sub != "getall" {
		return usagef("map", "--raw applies to map keys, entries, listen and getall only")
	}
	if err := sf.check(sub, pos); err != nil {
		return err
	}
	if streamSubs[sub] || (sub == "keys" && sf.unsorted) {
		return mapStreamCmd(ctx, e, g, sub, pos, *asMsgpack, *raw, *ttl, sf)
	}
	if *raw && g.json {
		return usagef("map", "give --raw or --json, not both")
	}

	var value []byte
	if sub == "put" {
		// Read stdin before dialling: a slow producer must not eat into
		// the operation's timeout.
		if value, err = readValue(e.stdin, pos[2]); err != nil {
			return err
		}
		if *asMsgpack {
			if value, err = jsonToMsgpack(value); err != nil {
				return err
			}
		}
	}
	if sub != "size" && sub != "keys" && len(pos[1]) > wire.DefaultMaxKeySize {
		return op.Errorf(op.CodeTooLarge, "key %s exceeds the limit of %d bytes", clip(pos[1]), wire.DefaultMaxKeySize)
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	octx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	key := ""
	if len(pos) > 1 {
		key = pos[1]
	}
	if err := mapOp(octx, e, g, c, sub, pos[0], key, value, *ttl, *asMsgpack, *raw); err != nil {
		return quieter{err: err, m: pos[0], key: key}
	}
	return nil
}

// mapJSON is the --json document of the map subcommands; each fills the
// fields that apply to it.
type mapJSON struct {
	Map string `json:"map"`
	Key string `json:"key,omitempty"`
	// Found: get and delete (whether the key was there).
	Found *bool `json:"found,omitempty"`
	// Value is the value read by get when it is valid UTF-8 (or, with
	// --msgpack, its JSON decoding); ValueBase64 otherwise.
	Value       *json.RawMessage `json:"value,omitempty"`
	ValueBase64 string           `json:"value_base64,omitempty"`
	Size        *int             `json:"size,omitempty"`
	Keys        []string         `json:"keys,omitempty"`
	Stored      bool             `json:"stored,omitempty"`
}

// mapOp runs one map subcommand on a connected client.
func mapOp(ctx context.Context, e env, g *globals, c op.Invoker, sub, name, key string, value []byte, ttl time.Duration, asMsgpack, raw bool) error {
	m := maps.New(c, name)
	switch sub {
	case "put":
		if err := m.Put(ctx, key, value, maps.WithTTL(ttl)); err != nil {
			return err
		}
		if g.json {
			return writeJSON(e.stdout, mapJSON{Map: name, Key: key, Stored: true})
		}
		return nil
	case "get":
		v, found, err := m.Get(ctx, key)
		if err != nil {
			return err
		}
		if found && asMsgpack {
			if v, err = msgpackToJSON(v); err != nil {
				return err
			}
		}
		if g.json {
			doc := mapJSON{Map: name, Key: key, Found: &found}
			switch {
			case !found:
			case asMsgpack:
				doc.Value = (*json.RawMessage)(&v)
			case utf8.Valid(v):
				b, _ := json.Marshal(string(v))
				doc.Value = (*json.RawMessage)(&b)
			default:
				doc.ValueBase64 = base64.StdEncoding.EncodeToString(v)
			}
			if err := writeJSON(e.stdout, doc); err != nil {
				return err
			}
		}
		if !found {
			return errNotFound{m: name, key: key}
		}
		if g.json {
			return nil
		}
		if asMsgpack {
			v = append(v, '\n')
		}
		_, err = e.stdout.Write(v)
		return err
	case "delete":
		existed, err := m.Delete(ctx, key)
		if err != nil {
			return err
		}
		if g.json {
			if err := writeJSON(e.stdout, mapJSON{Map: name, Key: key, Found: &existed}); err != nil {
				return err
			}
		}
		if !existed {
			return errNotFound{m: name, key: key}
		}
		return nil
	case "size":
		n, err := m.Size(ctx)
		if err != nil {
			return err
		}
		if g.json {
			return writeJSON(e.stdout, mapJSON{Map: name, Size: &n})
		}
		_, err = fmt.Fprintln(e.stdout, n)
		return err
	default: // keys
		keys, err := m.Keys(ctx)
		if err != nil {
			return err
		}
		if g.json {
			// Invalid UTF-8 becomes U+FFFD in JSON: --raw is the lossless form.
			return writeJSON(e.stdout, mapJSON{Map: name, Keys: append([]string{}, keys...)})
		}
		buf := make([]byte, 0, 64*1024)
		for _, k := range keys {
			if !raw {
				k = quoteKey(k)
			}
			buf = append(append(buf, k...), '\n')
			if len(buf) >= 60*1024 {
				if _, err := e.stdout.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
		_, err = e.stdout.Write(buf)
		return err
	}
}

// quoteKey returns k as it is when it prints safely on a terminal and cannot
// be mistaken for a quoted key, and Go-quoted ("a\nb", "\x1b[2J") otherwise:
// a key holding a newline or an escape sequence must not forge lines or
// drive the terminal. Keys with spaces stay bare (one key per line).
func quoteKey(k string) string {
	if k == "" || k[0] == '"' || k[0] == ' ' || k[len(k)-1] == ' ' || !utf8.ValidString(k) {
		return strconv.Quote(k)
	}
	for _, r := range k {
		if !unicode.IsPrint(r) && r != ' ' {
			return strconv.Quote(k)
		}
	}
	return k
}

// jsonToMsgpack re-encodes one JSON value as msgpack, as maps.NewTyped
// stores values: objects become maps with string keys, integral numbers
// integers (so they decode into int fields), other numbers floats.
func jsonToMsgpack(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("--msgpack: VALUE is not JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("--msgpack: VALUE holds more than one JSON value")
	}
	out, err := msgpack.Marshal(integral(v))
	if err != nil {
		return nil, fmt.Errorf("--msgpack: %w", err)
	}
	return out, nil
}

// integral turns json.Numbers into int64 when they are integers, float64
// otherwise, through maps and slices.
func integral(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = integral(e)
		}
	case []any:
		for i, e := range x {
			x[i] = integral(e)
		}
	}
	return v
}

// msgpackToJSON decodes one msgpack value and encodes it as JSON.
func msgpackToJSON(b []byte) ([]byte, error) {
	var v any
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	dec.SetMapDecoder(func(d *msgpack.Decoder) (any, error) { return d.DecodeUntypedMap() })
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("--msgpack: the value is not msgpack: %w", err)
	}
	out, err := json.Marshal(jsonable(v))
	if err != nil {
		return nil, fmt.Errorf("--msgpack: the value has no JSON form: %w", err)
	}
	return out, nil
}

// jsonable turns msgpack's map[any]any into map[string]any for JSON.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e)
		}
	case []any:
		for i, e := range x {
			x[i] = jsonable(e)
		}
	}
	return v
}

// readValue returns the literal argument, or stdin when it is "-". Stdin is
// read only up to one byte past the client's value limit: the client would
// refuse anything larger before sending it, so reading the rest would only
// waste memory.
func readValue(stdin io.Reader, arg string) ([]byte, error) {
	if arg != "-" {
		return []byte(arg), nil
	}
	if stdin == nil {
		return nil, errors.New("value \"-\" given but there is no stdin")
	}
	v, err := io.ReadAll(io.LimitReader(stdin, wire.DefaultMaxValueSize+1))
	if err != nil {
		return nil, fmt.Errorf("read value from stdin: %w", err)
	}
	if len(v) > wire.DefaultMaxValueSize {
		return nil, op.Errorf(op.CodeTooLarge, "value from stdin exceeds the limit of %d bytes", wire.DefaultMaxValueSize)
	}
	return v, nil
}
