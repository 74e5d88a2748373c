// Package mpsafe walks msgpack that came from a peer without trusting it:
// every length and element count must fit in the bytes present, nesting is
// bounded, and nothing recurses, so no input can make a decoder allocate
// without bound or overflow the stack.
//
// msgpack's own Decoder.Skip (used for unknown fields) and its reflective
// decoding recurse once per level of nesting: a 5 MB frame holding an array
// nested five million levels deep killed a member with a stack overflow.
// Callers run Check (or ValueEnd) over a peer's bytes before decoding them
// with msgpack, and use Skip instead of Decoder.Skip.
package mpsafe

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// MaxDepth is the deepest nesting of arrays and maps accepted by default:
// no Shoal message nests more than a few levels.
const MaxDepth = 64

// ErrTooDeep is wrapped by the errors of input nested deeper than allowed.
var ErrTooDeep = errors.New("msgpack nested too deeply")

// stackInline is how many levels a walk tracks without allocating.
const stackInline = 16

// Check checks that b is a sequence of complete msgpack values (at least
// one) in which every length and element count fits in the bytes that follow
// it, and no value nests arrays and maps more than maxDepth levels deep.
// It walks without recursion.
func Check(b []byte, maxDepth int) error {
	if len(b) == 0 {
		return io.ErrUnexpectedEOF
	}
	for len(b) > 0 {
		n, err := ValueEnd(b, maxDepth)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// ValueEnd returns the length of the msgpack value b starts with, after
// the checks of Check.
func ValueEnd(b []byte, maxDepth int) (int, error) {
	const (
		payload = iota // the length counts bytes
		ext            // bytes, plus the ext type byte
		array          // values
		dict           // key-value pairs
	)
	// open holds, for each enclosing array or map, the values it still
	// holds; pending is their total plus the value being read.
	var inline [stackInline]uint64
	open := inline[:0]
	i, pending := 0, uint64(1)
	for pending > 0 {
		if i >= len(b) {
			return 0, io.ErrUnexpectedEOF
		}
		for len(open) > 0 && open[len(open)-1] == 0 {
			open = open[:len(open)-1]
		}
		if len(open) > 0 {
			open[len(open)-1]--
		}
		c := b[i]
		i++
		pending--
		var size, items uint64 // bytes to skip, values to read
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
			// fixint, nil, false, true
		case c <= 0x8f: // fixmap
			items = 2 * uint64(c&0x0f)
		case c <= 0x9f: // fixarray
			items = uint64(c & 0x0f)
		case c <= 0xbf: // fixstr
			size = uint64(c & 0x1f)
		default:
			width, kind := 0, payload
			switch c {
			case 0xcc, 0xd0: // uint8, int8
				size = 1
			case 0xcd, 0xd1:
				size = 2
			case 0xca, 0xce, 0xd2: // float32, uint32, int32
				size = 4
			case 0xcb, 0xcf, 0xd3:
				size = 8
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1..16, after the type
				size = 1 + 1<<(c-0xd4)
			case 0xc4, 0xd9: // bin8, str8
				width = 1
			case 0xc5, 0xda:
				width = 2
			case 0xc6, 0xdb:
				width = 4
			case 0xc7, 0xc8, 0xc9: // ext8, ext16, ext32
				width, kind = 1<<(c-0xc7), ext
			case 0xdc, 0xdd: // array16, array32
				width, kind = 2<<(c-0xdc), array
			case 0xde, 0xdf: // map16, map32
				width, kind = 2<<(c-0xde), dict
			default:
				return 0, fmt.Errorf("invalid msgpack code %#x", c)
			}
			if width > 0 {
				if len(b)-i < width {
					return 0, io.ErrUnexpectedEOF
				}
				var n uint64
				for _, x := range b[i : i+width] {
					n = n<<8 | uint64(x)
				}
				i += width
				switch kind {
				case payload:
					size = n
				case ext:
					size = n + 1
				case array:
					items = n
				case dict:
					items = 2 * n
				}
			}
		}
		left := uint64(len(b) - i)
		if size > left {
			return 0, fmt.Errorf("%d bytes claimed, %d left: %w", size, left, io.ErrUnexpectedEOF)
		}
		i += int(size)
		left -= size
		if items > 0 {
			// Every value takes at least one byte.
			if pending+items > left {
				return 0, fmt.Errorf("%d values claimed, %d bytes left: %w", pending+items, left, io.ErrUnexpectedEOF)
			}
			if len(open) >= maxDepth {
				return 0, fmt.Errorf("%w (limit %d)", ErrTooDeep, maxDepth)
			}
			open = append(open, items)
			pending += items
		}
	}
	return i, nil
}

// Skip reads past the next value of dec without recursion, refusing
// nesting deeper than maxDepth. Unlike Decoder.Skip it cannot overflow the
// stack however deep the input nests. When dec reads from a bytes.Reader,
// bytes.Buffer or strings.Reader, lengths longer than the input left are
// refused before anything is read.
func Skip(dec *msgpack.Decoder, maxDepth int) error {
	var inline [stackInline]int
	open := append(inline[:0], 1) // values left at each level
	for len(open) > 0 {
		if open[len(open)-1] == 0 {
			open = open[:len(open)-1]
			continue
		}
		open[len(open)-1]--
		c, err := dec.PeekCode()
		if err != nil {
			return err
		}
		var n int
		switch {
		case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
			n, err = dec.DecodeArrayLen()
		case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
			n, err = dec.DecodeMapLen()
			n *= 2
		default:
			// Scalars, strings, bins and exts: msgpack skips them
			// without recursing.
			err = skipScalar(dec, c)
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			continue
		}
		if left, known := Remaining(dec); known && n > left {
			return fmt.Errorf("%d values claimed, %d bytes left: %w", n, left, io.ErrUnexpectedEOF)
		}
		if len(open) > maxDepth {
			return fmt.Errorf("%w (limit %d)", ErrTooDeep, maxDepth)
		}
		open = append(open, n)
	}
	return nil
}

// skipScalar skips a value that is not an array or map, checking a string
// or bin length against the input left when it is known.
func skipScalar(dec *msgpack.Decoder, c byte) error {
	if msgpcode.IsString(c) || msgpcode.IsBin(c) {
		n, err := dec.DecodeBytesLen()
		if err != nil || n <= 0 {
			return err
		}
		if left, known := Remaining(dec); known && n > left {
			return fmt.Errorf("%d bytes claimed, %d left: %w", n, left, io.ErrUnexpectedEOF)
		}
		var buf [512]byte
		for n > 0 {
			k := min(n, len(buf))
			if err := dec.ReadFull(buf[:k]); err != nil {
				return err
			}
			n -= k
		}
		return nil
	}
	return dec.Skip()
}

// Remaining returns how many input bytes dec has left when it reads from an
// in-memory reader (bytes.Reader, bytes.Buffer or strings.Reader).
func Remaining(dec *msgpack.Decoder) (int, bool) {
	switch r := dec.Buffered().(type) {
	case *bytes.Reader:
		return r.Len(), true
	case *bytes.Buffer:
		return r.Len(), true
	case *strings.Reader:
		return r.Len(), true
	}
	return 0, false
}
