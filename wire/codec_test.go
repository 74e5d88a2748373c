package wire_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// opaque hides a reader's type (and its Len method), so a msgpack decoder
// reading from it cannot see how much input is left.
type opaque struct{ r io.Reader }

func (o opaque) Read(p []byte) (int, error) { return o.r.Read(p) }

func opaqueDecoder(b []byte) *msgpack.Decoder {
	return msgpack.NewDecoder(bufio.NewReaderSize(opaque{bytes.NewReader(b)}, 16))
}

func testRequests() map[string]*op.Request {
	return map[string]*op.Request{
		"zero": {},
		"all fields": {
			Service: "map", Name: "users", Op: 7, Partition: 42, Key: "user:1",
			Value: []byte("value"), Aux: []byte("expected"), Num: 1234567, TableVersion: 99,
			Timeout: 1500 * time.Millisecond,
		},
		"max": {
			Service: strings.Repeat("s", 300), Name: strings.Repeat("n", 70000), Op: math.MaxUint8,
			Partition: math.MaxInt32, Key: strings.Repeat("k", 40), Value: bytes.Repeat([]byte{0xff}, 70000),
			Aux: bytes.Repeat([]byte{1}, 300), Num: math.MaxInt64, TableVersion: math.MaxUint64,
			Timeout: math.MaxInt64,
		},
		"min":                   {Partition: math.MinInt32, Num: math.MinInt64, Op: 0, TableVersion: 0, Timeout: 1},
		"negative partition":    {Partition: -1, Key: "routed by key"},
		"nil value, empty aux":  {Key: "k", Value: nil, Aux: []byte{}},
		"empty value, nil aux":  {Key: "k", Value: []byte{}, Aux: nil},
		"binary strings":        {Service: "\x00\xff", Name: "日本語", Key: "\xc1\xc0"},
		"value needs bin32":     {Value: bytes.Repeat([]byte("abc"), 100000)},
		"every field, max":      fillMax(&op.Request{}),
		"every field, distinct": fillDistinct(&op.Request{}),
	}
}

func testResponses() map[string]*op.Response {
	rs := map[string]*op.Response{
		"zero":      {},
		"all":       {Code: op.CodeWrongOwner, Msg: "partition 3 moved", Found: true, Value: []byte("v"), Num: -77, TableVersion: 12},
		"max":       {Code: math.MaxUint16, Msg: strings.Repeat("m", 70000), Found: true, Value: bytes.Repeat([]byte{9}, 70000), Num: math.MaxInt64, TableVersion: math.MaxUint64},
		"min":       {Num: math.MinInt64},
		"nil value": {Found: true, Value: nil},
		"empty":     {Found: true, Value: []byte{}},
	}
	// Every defined code and a few unknown ones.
	for c := op.OK; c < 40; c++ {
		rs[fmt.Sprint("code ", uint16(c))] = &op.Response{Code: c, Msg: c.String()}
	}
	rs["every field, max"] = fillMax(&op.Response{})
	rs["every field, distinct"] = fillDistinct(&op.Response{})
	return rs
}

// fillMax sets every field of the struct p points to to its largest value
// (long strings and values for strings and byte slices), so a field added to
// op.Request or op.Response but not to the codec fails the round trips.
func fillMax[T any](p *T) *T {
	v := reflect.ValueOf(p).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(strings.Repeat(string(rune('a'+i)), 300+i))
		case reflect.Slice:
			f.SetBytes(bytes.Repeat([]byte{byte(i)}, 300+i))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
			f.SetInt(1<<(f.Type().Bits()-1) - 1)
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
			f.SetUint(1<<f.Type().Bits() - 1)
		default:
			panic(fmt.Sprintf("fillMax: field %s of kind %v", v.Type().Field(i).Name, f.Kind()))
		}
	}
	return p
}

// fillDistinct gives every field a different small value, so that two
// fields swapped by the codec fail the round trips.
func fillDistinct[T any](p *T) *T {
	v := reflect.ValueOf(p).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(fmt.Sprint("field-", i))
		case reflect.Slice:
			f.SetBytes([]byte{byte(i), byte(i)})
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
			f.SetInt(int64(i + 1))
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
			f.SetUint(uint64(i + 1))
		default:
			panic(fmt.Sprintf("fillDistinct: field %s of kind %v", v.Type().Field(i).Name, f.Kind()))
		}
	}
	return p
}

