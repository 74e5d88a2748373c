package partition

import (
	"fmt"
	"math"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
)

// Tables arrive from the network, so decoding must not trust length
// prefixes. msgpack v5.4.1 preallocates generic slices to the claimed length
// (its allocation limit check is ineffective), letting an 8-byte message
// demand tens of gigabytes. The hand-written codec below preallocates at
// most preallocLimit elements and otherwise grows by appending, so memory
// stays proportional to the bytes actually decoded. Nesting is bounded too:
// Unmarshal checks the bytes with mpsafe first, and unknown keys are skipped
// with mpsafe.Skip (msgpack's own Skip recurses once per level).
const preallocLimit = 1024

// EncodeMsgpack writes the table as a msgpack map with the keys of its
// struct tags. Owning the format keeps it independent of encoder options
// (array-encoded structs, custom tags) and in step with DecodeMsgpack. It
// has a value receiver so tables held by value encode too.
func (t Table) EncodeMsgpack(e *msgpack.Encoder) error {
	if err := e.EncodeMapLen(7); err != nil {
		return err
	}
	if err := e.EncodeString("q"); err != nil {
		return err
	}
	if err := e.EncodeArrayLen(len(t.Voters)); err != nil {
		return err
	}
	for _, v := range t.Voters {
		if err := e.EncodeString(v); err != nil {
			return err
		}
	}
	if err := e.EncodeString("l"); err != nil {
		return err
	}
	if err := e.EncodeArrayLen(len(t.Lost)); err != nil {
		return err
	}
	for _, p := range t.Lost {
		if err := e.EncodeInt(int64(p)); err != nil {
			return err
		}
	}
	if err := e.EncodeString("e"); err != nil {
		return err
	}
	if err := e.EncodeUint(t.Epoch); err != nil {
		return err
	}
	if err := e.EncodeString("v"); err != nil {
		return err
	}
	if err := e.EncodeUint(t.Version); err != nil {
		return err
	}
	if err := e.EncodeString("c"); err != nil {
		return err
	}
	if err := e.EncodeInt(int64(t.Count)); err != nil {
		return err
	}
	if err := e.EncodeString("m"); err != nil {
		return err
	}
	if err := e.EncodeArrayLen(len(t.Members)); err != nil {
		return err
	}
	for i := range t.Members {
		if err := encodeMember(e, &t.Members[i]); err != nil {
			return err
		}
	}
	if err := e.EncodeString("r"); err != nil {
		return err
	}
	if err := e.EncodeArrayLen(len(t.Replicas)); err != nil {
		return err
	}
	for _, rs := range t.Replicas {
		if err := e.EncodeArrayLen(len(rs)); err != nil {
			return err
		}
		for _, m := range rs {
			// EncodeInt picks the shortest form; EncodeInt32 always
			// spends 5 bytes.
			if err := e.EncodeInt(int64(m)); err != nil {
				return err
			}
		}
	}
	return nil
}

func encodeMember(e *msgpack.Encoder, m *Member) error {
	fields := []struct{ key, val string }{{"n", m.Name}, {"a", m.Addr}}
	if m.Zone != "" {
		fields = append(fields, struct{ key, val string }{"z", m.Zone})
	}
	if m.Host != "" {
		fields = append(fields, struct{ key, val string }{"h", m.Host})
	}
	if err := e.EncodeMapLen(len(fields)); err != nil {
		return err
	}
	for _, f := range fields {
		if err := e.EncodeString(f.key); err != nil {
			return err
		}
		if err := e.EncodeString(f.val); err != nil {
			return err
		}
	}
	return nil
}

// DecodeMsgpack reads a table written by EncodeMsgpack without trusting its
// length prefixes; unknown keys are skipped for forward compatibility. It
// does not validate: Unmarshal does, and so must any caller decoding a Table
// embedded in a larger message.
func (t *Table) DecodeMsgpack(d *msgpack.Decoder) error {
	var nt Table
	n, err := d.DecodeMapLen()
	if err != nil {
		return err
	}
	for range n { // n == -1 (nil) decodes as the zero table
		key, err := d.DecodeString()
		if err != nil {
			return err
		}
		switch key {
		case "v":
			nt.Version, err = d.DecodeUint64()
		case "e":
			nt.Epoch, err = d.DecodeUint64()
		case "l":
			nt.Lost, err = decodeLost(d)
		case "c":
			nt.Count, err = d.DecodeInt()
		case "q":
			nt.Voters, err = decodeVoters(d)
		case "m":
			nt.Members, err = decodeMembers(d)
		case "r":
			nt.Replicas, err = decodeReplicas(d)
		default:
			err = mpsafe.Skip(d, mpsafe.MaxDepth)
		}
		if err != nil {
			return fmt.Errorf("table field %q: %w", key, err)
		}
	}
	*t = nt
	return nil
}

func decodeMembers(d *msgpack.Decoder) ([]Member, error) {
	n, err := d.DecodeArrayLen()
	if err != nil || n < 0 {
		return nil, err
	}
	ms := make([]Member, 0, min(n, preallocLimit))
	for range n {
		m, err := decodeMember(d)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

func decodeMember(d *msgpack.Decoder) (Member, error) {
	var m Member
	n, err := d.DecodeMapLen()
	if err != nil {
		return m, err
	}
	for range n {
		key, err := d.DecodeString()
		if err != nil {
			return m, err
		}
		switch key {
		case "n":
			m.Name, err = d.DecodeString()
		case "a":
			m.Addr, err = d.DecodeString()
		case "z":
			m.Zone, err = d.DecodeString()
		case "h":
			m.Host, err = d.DecodeString()
		default:
			err = mpsafe.Skip(d, mpsafe.MaxDepth)
		}
		if err != nil {
			return m, fmt.Errorf("member field %q: %w", key, err)
		}
	}
	return m, nil
}

func decodeReplicas(d *msgpack.Decoder) ([][]int32, error) {
	n, err := d.DecodeArrayLen()
	if err != nil || n < 0 {
		return nil, err
	}
	out := make([][]int32, 0, min(n, preallocLimit))
	for range n {
		k, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		var rs []int32
		if k > 0 {
			rs = make([]int32, 0, min(k, preallocLimit))
		}
		for range k {
			m, err := d.DecodeInt64()
			if err != nil {
				return nil, err
			}
			if m < math.MinInt32 || m > math.MaxInt32 {
				return nil, fmt.Errorf("member index %d overflows int32", m)
			}
			rs = append(rs, int32(m))
		}
		out = append(out, rs)
	}
	return out, nil
}

func decodeLost(d *msgpack.Decoder) ([]int32, error) {
	n, err := d.DecodeArrayLen()
	if err != nil || n <= 0 {
		return nil, err
	}
	out := make([]int32, 0, min(n, preallocLimit))
	for range n {
		v, err := d.DecodeInt32()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func decodeVoters(d *msgpack.Decoder) ([]string, error) {
	n, err := d.DecodeArrayLen()
	if err != nil || n < 0 {
		return nil, err
	}
	vs := make([]string, 0, min(n, preallocLimit))
	for range n {
		v, err := d.DecodeString()
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, nil
}
