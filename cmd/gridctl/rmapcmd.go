package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/shoalgrid/shoal/replicated"
	"github.com/shoalgrid/shoal/wire"
)

const rmapHelp = `usage: gridctl rmap SUBCOMMAND NAME ...

Replicated maps: every member holds a full copy; the member a call reaches
answers from its own copy, and writes reach the other members in the
background (eventual consistency: the newest write of a key wins).

  put NAME KEY VALUE   store VALUE under KEY ("-" reads VALUE from stdin)
  get NAME KEY         print the value, exactly (no newline added); exit 1
                       if absent
  delete NAME KEY      delete KEY (exit 1 if the member did not hold it)
  list NAME            print KEY=VALUE lines in key order (--json: an array
                       of {"key","value" or "value_base64","time","origin"})
  len NAME             print the number of entries

` + globalHelp

// rmapSubs are the rmap subcommands and their positional arguments.
var rmapSubs = []subSpec{
	{"put", 3, 3, "NAME KEY VALUE"},
	{"get", 2, 2, "NAME KEY"},
	{"delete", 2, 2, "NAME KEY"},
	{"list", 1, 1, "NAME"},
	{"len", 1, 1, "NAME"},
}

// rmapEntryJSON is one entry of rmap list --json (and rmap get --json).
type rmapEntryJSON struct {
	Key         string  `json:"key"`
	Found       *bool   `json:"found,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 string  `json:"value_base64,omitempty"`
	Time        int64   `json:"time,omitempty"`
	Origin      string  `json:"origin,omitempty"`
}

func rmapEntry(key string, v []byte, ver replicated.Version) rmapEntryJSON {
	doc := rmapEntryJSON{Key: key, Time: ver.Time, Origin: ver.Origin}
	if utf8.Valid(v) {
		s := string(v)
		doc.Value = &s
	} else {
		doc.ValueBase64 = base64.StdEncoding.EncodeToString(v)
	}
	return doc
}

// rmapCmd implements "gridctl rmap SUBCOMMAND ...".
func rmapCmd(ctx context.Context, e env, g *globals, args []string) error {
	fs := newFlagSet("rmap")
	pos, err := parseCommand(e, "rmap", fs, g, args)
	if err != nil {
		return err
	}
	sub, pos, err := subcommand("rmap", pos, rmapSubs)
	if err != nil {
		return err
	}
	if len(pos) > 1 && len(pos[1]) > wire.DefaultMaxKeySize {
		return usagef("rmap", "key of %d bytes, limit %d", len(pos[1]), wire.DefaultMaxKeySize)
	}
	var value []byte
	if sub == "put" {
		value = []byte(pos[2])
		if pos[2] == "-" {
			if value, err = io.ReadAll(io.LimitReader(e.stdin, replicated.DefaultMaxValueBytes+1)); err != nil {
				return fmt.Errorf("read value from stdin: %w", err)
			}
		}
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	octx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	m := replicated.New(c, pos[0])
	switch sub {
	case "put":
		return m.Put(octx, pos[1], value)
	case "get":
		v, ver, found, err := m.GetVersion(octx, pos[1])
		if err != nil {
			return err
		}
		if g.json {
			doc := rmapEntryJSON{Key: pos[1]}
			if found {
				doc = rmapEntry(pos[1], v, ver)
			}
			doc.Found = &found
			if err := writeJSON(e.stdout, doc); err != nil {
				return err
			}
		}
		if !found {
			return errNotFound{m: pos[0], key: pos[1]}
		}
		if g.json {
			return nil
		}
		_, err = e.stdout.Write(v)
		return err
	case "delete":
		found, err := m.Delete(octx, pos[1])
		if err != nil {
			return err
		}
		if !found {
			return errNotFound{m: pos[0], key: pos[1]}
		}
		return nil
	case "len":
		n, err := m.Len(octx)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(e.stdout, n)
		return err
	default: // list
		es, err := m.Entries(octx)
		if err != nil {
			return err
		}
		if g.json {
			docs := make([]rmapEntryJSON, 0, len(es))
			for _, en := range es {
				docs = append(docs, rmapEntry(en.Key, en.Value, en.Version))
			}
			return writeJSON(e.stdout, docs)
		}
		for _, en := range es {
			if _, err := fmt.Fprintf(e.stdout, "%s=%s\n", en.Key, en.Value); err != nil {
				return err
			}
		}
		return nil
	}
}
