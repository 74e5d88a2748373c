// Package wire is Shoal's network protocol: length-prefixed frames carrying
// msgpack-encoded requests and responses, a version handshake, and Conn, a
// multiplexed connection on which many requests are in flight at once and
// writes from many goroutines are coalesced into few syscalls.
//
// Frame layout (big endian):
//
//	uint32 length   bytes that follow this field (kind + id + body)
//	uint8  kind     Hello, HelloAck, Request or Response
//	uint64 id       request id; a response carries its request's id
//	body            msgpack
//
// Requests and responses are msgpack arrays with hand-written codecs (no
// reflection on the hot path); unknown trailing array elements are skipped so
// later protocol versions can add fields.
package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
	"github.com/shoalgrid/shoal/op"
)

// Kind is a frame's type.
type Kind uint8

// Frame kinds.
const (
	KindHello Kind = iota + 1
	KindHelloAck
	KindRequest
	KindResponse
	// KindAuth carries the member-authentication proofs that follow the
	// hello exchange when a cluster key is configured (see auth.go).
	KindAuth
	// KindPing is a header-only frame a Conn sends when it has written
	// nothing for Options.KeepAlive, so that the peer's idle timeout does
	// not close a connection that is merely quiet. Receivers ignore it.
	KindPing
	// KindCancel tells the peer that the caller of request id gave up
	// (its context ended before the response). No body. Sent only to
	// peers with CapCancel.
	KindCancel
	// KindEvent carries an event (body: msgpack bin payload) of
	// subscription id, from a member to a subscriber. Sent only to peers
	// with CapEvents.
	KindEvent
	// KindRecord (9) carries a backup record from a partition's owner to
	// one of its backups: an opaque body (the backup package's record
	// codec) answered by a KindResponse of the same id. It has its own
	// size limit (Limits.MaxRecordFrame): a record wraps a whole client
	// request, so a request at the value limit still replicates as a
	// record. Sent only between members, and only to peers with
	// CapRecords.
	KindRecord
)

// KindRequests carries several requests in one frame (body: a msgpack
// array of requests); the frame's id is the first request's id, the
// others follow in order (id+1, id+2, ...). The receiver handles each as
// if it had arrived in its own KindRequest frame and answers each with its
// own KindResponse frame. Sent only to peers with CapRequests. (Kind 9 is
// reserved for backup records.)
const KindRequests Kind = 10

// Capability bits, exchanged in Hello.Caps: a peer sends a frame kind
// added after protocol version 1 only if the other side announced the
// matching bit, so old and new peers keep talking (old peers announce
// none and get none).
const (
	// CapCancel: the peer understands KindCancel.
	CapCancel uint64 = 1 << iota
	// CapEvents: the peer understands KindEvent.
	CapEvents
	// CapSkipUnknown: the peer skips frames of kinds it does not know
	// instead of closing the connection.
	CapSkipUnknown
	// CapRecords: the peer takes backup records as KindRecord frames.
	CapRecords
)

// CapRequests: the peer understands KindRequests.
const CapRequests uint64 = 1 << 4

// Caps are the capabilities this build announces.
const Caps = CapCancel | CapEvents | CapSkipUnknown | CapRecords | CapRequests

const headerSize = 4 + 1 + 8

// ProtocolVersion is the version this build speaks. Peers with another
// version are refused at the handshake.
const ProtocolVersion = 1

// Magic opens every handshake so that a stray connection (an HTTP client, a
// port scanner) is refused with a clear error.
const Magic = "shoal"

const (
	requestFields = 12
	// requestFieldsV1 is the field count of requests before call
	// identities; such requests decode with a zero Origin (no identity).
	requestFieldsV1 = 10
	responseFields  = 6
)

// ErrMalformed is wrapped by decoding errors: the input is not a valid frame
// or body. It also wraps op.ErrBadRequest so callers can match either.
var ErrMalformed = fmt.Errorf("%w: malformed frame", op.ErrBadRequest)

func malformed(what string, err error) error {
	if err == nil {
		return fmt.Errorf("%w: %s", ErrMalformed, what)
	}
	return fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
}

// EncodeRequest writes r as a msgpack array.
func EncodeRequest(enc *msgpack.Encoder, r *op.Request) error {
	return errors.Join(
		enc.EncodeArrayLen(requestFields),
		enc.EncodeString(r.Service),
		enc.EncodeString(r.Name),
		enc.EncodeUint(uint64(r.Op)),
		enc.EncodeInt(int64(r.Partition)),
		enc.EncodeString(r.Key),
		enc.EncodeBytes(r.Value),
		enc.EncodeBytes(r.Aux),
		enc.EncodeInt(r.Num),
		enc.EncodeUint(r.TableVersion),
		enc.EncodeInt(int64(r.Timeout)),
		enc.EncodeUint(r.Origin),
		enc.EncodeUint(r.CallSeq),
	)
}

