package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// The map subcommands that stream (entries, keys --unsorted, listen) or
// take many keys (getall, putall, deleteall).

// streamSubs are the subcommands mapStreamCmd runs.
var streamSubs = map[string]bool{"entries": true, "listen": true, "getall": true, "putall": true, "deleteall": true}

type mapStreamFlags struct {
	unsorted bool
	values   bool
	count    int
}

func streamFlags(fs *flag.FlagSet) *mapStreamFlags {
	sf := &mapStreamFlags{}
	fs.BoolVar(&sf.unsorted, "unsorted", false, "keys: print keys page by page as they arrive (bounded memory) instead of sorted")
	fs.BoolVar(&sf.values, "values", false, "listen: print the entries' values too")
	fs.IntVar(&sf.count, "count", 0, "listen: exit after this many events (0: until interrupted)")
	return sf
}

func (sf *mapStreamFlags) check(sub string, pos []string) error {
	switch {
	case sf.unsorted && sub != "keys":
		return usagef("map", "--unsorted applies to map keys only")
	case (sf.values || sf.count != 0) && sub != "listen":
		return usagef("map", "--values and --count apply to map listen only")
	case sf.count < 0:
		return usagef("map", "--count must not be negative")
	case sub == "putall" && len(pos)%2 != 1:
		return usagef("map", "map putall needs NAME followed by KEY VALUE pairs (or none: pairs from stdin)")
	}
	return nil
}

// timedInvoker gives every request its own deadline, so a walk or a
// listener that runs for long still has each step bounded by --timeout.
type timedInvoker struct {
	inv interface {
		op.Invoker
		op.EventSource
	}
	d time.Duration
}

func (t timedInvoker) Invoke(ctx context.Context, req *op.Request) (*op.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.inv.Invoke(ctx, req)
}

func (t timedInvoker) InvokeAll(ctx context.Context, req *op.Request) ([]*op.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.inv.InvokeAll(ctx, req)
}

func (t timedInvoker) PartitionOf(key string) int32 { return t.inv.PartitionOf(key) }

func (t timedInvoker) SubscribeEvents(ctx context.Context, service, name string, fn func([]byte)) (func(), error) {
	ctx, cancel := context.WithTimeout(ctx, t.d)
	defer cancel()
	return t.inv.SubscribeEvents(ctx, service, name, fn)
}