// Positions of fields in the msgpack arrays: part of the wire protocol.
// Later protocol versions append fields after these.
const (
	fService = iota
	fName
	fOp
	fPartition
	fKey
	fValue
	fAux
	fNum
	fTableVersion
	fTimeout
)

const (
	fCode = iota
	fMsg
	fFound
	fRespValue
	fRespNum
	fRespTableVersion
)

// splitArray returns the raw encoding of each element of the msgpack array
// b.
func splitArray(tb testing.TB, b []byte) [][]byte {
	tb.Helper()
	var raws []msgpack.RawMessage
	if err := msgpack.Unmarshal(b, &raws); err != nil {
		tb.Fatal(err)
	}
	out := make([][]byte, len(raws))
	for i, r := range raws {
		out[i] = r
	}
	return out
}

// joinArray writes an array header claiming n elements followed by elems
// (n may differ from len(elems), to make lying headers).
func joinArray(n int, elems ...[]byte) []byte {
	var buf bytes.Buffer
	_ = msgpack.NewEncoder(&buf).EncodeArrayLen(n)
	for _, e := range elems {
		buf.Write(e)
	}
	return buf.Bytes()
}

// enc1 encodes one value.
func enc1(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// baseRequestFields returns the raw fields of a valid request.
func baseRequestFields(tb testing.TB) [][]byte {
	return splitArray(tb, encodeRequest(tb, &op.Request{Service: "svc", Name: "name", Op: 1, Partition: 2, Key: "key", Value: []byte("v"), Aux: []byte("a"), Num: 3, TableVersion: 4, Timeout: 5}))
}

func baseResponseFields(tb testing.TB) [][]byte {
	return splitArray(tb, encodeResponse(tb, &op.Response{Code: 3, Msg: "msg", Found: true, Value: []byte("v"), Num: -4, TableVersion: 5}))
}

// withField re-encodes fields with field i replaced by the encoding of v.
func withField(tb testing.TB, fields [][]byte, i int, v any) []byte {
	tb.Helper()
	f := slices.Clone(fields)
	f[i] = enc1(tb, v)
	return joinArray(len(f), f...)
}

// claimPrefix is an array header for a full request (or response) followed
// by its first i fields, so that a test can append a lying field i.
func claimPrefix(fields [][]byte, i int) []byte {
	return joinArray(len(fields), fields[:i]...)
}

// bin32Claim is a bin32 header claiming 4 GiB - 1 with no data after it.
var bin32Claim = []byte{0xc6, 0xff, 0xff, 0xff, 0xff}

func encodeRequest(tb testing.TB, r *op.Request) []byte { return requestBody(tb, r) }

func encodeResponse(tb testing.TB, r *op.Response) []byte { return responseBody(tb, r) }

func TestRequestRoundTrip(t *testing.T) {
	for name, want := range testRequests() {
		t.Run(name, func(t *testing.T) {
			b := encodeRequest(t, want)
			got, err := wire.DecodeRequestBytes(b)
			if err != nil {
				t.Fatal(err)
			}
			// reflect.DeepEqual tells nil from empty slices: both survive.
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			var streamed op.Request
			if err := wire.DecodeRequest(opaqueDecoder(b), &streamed); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&streamed, want) {
				t.Fatalf("decoded from a stream: got %+v\nwant %+v", &streamed, want)
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for name, want := range testResponses() {
		t.Run(name, func(t *testing.T) {
			b := encodeResponse(t, want)
			got, err := wire.DecodeResponseBytes(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			var streamed op.Response
			if err := wire.DecodeResponse(opaqueDecoder(b), &streamed); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&streamed, want) {
				t.Fatalf("decoded from a stream: got %+v\nwant %+v", &streamed, want)
			}
			if err := got.Err(); (err == nil) != (want.Code == op.OK) || (err != nil && !errors.Is(err, want.Code.Sentinel())) {
				t.Fatalf("Err() = %v for code %d", err, want.Code)
			}
		})
	}
}

// TestDecodeStream: decoding into a used struct overwrites every field, and
// consecutive bodies on one stream decode in turn, consuming exactly their
// bytes.
func TestDecodeStream(t *testing.T) {
	reqs := []*op.Request{testRequests()["all fields"], testRequests()["zero"], testRequests()["max"]}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	for _, r := range reqs {
		if err := wire.EncodeRequest(enc, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.EncodeString("end"); err != nil {
		t.Fatal(err)
	}
	for _, dec := range []*msgpack.Decoder{msgpack.NewDecoder(bytes.NewReader(buf.Bytes())), opaqueDecoder(buf.Bytes())} {
		var got op.Request
		for _, want := range reqs {
			if err := wire.DecodeRequest(dec, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&got, want) {
				t.Fatalf("got %+v\nwant %+v", &got, want)
			}
		}
		if s, err := dec.DecodeString(); err != nil || s != "end" {
			t.Fatalf("after the requests: %q, %v", s, err)
		}
	}
}

// withExtraFields re-encodes the msgpack array body with extra elements
// appended and the array header written by header.
func withExtraFields(t *testing.T, body []byte, header func(n int) []byte, extra ...any) []byte {
	t.Helper()
	elems := splitArray(t, body)
	var buf bytes.Buffer
	buf.Write(header(len(elems) + len(extra)))
	for _, e := range elems {
		buf.Write(e)
	}
	enc := msgpack.NewEncoder(&buf)
	for _, v := range extra {
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

var extraFields = []any{
	"a later field",
	map[string]any{"nested": []any{1, "two", []byte{3}, map[string]any{"x": nil}}},
	[]byte{1, 2, 3},
	3.5,
	nil,
	true,
	time.Unix(1700000000, 0), // a msgpack extension
}

// TestForwardCompatible: a later protocol version may append fields to
// requests and responses; this version skips them, whatever they hold.
func TestForwardCompatible(t *testing.T) {
	headers := map[string]func(n int) []byte{
		"fixarray": func(n int) []byte { return []byte{0x90 | byte(n)} },
		"array16":  func(n int) []byte { return []byte{0xdc, 0, byte(n)} },
		"array32":  func(n int) []byte { return []byte{0xdd, 0, 0, 0, byte(n)} },
	}
	// extras returns the extra fields that fit after n fields.
	extras := func(hname string, n int) []any {
		if hname == "fixarray" { // a fixarray holds at most 15 elements
			return extraFields[:min(len(extraFields), max(0, 15-n))]
		}
		return extraFields
	}
	for hname, header := range headers {
		t.Run("request/"+hname, func(t *testing.T) {
			want := testRequests()["every field, distinct"]
			body := encodeRequest(t, want)
			extra := extras(hname, len(splitArray(t, body)))
			if len(extra) == 0 {
				t.Skip("no room for extra fields in a fixarray")
			}
			b := append(withExtraFields(t, body, header, extra...), 0xa3, 'e', 'n', 'd')
			for _, dec := range []*msgpack.Decoder{msgpack.NewDecoder(bytes.NewReader(b)), opaqueDecoder(b)} {
				var got op.Request
				if err := wire.DecodeRequest(dec, &got); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(&got, want) {
					t.Fatalf("got %+v\nwant %+v", &got, want)
				}
				// Exactly the request was consumed.
				if s, err := dec.DecodeString(); err != nil || s != "end" {
					t.Fatalf("after the request: %q, %v", s, err)
				}
			}
		})
		t.Run("response/"+hname, func(t *testing.T) {
			want := testResponses()["every field, distinct"]
			body := encodeResponse(t, want)
			extra := extras(hname, len(splitArray(t, body)))
			b := append(withExtraFields(t, body, header, extra...), 0xa3, 'e', 'n', 'd')
			for _, dec := range []*msgpack.Decoder{msgpack.NewDecoder(bytes.NewReader(b)), opaqueDecoder(b)} {
				var got op.Response
				if err := wire.DecodeResponse(dec, &got); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(&got, want) {
					t.Fatalf("got %+v\nwant %+v", &got, want)
				}
				if s, err := dec.DecodeString(); err != nil || s != "end" {
					t.Fatalf("after the response: %q, %v", s, err)
				}
			}
		})
	}
}

func checkMalformed(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: decoded without error", what)
		return
	}
	if !errors.Is(err, wire.ErrMalformed) || !errors.Is(err, op.ErrBadRequest) {
		t.Errorf("%s: error %q wraps neither ErrMalformed nor op.ErrBadRequest", what, err)
	}
	if op.CodeOf(err) != op.CodeBadRequest {
		t.Errorf("%s: CodeOf = %v", what, op.CodeOf(err))
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	base := baseRequestFields(t)
	n := len(base)
	if n < fTimeout+1 {
		t.Fatalf("a request encodes %d fields, want at least %d", n, fTimeout+1)
	}
	if _, err := wire.DecodeRequestBytes(joinArray(n, base...)); err != nil {
		t.Fatalf("the base request does not decode: %v", err)
	}
	all := bytes.Join(base, nil)
	cases := map[string][]byte{
		"empty":              {},
		"nil":                {0xc0},
		"reserved code":      {0xc1},
		"not an array":       {0xa3, 'a', 'b', 'c'},
		"a map":              {0x80},
		"empty array":        {0x90},
		"one field short":    joinArray(n-1, base[:n-1]...),
		"ten fields short":   joinArray(max(0, n-10), base[:max(0, n-10)]...),
		"missing extra":      joinArray(n+1, base...),
		"service not string": withField(t, base, fService, 1),
		"name not string":    withField(t, base, fName, []any{}),
		"op 256":             withField(t, base, fOp, 256),
		"op negative":        withField(t, base, fOp, -1),
		"op string":          withField(t, base, fOp, "1"),
		"partition too big":  withField(t, base, fPartition, int64(math.MaxInt32)+1),
		"partition too low":  withField(t, base, fPartition, int64(math.MinInt32)-1),
		"partition float":    withField(t, base, fPartition, 1.5),
		"key not string":     withField(t, base, fKey, true),
		"value not bytes":    withField(t, base, fValue, 7),
		"aux not bytes":      withField(t, base, fAux, map[string]int{}),
		"num not int":        withField(t, base, fNum, "3"),
		"table version":      withField(t, base, fTableVersion, "4"),
		"negative timeout":   withField(t, base, fTimeout, -1),
		"timeout not int":    withField(t, base, fTimeout, []byte{5}),
		// Length claims beyond the input.
		"value claims 4 GiB": append(claimPrefix(base, fValue), bin32Claim...),
		"aux claims 64 KiB":  append(claimPrefix(base, fAux), 0xc5, 0xff, 0xff, 0x01),
		"key claims 4 GiB":   append(claimPrefix(base, fKey), 0xdb, 0xff, 0xff, 0xff, 0xff),
		"extra claims 4 GiB": append(joinArray(n+1, base...), bin32Claim...),
		"4G extra fields":    append(append([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, all...), 0x01),
	}
	// Every field of a later version (past Timeout) is an unsigned integer
	// today; a string there is refused.
	for i := fTimeout + 1; i < n; i++ {
		cases[fmt.Sprint("field ", i, " not int")] = withField(t, base, i, "x")
	}
	for name, b := range cases {
		_, err := wire.DecodeRequestBytes(b)
		checkMalformed(t, name, err)
		var r op.Request
		checkMalformed(t, name+" (stream)", wire.DecodeRequest(opaqueDecoder(b), &r))
	}
}

func TestDecodeResponseErrors(t *testing.T) {
	base := baseResponseFields(t)
	n := len(base)
	if _, err := wire.DecodeResponseBytes(joinArray(n, base...)); err != nil {
		t.Fatalf("the base response does not decode: %v", err)
	}
	cases := map[string][]byte{
		"empty":              {},
		"nil":                {0xc0},
		"not an array":       {0x01},
		"one field short":    joinArray(n-1, base[:n-1]...),
		"missing extra":      joinArray(n+1, base...),
		"code too big":       withField(t, base, fCode, math.MaxUint16+1),
		"code negative":      withField(t, base, fCode, -1),
		"code string":        withField(t, base, fCode, "ok"),
		"msg not string":     withField(t, base, fMsg, 2),
		"found not bool":     withField(t, base, fFound, 1),
		"value not bytes":    withField(t, base, fRespValue, false),
		"num not int":        withField(t, base, fRespNum, "x"),
		"table version":      withField(t, base, fRespTableVersion, []byte{}),
		"value claims 4 GiB": append(claimPrefix(base, fRespValue), bin32Claim...),
	}
	for name, b := range cases {
		_, err := wire.DecodeResponseBytes(b)
		checkMalformed(t, name, err)
		var r op.Response
		checkMalformed(t, name+" (stream)", wire.DecodeResponse(opaqueDecoder(b), &r))
	}
}

// TestTruncated cuts valid encodings at every length: each prefix fails to
// decode with ErrMalformed and nothing panics.
func TestTruncated(t *testing.T) {
	req := &op.Request{
		Service: "map", Name: "users", Op: 200, Partition: -70000, Key: strings.Repeat("k", 40),
		Value: bytes.Repeat([]byte("v"), 300), Aux: []byte{}, Num: math.MinInt64, TableVersion: math.MaxUint64, Timeout: time.Hour,
	}
	b := encodeRequest(t, req)
	for i := range len(b) {
		_, err := wire.DecodeRequestBytes(b[:i])
		checkMalformed(t, "request prefix", err)
		var r op.Request
		checkMalformed(t, "request prefix (stream)", wire.DecodeRequest(opaqueDecoder(b[:i]), &r))
	}

	resp := &op.Response{Code: op.CodeMigrating, Msg: strings.Repeat("m", 40), Found: true, Value: bytes.Repeat([]byte("v"), 300), Num: math.MaxInt64, TableVersion: 1 << 40}
	b = encodeResponse(t, resp)
	for i := range len(b) {
		_, err := wire.DecodeResponseBytes(b[:i])
		checkMalformed(t, "response prefix", err)
		var r op.Response
		checkMalformed(t, "response prefix (stream)", wire.DecodeResponse(opaqueDecoder(b[:i]), &r))
	}

	h := wire.Hello{Magic: wire.Magic, Proto: 1, Role: wire.RoleMember, Name: "m1", Cluster: "c", Partitions: 271, Err: "refused"}
	b = helloBody(t, h)
	for i := range len(b) {
		_, err := wire.DecodeHello(b[:i])
		checkMalformed(t, "hello prefix", err)
	}
}

// TestDecodeBoundsAllocation: a length prefix that lies about the size of a
// value must not make the decoder allocate what it claims.
func TestDecodeBoundsAllocation(t *testing.T) {
	req, resp := baseRequestFields(t), baseResponseFields(t)
	cases := map[string][]byte{
		"request value": append(claimPrefix(req, fValue), 0xc6, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02),
		"request aux":   append(claimPrefix(req, fAux), 0xc6, 0xff, 0xff, 0xff, 0xff, 0x01),
		"response":      append(claimPrefix(resp, fRespValue), 0xc6, 0xff, 0xff, 0xff, 0xff, 0x01),
	}
	const limit = 8 << 20
	for name, b := range cases {
		decode := func(dec *msgpack.Decoder) error {
			if strings.HasPrefix(name, "request") {
				var r op.Request
				return wire.DecodeRequest(dec, &r)
			}
			var r op.Response
			return wire.DecodeResponse(dec, &r)
		}
		var err error
		if n := allocatedDuring(func() { err = decode(msgpack.NewDecoder(bytes.NewReader(b))) }); n > limit {
			t.Errorf("%s: decoding %d bytes allocated %d MiB", name, len(b), n>>20)
		}
		checkMalformed(t, name, err)
		if n := allocatedDuring(func() { err = decode(opaqueDecoder(b)) }); n > limit {
			t.Errorf("%s (stream): decoding %d bytes allocated %d MiB", name, len(b), n>>20)
		}
		checkMalformed(t, name+" (stream)", err)
	}
}

// TestDecodeLargeValueFromStream covers values larger than one read chunk
// when the decoder cannot see the input's size.
func TestDecodeLargeValueFromStream(t *testing.T) {
	for _, n := range []int{1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 200000, 1 << 20, 3<<20 + 17} {
		val := make([]byte, n)
		for i := range val {
			val[i] = byte(i * 7)
		}
		want := &op.Request{Key: "k", Value: val, Aux: val[:n/2]}
		var got op.Request
		if err := wire.DecodeRequest(opaqueDecoder(encodeRequest(t, want)), &got); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Fatalf("%d bytes: value differs", n)
		}
	}
}

func TestHello(t *testing.T) {
	for _, h := range []wire.Hello{
		{Magic: wire.Magic},
		{Magic: wire.Magic, Proto: wire.ProtocolVersion, Role: wire.RoleClient, Name: "c1", Cluster: "dev", Partitions: 271},
		{Magic: wire.Magic, Proto: -1, Role: wire.RoleMember, Name: "日本", Cluster: strings.Repeat("x", 1000), Partitions: math.MaxInt32, Err: "cluster mismatch"},
	} {
		got, err := wire.DecodeHello(helloBody(t, h))
		if err != nil {
			t.Fatal(err)
		}
		if got != h {
			t.Fatalf("got %+v, want %+v", got, h)
		}
	}

	// Unknown fields from a later version are ignored.
	b, err := msgpack.Marshal(map[string]any{"magic": wire.Magic, "proto": 1, "name": "n", "later": []int{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := wire.DecodeHello(b); err != nil || h.Name != "n" || h.Proto != 1 {
		t.Fatalf("hello with an unknown field: %+v, %v", h, err)
	}

	for name, b := range map[string][]byte{
		"empty":      {},
		"garbage":    []byte("GET / HTTP/1.1\r\n"),
		"no magic":   helloBody(t, wire.Hello{Proto: 1, Name: "x"}),
		"bad magic":  helloBody(t, wire.Hello{Magic: "SHOAL", Proto: 1}),
		"wrong type": func() []byte { b, _ := msgpack.Marshal(map[string]any{"magic": wire.Magic, "proto": "one"}); return b }(),
	} {
		h, err := wire.DecodeHello(b)
		checkMalformed(t, name, err)
		if h != (wire.Hello{}) {
			t.Errorf("%s: failed decode returned %+v", name, h)
		}
	}
}

func TestLimitsCheck(t *testing.T) {
	if got := (wire.Limits{}).WithDefaults(); got != wire.DefaultLimits() {
		t.Fatalf("zero limits with defaults: %+v", got)
	}
	if got := (wire.Limits{MaxKeySize: 1, MaxValueSize: -1}).WithDefaults(); got.MaxKeySize != 1 || got.MaxValueSize != wire.DefaultMaxValueSize || got.MaxFrameSize != wire.DefaultMaxFrameSize {
		t.Fatalf("partial limits with defaults: %+v", got)
	}
	d := wire.DefaultLimits()
	if d.MaxFrameSize < 2*d.MaxValueSize+d.MaxKeySize {
		t.Fatalf("default frame size %d cannot carry a full value, aux and key", d.MaxFrameSize)
	}

	l := wire.Limits{MaxKeySize: 4, MaxValueSize: 8}
	for _, tc := range []struct {
		req  op.Request
		fail string
	}{
		{op.Request{Key: "1234", Value: make([]byte, 8), Aux: make([]byte, 8)}, ""},
		{op.Request{Key: "12345"}, "key is 5 bytes, limit is 4"},
		{op.Request{Value: make([]byte, 9)}, "value is 9 bytes, limit is 8"},
		{op.Request{Aux: make([]byte, 9)}, "aux value is 9 bytes, limit is 8"},
	} {
		err := l.Check(&tc.req)
		if tc.fail == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.req, err)
			}
			continue
		}
		if !errors.Is(err, op.ErrTooLarge) || !strings.Contains(err.Error(), tc.fail) {
			t.Errorf("Check: %v, want op.ErrTooLarge with %q", err, tc.fail)
		}
	}
	// Zero limits mean the defaults.
	if err := (wire.Limits{}).Check(&op.Request{Key: strings.Repeat("k", wire.DefaultMaxKeySize)}); err != nil {
		t.Errorf("default key limit: %v", err)
	}
	if err := (wire.Limits{}).Check(&op.Request{Key: strings.Repeat("k", wire.DefaultMaxKeySize+1)}); !errors.Is(err, op.ErrTooLarge) {
		t.Errorf("over the default key limit: %v", err)
	}
}

// Requests from peers that predate call identities (10 fields) still
// decode, with no identity.
func TestDecodeRequestWithoutIdentity(t *testing.T) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	for _, err := range []error{enc.EncodeArrayLen(10), enc.EncodeString("map"), enc.EncodeString("m"), enc.EncodeUint(2),
		enc.EncodeInt(-1), enc.EncodeString("k"), enc.EncodeBytes(nil), enc.EncodeBytes(nil), enc.EncodeInt(0), enc.EncodeUint(7), enc.EncodeInt(0)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	r, err := wire.DecodeRequestBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if r.Key != "k" || r.TableVersion != 7 || r.Origin != 0 || r.CallSeq != 0 {
		t.Fatalf("decoded %+v", r)
	}
}