// DecodeRequest reads a request written by EncodeRequest into r. Errors wrap
// ErrMalformed.
//
// For untrusted input use DecodeRequestBytes (a Conn does the equivalent):
// msgpack's decoder allocates, and keeps in the decoder, up to the length a
// string header claims, which DecodeRequest alone cannot check.
func DecodeRequest(dec *msgpack.Decoder, r *op.Request) error {
	return decodeRequest(dec, r, nil)
}

// DecodeRequestNames is DecodeRequest with names interned in names (which
// may be nil).
func DecodeRequestNames(dec *msgpack.Decoder, r *op.Request, names *Names) error {
	return decodeRequest(dec, r, names)
}

// Names interns the service and structure names of decoded requests: it
// returns one string for each distinct short name it has seen, so that
// decoding the many requests of one structure does not allocate its name
// again and again. The zero value is ready; a Names is not safe for
// concurrent use. It holds at most 1024 names of up to 64 bytes.
type Names struct {
	strs    map[string]string
	scratch []byte
}

// Bounds that keep a peer sending ever new names from growing the table.
const (
	internMaxLen   = 64
	internMaxCount = 1024
)

// decodeString decodes a msgpack string, interned when in is not nil.
func (in *Names) decodeString(dec *msgpack.Decoder) (string, error) {
	if in == nil {
		return dec.DecodeString()
	}
	n, err := dec.DecodeBytesLen()
	if err != nil || n <= 0 {
		return "", err
	}
	if n > internMaxLen {
		b := make([]byte, n)
		if err := dec.ReadFull(b); err != nil {
			return "", err
		}
		return string(b), nil
	}
	if in.scratch == nil {
		in.scratch = make([]byte, internMaxLen)
	}
	b := in.scratch[:n]
	if err := dec.ReadFull(b); err != nil {
		return "", err
	}
	if s, ok := in.strs[string(b)]; ok {
		return s, nil
	}
	s := string(b)
	if in.strs == nil {
		in.strs = make(map[string]string)
	}
	if len(in.strs) < internMaxCount {
		in.strs[s] = s
	}
	return s, nil
}

func decodeRequest(dec *msgpack.Decoder, r *op.Request, in *Names) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return malformed("request", err)
	}
	if n < requestFieldsV1 {
		return malformed(fmt.Sprintf("request has %d fields, want %d", n, requestFields), nil)
	}
	var u uint64
	var i int64
	if r.Service, err = in.decodeString(dec); err != nil {
		return malformed("request service", err)
	}
	if r.Name, err = in.decodeString(dec); err != nil {
		return malformed("request name", err)
	}
	if u, err = dec.DecodeUint64(); err != nil || u > math.MaxUint8 {
		return malformed("request op", err)
	}
	r.Op = uint8(u)
	if i, err = dec.DecodeInt64(); err != nil || i < math.MinInt32 || i > math.MaxInt32 {
		return malformed("request partition", err)
	}
	r.Partition = int32(i)
	if r.Key, err = dec.DecodeString(); err != nil {
		return malformed("request key", err)
	}
	if r.Value, err = decodeBytes(dec); err != nil {
		return malformed("request value", err)
	}
	if r.Aux, err = decodeBytes(dec); err != nil {
		return malformed("request aux", err)
	}
	if r.Num, err = dec.DecodeInt64(); err != nil {
		return malformed("request num", err)
	}
	if r.TableVersion, err = dec.DecodeUint64(); err != nil {
		return malformed("request table version", err)
	}
	if i, err = dec.DecodeInt64(); err != nil || i < 0 {
		return malformed("request timeout", err)
	}
	r.Timeout = time.Duration(i)
	r.Origin, r.CallSeq = 0, 0
	if n == requestFieldsV1 {
		return nil
	}
	if n < requestFields {
		return malformed(fmt.Sprintf("request has %d fields, want %d", n, requestFields), nil)
	}
	if r.Origin, err = dec.DecodeUint64(); err != nil {
		return malformed("request origin", err)
	}
	if r.CallSeq, err = dec.DecodeUint64(); err != nil {
		return malformed("request call sequence", err)
	}
	return skipExtra(dec, n-requestFields)
}

// EncodeResponse writes r as a msgpack array.
func EncodeResponse(enc *msgpack.Encoder, r *op.Response) error {
	return errors.Join(
		enc.EncodeArrayLen(responseFields),
		enc.EncodeUint(uint64(r.Code)),
		enc.EncodeString(r.Msg),
		enc.EncodeBool(r.Found),
		enc.EncodeBytes(r.Value),
		enc.EncodeInt(r.Num),
		enc.EncodeUint(r.TableVersion),
	)
}