// mapStreamCmd runs the streaming and batch subcommands. Their input
// (keys or pairs from stdin) is read before dialling.
func mapStreamCmd(ctx context.Context, e env, g *globals, sub string, pos []string, asMsgpack, raw bool, ttl time.Duration, sf *mapStreamFlags) error {
	name, args := pos[0], pos[1:]
	var pairs map[string][]byte
	var err error
	switch sub {
	case "getall", "deleteall":
		if len(args) == 0 {
			if args, err = readLines(e.stdin); err != nil {
				return err
			}
		}
	case "putall":
		if pairs, err = readPairs(e.stdin, args); err != nil {
			return err
		}
		if asMsgpack {
			for k, v := range pairs {
				if pairs[k], err = jsonToMsgpack(v); err != nil {
					return fmt.Errorf("key %s: %w", clip(k), err)
				}
			}
		}
	}
	for _, k := range args {
		if len(k) > wire.DefaultMaxKeySize {
			return op.Errorf(op.CodeTooLarge, "key %s exceeds the limit of %d bytes", clip(k), wire.DefaultMaxKeySize)
		}
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	m := maps.New(timedInvoker{inv: c, d: g.timeout}, name)
	out := bufio.NewWriterSize(e.stdout, 64<<10)
	defer out.Flush()
	p := printer{w: out, json: g.json, raw: raw, msgpack: asMsgpack}
	switch sub {
	case "keys":
		return m.RangeKeys(ctx, func(k string) bool {
			if g.json {
				err = p.jsonLine(map[string]any{"key": k})
			} else {
				err = p.line(p.key(k))
			}
			return err == nil
		})
	case "entries":
		werr := m.Range(ctx, func(k string, v []byte) bool {
			err = p.entry(k, v)
			return err == nil
		})
		return errors.Join(werr, err)
	case "getall":
		got, err := m.GetAll(ctx, args)
		if err != nil {
			return err
		}
		for _, k := range args {
			if v, ok := got[k]; ok {
				if err := p.entry(k, v); err != nil {
					return err
				}
				delete(got, k) // a key given twice prints once
			}
		}
		return nil
	case "putall":
		var opts []maps.Option
		if ttl > 0 {
			opts = append(opts, maps.WithTTL(ttl))
		}
		if err := m.PutAll(ctx, pairs, opts...); err != nil {
			return err
		}
		if g.json {
			return writeJSON(out, map[string]any{"map": name, "stored": len(pairs)})
		}
		return nil
	case "deleteall":
		n, err := m.DeleteAll(ctx, args)
		if err != nil {
			return err
		}
		if g.json {
			return writeJSON(out, map[string]any{"map": name, "deleted": n})
		}
		return p.line(strconv.Itoa(n))
	}
	return listenCmd(ctx, e, m, args, p, sf)
}

// listenCmd prints the map's events until ctx ends (Ctrl-C: exit 0) or
// --count events were printed.
func listenCmd(ctx context.Context, e env, m *maps.Map, args []string, p printer, sf *mapStreamFlags) error {
	var opts []maps.ListenOption
	if sf.values {
		opts = append(opts, maps.WithValues())
	}
	if len(args) == 1 {
		opts = append(opts, maps.ForKey(args[0]))
	}
	evs := make(chan maps.Event, 1024)
	dropped := make(chan struct{}, 1)
	stop, err := m.Listen(ctx, func(ev maps.Event) {
		select {
		case evs <- ev:
		default:
			// The printer fell behind: say so rather than block the
			// listener (whose own queue would then drop silently).
			select {
			case dropped <- struct{}{}:
			default:
			}
		}
	}, opts...)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(e.stderr, "listening to map %s (Ctrl-C stops)\n", clip(m.Name()))
	n := 0
	for sf.count == 0 || n < sf.count {
		select {
		case <-ctx.Done():
			return nil
		case <-dropped:
			if err := p.event(maps.Event{Kind: maps.EventLost}); err != nil {
				return err
			}
		case ev := <-evs:
			if err := p.event(ev); err != nil {
				return err
			}
			n++
		}
		if len(evs) == 0 {
			if err := p.w.Flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// printer writes keys, entries and events as text lines or JSON lines.
type printer struct {
	w                  *bufio.Writer
	json, raw, msgpack bool
}

func (p printer) line(s string) error {
	_, err := p.w.WriteString(s + "\n")
	return err
}

func (p printer) jsonLine(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = p.w.Write(append(b, '\n'))
	return err
}

func (p printer) key(k string) string {
	if p.raw {
		return k
	}
	return quoteKey(k)
}

// value renders a value for a text line: JSON with --msgpack, as it is
// with --raw, quoted like keys otherwise.
func (p printer) value(v []byte) string {
	if p.msgpack {
		if j, err := msgpackToJSON(v); err == nil {
			return string(j)
		}
	}
	if p.raw {
		return string(v)
	}
	return quoteKey(string(v))
}

// jsonValue sets "value" (text or decoded msgpack) or "value_base64".
func (p printer) jsonValue(doc map[string]any, v []byte) {
	if p.msgpack {
		if j, err := msgpackToJSON(v); err == nil {
			doc["value"] = json.RawMessage(j)
			return
		}
	}
	if utf8.Valid(v) {
		doc["value"] = string(v)
	} else {
		doc["value_base64"] = base64.StdEncoding.EncodeToString(v)
	}
}

// entry prints KEY<TAB>VALUE, or {"key","value"} with --json.
func (p printer) entry(k string, v []byte) error {
	if !p.json {
		return p.line(p.key(k) + "\t" + p.value(v))
	}
	doc := map[string]any{"key": k}
	p.jsonValue(doc, v)
	return p.jsonLine(doc)
}

// event prints KIND PARTITION:SEQ KEY [VALUE], or a JSON object.
func (p printer) event(ev maps.Event) error {
	if p.json {
		doc := map[string]any{"kind": ev.Kind.String(), "partition": ev.Partition, "seq": ev.Seq}
		if ev.Kind == maps.EventLost {
			doc["missed"] = ev.Missed
		} else {
			doc["key"] = ev.Key
		}
		if ev.Repeat {
			doc["repeat"] = true
		}
		if ev.Value != nil {
			p.jsonValue(doc, ev.Value)
		}
		return p.jsonLine(doc)
	}
	if ev.Kind == maps.EventLost {
		if ev.Missed == 0 && ev.Seq == 0 {
			return p.line(fmt.Sprintf("lost %d:? (events lost; re-read what matters)", ev.Partition))
		}
		return p.line(fmt.Sprintf("lost %d:%d (%d events lost; re-read what matters)", ev.Partition, ev.Seq, ev.Missed))
	}
	s := fmt.Sprintf("%s %d:%d %s", ev.Kind, ev.Partition, ev.Seq, p.key(ev.Key))
	if ev.Value != nil {
		s += " " + p.value(ev.Value)
	}
	if ev.Repeat {
		s += " (repeat)"
	}
	return p.line(s)
}

// readLines reads one key per line from stdin (a final line without a
// newline counts; an empty line is the empty key only when it is not the
// last).
func readLines(r io.Reader) ([]string, error) {
	if r == nil {
		return nil, errors.New("no keys given and there is no stdin")
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), wire.DefaultMaxKeySize+2)
	var keys []string
	for sc.Scan() {
		keys = append(keys, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read keys from stdin: %w", err)
	}
	return keys, nil
}

// readPairs returns the KEY VALUE pairs of args, or when there are none
// the KEY<TAB>VALUE lines of stdin.
func readPairs(stdin io.Reader, args []string) (map[string][]byte, error) {
	pairs := map[string][]byte{}
	if len(args) > 0 {
		for i := 0; i+1 < len(args); i += 2 {
			pairs[args[i]] = []byte(args[i+1])
		}
		return pairs, nil
	}
	lines, err := readLinesLimit(stdin)
	if err != nil {
		return nil, err
	}
	for i, l := range lines {
		k, v, ok := strings.Cut(l, "\t")
		if !ok {
			return nil, fmt.Errorf("stdin line %d: want KEY<TAB>VALUE", i+1)
		}
		pairs[k] = []byte(v)
	}
	return pairs, nil
}

func readLinesLimit(r io.Reader) ([]string, error) {
	if r == nil {
		return nil, errors.New("no pairs given and there is no stdin")
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), wire.DefaultMaxKeySize+wire.DefaultMaxValueSize+2)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read pairs from stdin: %w", err)
	}
	return lines, nil
}
