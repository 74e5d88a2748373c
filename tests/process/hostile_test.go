//go:build process

package process_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/internal/proctest"
	shoalmaps "github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

func rawFrame(kind wire.Kind, id uint64, body []byte) []byte {
	b := make([]byte, 13, 13+len(body))
	binary.BigEndian.PutUint32(b, uint32(9+len(body)))
	b[4] = byte(kind)
	binary.BigEndian.PutUint64(b[5:], id)
	return append(b, body...)
}

func readRawFrame(t *testing.T, r io.Reader) (wire.Kind, []byte) {
	t.Helper()
	var hdr [13]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:4])-9)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	return wire.Kind(hdr[4]), body
}

// TestDeepFrameDoesNotKillGridnode sends the frame that killed real members
// (a valid request re-tagged with a 13th field nested 5,000,000 arrays deep)
// to a gridnode process: it answers BadRequest, stays up and keeps serving.
func TestDeepFrameDoesNotKillGridnode(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	p := proctest.Member(t, "n1", nil)
	waitStable(t, ctx, p)

	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", p.DataAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	dl, _ := ctx.Deadline()
	_ = nc.SetDeadline(dl)
	hello, _ := msgpack.Marshal(&wire.Hello{Magic: wire.Magic, Proto: wire.ProtocolVersion, Role: wire.RoleClient, Name: "attacker", Cluster: "shoal"})
	if _, err := nc.Write(rawFrame(wire.KindHello, 0, hello)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	if kind, _ := readRawFrame(t, br); kind != wire.KindHelloAck {
		t.Fatalf("handshake: frame kind %d", kind)
	}
	var buf bytes.Buffer
	if err := wire.EncodeRequest(msgpack.NewEncoder(&buf), &op.Request{Service: shoalmaps.ServiceName, Name: "m", Op: shoalmaps.OpGet, Partition: -1, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	body := buf.Bytes()
	body[0]++ // 13 fields
	body = append(append(body, bytes.Repeat([]byte{0x91}, 5_000_000)...), 0xc0)
	if _, err := nc.Write(rawFrame(wire.KindRequest, 1, body)); err != nil {
		t.Fatal(err)
	}
	kind, rb := readRawFrame(t, br)
	resp, err := wire.DecodeResponseBytes(rb)
	if kind != wire.KindResponse || err != nil || resp.Code != op.CodeBadRequest || !strings.Contains(resp.Msg, "nested too deeply") {
		t.Fatalf("deep frame: kind %d, %+v, %v", kind, resp, err)
	}
	if p.Exited() {
		t.Fatal("gridnode exited")
	}
	c, err := client.Dial(ctx, client.Config{Addrs: []string{p.DataAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := shoalmaps.New(c, "after")
	if err := m.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("put after the deep frame: %v", err)
	}
	if v, ok, err := m.Get(ctx, "k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("get after the deep frame: %q %v %v", v, ok, err)
	}
}

// TestConnectionLimitFlags: a gridnode started with the connection-limit
// flags closes a flood of idle connections (refused over the per-address
// limit, the rest at the idle or handshake timeout), reports them in its
// metrics, and keeps serving.
func TestConnectionLimitFlags(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	p := proctest.Member(t, "n1", nil, "--max-conns-per-addr", "50", "--idle-timeout", "500ms", "--handshake-timeout", "500ms")
	waitStable(t, ctx, p)
	var socks []net.Conn
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	var d net.Dialer
	for range 300 {
		s, err := d.DialContext(ctx, "tcp", p.DataAddr)
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, s)
	}
	for _, s := range socks {
		_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, s); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("a flood connection is still open after 10 s")
			}
		}
	}
	ms, err := p.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ms["shoal_conns_refused_total"] < 1 {
		t.Errorf("shoal_conns_refused_total = %v, want > 0", ms["shoal_conns_refused_total"])
	}
	c, err := client.Dial(ctx, client.Config{Addrs: []string{p.DataAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := shoalmaps.New(c, "after").Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("put after the flood: %v", err)
	}
}