// DecodeResponse reads a response written by EncodeResponse into r. Errors
// wrap ErrMalformed. Like DecodeRequest, it trusts the lengths in its input:
// use DecodeResponseBytes for untrusted input.
func DecodeResponse(dec *msgpack.Decoder, r *op.Response) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return malformed("response", err)
	}
	if n < responseFields {
		return malformed(fmt.Sprintf("response has %d fields, want %d", n, responseFields), nil)
	}
	var u uint64
	if u, err = dec.DecodeUint64(); err != nil || u > math.MaxUint16 {
		return malformed("response code", err)
	}
	r.Code = op.Code(u)
	if r.Msg, err = dec.DecodeString(); err != nil {
		return malformed("response message", err)
	}
	if r.Found, err = dec.DecodeBool(); err != nil {
		return malformed("response found", err)
	}
	if r.Value, err = decodeBytes(dec); err != nil {
		return malformed("response value", err)
	}
	if r.Num, err = dec.DecodeInt64(); err != nil {
		return malformed("response num", err)
	}
	if r.TableVersion, err = dec.DecodeUint64(); err != nil {
		return malformed("response table version", err)
	}
	return skipExtra(dec, n-responseFields)
}

// bytesChunk is the most decodeBytes allocates ahead of the data it has read
// when it cannot see how much input is left.
const bytesChunk = 64 << 10

// decodeBytes is dec.DecodeBytes without its allocation hazard: msgpack
// allocates the length a bin/str header claims before reading anything, so a
// 6-byte body claiming 4 GiB made the receiver allocate 4 GiB. Here a claim
// longer than the input left is refused when the decoder reads from an
// in-memory reader (the case for every frame a Conn reads), and otherwise the
// slice grows with the data actually read. Like DecodeBytes it returns nil for
// msgpack nil and a non-nil empty slice for an empty bin.
func decodeBytes(dec *msgpack.Decoder) ([]byte, error) {
	n, err := dec.DecodeBytesLen()
	switch {
	case err != nil:
		return nil, err
	case n < 0:
		return nil, nil
	case n == 0:
		return []byte{}, nil
	}
	left, known := mpsafe.Remaining(dec)
	if known && n > left {
		return nil, fmt.Errorf("%d bytes claimed, %d left: %w", n, left, io.ErrUnexpectedEOF)
	}
	if known || n <= bytesChunk {
		b := make([]byte, n)
		if err := dec.ReadFull(b); err != nil {
			return nil, err
		}
		return b, nil
	}
	b := make([]byte, 0, bytesChunk)
	for len(b) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(n-len(b), len(b)))
		}
		end := min(n, cap(b))
		if err := dec.ReadFull(b[len(b):end]); err != nil {
			return nil, err
		}
		b = b[:end]
	}
	return b, nil
}

// MaxDepth is the deepest nesting of msgpack arrays and maps a peer may
// send in a frame body (requests and responses nest one level; the rest is
// room for fields of later versions). Deeper input is refused before it is
// decoded.
const MaxDepth = mpsafe.MaxDepth

// checkBody checks that b starts with one complete msgpack value in which
// every length and element count fits in the bytes that follow it, nested
// at most MaxDepth levels.
//
// msgpack's decoder allocates what a string, bin or ext header claims before
// reading the data, and keeps the buffer it grew in the decoder even when the
// read fails. A pooled decoder (msgpack.Unmarshal) or a connection's
// long-lived one thus grew by about a quarter per lying header: a few dozen
// 8-byte frames made it allocate gigabytes and copy them on every frame. Once
// a body has passed checkBody, decoding it allocates at most about its own
// size. checkBody walks without recursion, so deep nesting costs no stack,
// and the depth bound keeps msgpack's recursive decoding of what passed
// (a Hello's unknown fields) shallow.
func checkBody(b []byte) error {
	_, err := mpsafe.ValueEnd(b, MaxDepth)
	return err
}

// decodeRequestBody decodes body, which dec reads from, after checkBody.
func decodeRequestBody(dec *msgpack.Decoder, body []byte, r *op.Request, in *Names) error {
	if err := checkBody(body); err != nil {
		return malformed("request", err)
	}
	return decodeRequest(dec, r, in)
}

// decodeResponseBody decodes body, which dec reads from, after checkBody.
func decodeResponseBody(dec *msgpack.Decoder, body []byte, r *op.Response) error {
	if err := checkBody(body); err != nil {
		return malformed("response", err)
	}
	return DecodeResponse(dec, r)
}

// skipExtra skips the n unknown trailing fields of a request or response
// (fields of a later protocol version) without recursion: msgpack's
// Decoder.Skip recursed once per level of nesting, and one frame holding a
// trailing field nested five million arrays deep overflowed the stack.
func skipExtra(dec *msgpack.Decoder, n int) error {
	for ; n > 0; n-- {
		// The field is inside the body's array: one level is used.
		if err := mpsafe.Skip(dec, MaxDepth-1); err != nil {
			return malformed("trailing field", err)
		}
	}
	return nil
}

