package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// errNotFound reports an absent key; it exits 1 like any failure, so
// scripts can test for presence with the exit status.
type errNotFound struct{ m, key string }

func (e errNotFound) Error() string {
	return fmt.Sprintf("key %q not found in map %q", e.key, e.m)
}

// mapArgs is the number of positional arguments (after the subcommand) of
// each map subcommand.
var mapArgs = map[string]struct {
	n    int
	want string
}{
	"put":    {3, "NAME KEY VALUE"},
	"get":    {2, "NAME KEY"},
	"delete": {2, "NAME KEY"},
	"size":   {1, "NAME"},
	"keys":   {1, "NAME"},
}

// mapCmd implements "gridctl map SUBCOMMAND ...". One flag set serves every
// subcommand so flags may appear before the subcommand too; --ttl is then
// rejected where it has no meaning.
func mapCmd(ctx context.Context, e env, g *globals, args []string) error {
	fs := newFlagSet("map")
	ttl := fs.Duration("ttl", 0, "expire the entry after this long (put only)")
	pos, err := parseCommand(e, "map", fs, g, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("map", "map needs a subcommand: put, get, delete, size or keys")
	}
	sub, pos := pos[0], pos[1:]
	spec, ok := mapArgs[sub]
	if !ok {
		return usagef("map", "unknown map subcommand %q", sub)
	}
	if len(pos) != spec.n {
		return usagef("map", "map %s needs %s, got %d argument(s)", sub, spec.want, len(pos))
	}
	if pos[0] == "" {
		return usagef("map", "map name is empty")
	}
	if *ttl != 0 && sub != "put" {
		return usagef("map", "--ttl applies to map put only")
	}
	if *ttl < 0 {
		return usagef("map", "--ttl must not be negative")
	}

	var value []byte
	if sub == "put" {
		// Read stdin before dialling: a slow producer must not eat into
		// the operation's timeout.
		if value, err = readValue(e.stdin, pos[2]); err != nil {
			return err
		}
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	m := maps.New(c, pos[0])
	octx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()

	switch sub {
	case "put":
		return m.Put(octx, pos[1], value, maps.WithTTL(*ttl))
	case "get":
		v, found, err := m.Get(octx, pos[1])
		if err != nil {
			return err
		}
		if !found {
			return errNotFound{m: pos[0], key: pos[1]}
		}
		_, err = e.stdout.Write(v)
		return err
	case "delete":
		existed, err := m.Delete(octx, pos[1])
		if err != nil {
			return err
		}
		if !existed {
			return errNotFound{m: pos[0], key: pos[1]}
		}
		return nil
	case "size":
		n, err := m.Size(octx)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(e.stdout, n)
		return err
	default: // keys
		keys, err := m.Keys(octx)
		if err != nil {
			return err
		}
		buf := make([]byte, 0, 64*1024)
		for _, k := range keys {
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