// Role says what kind of peer opened a connection.
type Role uint8

// Roles.
const (
	RoleClient Role = iota + 1
	RoleMember
)

// Hello is the handshake each side sends first. Members refuse peers with a
// different protocol version, cluster name or partition count.
type Hello struct {
	Magic      string `msgpack:"magic"`
	Proto      int    `msgpack:"proto"`
	Role       Role   `msgpack:"role"`
	Name       string `msgpack:"name"`
	Cluster    string `msgpack:"cluster"`
	Partitions int    `msgpack:"partitions"`
	// Err is set in a HelloAck that refuses the connection.
	Err string `msgpack:"err,omitempty"`
	// Code is the op.Code of a refusal (op.ErrUnauthenticated for a bad
	// token or cluster key); zero reads as op.ErrBadRequest.
	Code uint16 `msgpack:"code,omitempty"`
	// Token is a client's credential (see Options.Authorize). It is a
	// bearer secret: use TLS where the network is not trusted.
	Token string `msgpack:"token,omitempty"`
	// Nonce, Keys and Proof carry member authentication (see auth.go): a
	// dialing member lists the ids of the cluster keys it holds (8 bytes
	// each, concatenated), the acceptor answers with the id it chose and
	// its proof. They are binary strings so that Hello stays comparable.
	Nonce string `msgpack:"nonce,omitempty"`
	Keys  string `msgpack:"keys,omitempty"`
	Proof string `msgpack:"proof,omitempty"`
	// Caps are the sender's capability bits (Cap...); zero for peers
	// older than the field.
	Caps uint64 `msgpack:"caps,omitempty"`
}

// DecodeHello decodes a handshake body. Errors wrap ErrMalformed.
func DecodeHello(b []byte) (Hello, error) {
	var h Hello
	if err := checkBody(b); err != nil {
		return Hello{}, malformed("hello", err)
	}
	if err := msgpack.Unmarshal(b, &h); err != nil {
		return Hello{}, malformed("hello", err)
	}
	if h.Magic != Magic {
		return Hello{}, malformed("not a shoal peer (bad magic)", nil)
	}
	return h, nil
}

// DecodeRequestBytes decodes a request body held in b.
func DecodeRequestBytes(b []byte) (*op.Request, error) {
	var r op.Request
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	if err := decodeRequestBody(dec, b, &r, nil); err != nil {
		return nil, err
	}
	return &r, nil
}

// MaxRequestsPerFrame bounds the requests of one KindRequests frame.
const MaxRequestsPerFrame = 4096

// EncodeRequests writes rs as a msgpack array of requests (the body of a
// KindRequests frame).
func EncodeRequests(enc *msgpack.Encoder, rs []*op.Request) error {
	if err := enc.EncodeArrayLen(len(rs)); err != nil {
		return err
	}
	for _, r := range rs {
		if err := EncodeRequest(enc, r); err != nil {
			return err
		}
	}
	return nil
}

// decodeRequestsBody decodes the body of a KindRequests frame, which dec
// reads from, calling fn with each request in order. A malformed body
// ends the decoding with an error: requests at..n-1 were not handed to fn
// (n is 0 when even the count is unreadable). The body is walked by
// checkBody first, so the count is bounded by the body's size.
func decodeRequestsBody(dec *msgpack.Decoder, body []byte, in *Names, fn func(i int, r *op.Request)) (n, at int, err error) {
	if err := checkBody(body); err != nil {
		return 0, 0, malformed("requests", err)
	}
	if n, err = dec.DecodeArrayLen(); err != nil {
		return 0, 0, malformed("requests", err)
	}
	if n < 1 || n > MaxRequestsPerFrame {
		return 0, 0, malformed(fmt.Sprintf("%d requests in one frame, want 1..%d", n, MaxRequestsPerFrame), nil)
	}
	for i := range n {
		r := new(op.Request)
		if err := decodeRequest(dec, r, in); err != nil {
			return n, i, fmt.Errorf("request %d of %d: %w", i, n, err)
		}
		fn(i, r)
	}
	return n, n, nil
}

// DecodeRequestsBytes decodes the body of a KindRequests frame held in b.
func DecodeRequestsBytes(b []byte) ([]*op.Request, error) {
	var out []*op.Request
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	if _, _, err := decodeRequestsBody(dec, b, nil, func(_ int, r *op.Request) { out = append(out, r) }); err != nil {
		return nil, err
	}
	return out, nil
}

// DecodeResponseBytes decodes a response body held in b.
func DecodeResponseBytes(b []byte) (*op.Response, error) {
	var r op.Response
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	if err := decodeResponseBody(dec, b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
