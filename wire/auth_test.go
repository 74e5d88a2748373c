package wire_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/shoalgrid/shoal/internal/testcerts"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

var (
	keyA = wire.DeriveKey(bytes.Repeat([]byte{1}, 32), "handshake")
	keyB = wire.DeriveKey(bytes.Repeat([]byte{2}, 32), "handshake")
)

func memberDial(ctx context.Context, addr string, keys ...[]byte) (*wire.Conn, error) {
	h := clientHello
	h.Role, h.Name = wire.RoleMember, "dialer"
	return wire.Dial(ctx, nil, addr, h, wire.Options{MemberKeys: keys, Handler: echo})
}

// Members prove the cluster key to each other; a peer that claims the
// member role without the key, or with another one, is refused with
// op.ErrUnauthenticated on both sides.
func TestMemberKeyHandshake(t *testing.T) {
	for _, tc := range []struct {
		name         string
		server, dial [][]byte
		clientRole   bool
		ok, proven   bool
	}{
		{name: "same key", server: [][]byte{keyA}, dial: [][]byte{keyA}, ok: true, proven: true},
		{name: "rotation: shared second key", server: [][]byte{keyB, keyA}, dial: [][]byte{keyA}, ok: true, proven: true},
		{name: "no key at the dialer", server: [][]byte{keyA}},
		{name: "different key", server: [][]byte{keyA}, dial: [][]byte{keyB}},
		{name: "no key at the acceptor", dial: [][]byte{keyA}},
		{name: "no keys anywhere (insecure)", ok: true},
		{name: "client role needs no key", server: [][]byte{keyA}, clientRole: true, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := startServer(t, nil, wire.Options{Handler: echo, MemberKeys: tc.server})
			var c *wire.Conn
			var err error
			if tc.clientRole {
				c, err = wire.Dial(ctx, nil, s.addr, clientHello, wire.Options{})
			} else {
				c, err = memberDial(ctx, s.addr, tc.dial...)
			}
			r := s.next(ctx, t)
			if !tc.ok {
				if err == nil {
					c.Close()
					t.Fatal("Dial succeeded")
				}
				if !errors.Is(err, op.ErrUnauthenticated) {
					t.Errorf("Dial error %v does not wrap op.ErrUnauthenticated", err)
				}
				if r.err == nil && len(tc.server) > 0 {
					t.Errorf("Accept accepted the peer")
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer c.Close()
			if r.err != nil {
				t.Fatalf("Accept: %v", r.err)
			}
			if r.conn.PeerProven() != tc.proven || c.PeerProven() != tc.proven {
				t.Errorf("proven: acceptor %v dialer %v, want %v", r.conn.PeerProven(), c.PeerProven(), tc.proven)
			}
			if _, err := c.Call(ctx, &op.Request{Service: "s", Key: "k"}); err != nil {
				t.Errorf("call after the handshake: %v", err)
			}
		})
	}
}

// recorder forwards one connection to addr and keeps what the dialer sent.
type recorder struct {
	ln   net.Listener
	mu   sync.Mutex
	sent bytes.Buffer
	wg   sync.WaitGroup
}

func record(t *testing.T, addr string) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		in, err := ln.Accept()
		if err != nil {
			return
		}
		defer in.Close()
		out, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		defer out.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(in, out)
			in.Close()
		}()
		buf := make([]byte, 4096)
		for {
			n, err := in.Read(buf)
			if n > 0 {
				r.mu.Lock()
				r.sent.Write(buf[:n])
				r.mu.Unlock()
				if _, werr := out.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		out.Close()
		<-done
	}()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

// A recorded member handshake replayed on a new connection (same hello,
// same proof) is refused: the proof is bound to the acceptor's fresh nonce.
func TestMemberHandshakeReplayRefused(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, nil, wire.Options{Handler: echo, MemberKeys: [][]byte{keyA}})
	rec := record(t, s.addr)
	c, err := memberDial(ctx, rec.ln.Addr().String(), keyA)
	if err != nil {
		t.Fatalf("legitimate dial through the recorder: %v", err)
	}
	if r := s.next(ctx, t); r.err != nil {
		t.Fatalf("Accept: %v", r.err)
	}
	c.Close()
	rec.mu.Lock()
	sent := bytes.NewReader(bytes.Clone(rec.sent.Bytes()))
	rec.mu.Unlock()
	_, _, hello, err := readRawFrame(sent)
	if err != nil {
		t.Fatal(err)
	}
	kind, _, auth, err := readRawFrame(sent)
	if err != nil || kind != wire.KindAuth {
		t.Fatalf("recorded second frame: kind %d err %v", kind, err)
	}

	// The replay, by someone without the key.
	nc := rawDial(ctx, t, s.addr)
	if _, err := nc.Write(frame(wire.KindHello, 0, hello)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	if kind, _, _, err := readRawFrame(br); err != nil || kind != wire.KindHelloAck {
		t.Fatalf("hello ack: kind %d err %v", kind, err)
	}
	if _, err := nc.Write(frame(wire.KindAuth, 0, auth)); err != nil {
		t.Fatal(err)
	}
	kind, _, body, err := readRawFrame(br)
	if err != nil || kind != wire.KindAuth {
		t.Fatalf("verdict: kind %d err %v", kind, err)
	}
	verdict, err := wire.DecodeHello(body)
	if err != nil || verdict.Err == "" || op.Code(verdict.Code) != op.CodeUnauthenticated {
		t.Fatalf("replayed proof accepted: verdict %+v err %v", verdict, err)
	}
	r := s.next(ctx, t)
	if r.err == nil || !errors.Is(r.err, op.ErrUnauthenticated) {
		t.Fatalf("Accept: %v, want op.ErrUnauthenticated", r.err)
	}
	expectClosed(t, nc)
}

// Authorize's error reaches the dialer with its code; its value is the
// connection's principal.
func TestAuthorize(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, nil, wire.Options{Handler: echo, Authorize: func(p wire.Hello) (any, error) {
		if p.Token != "good" {
			return nil, op.Error(op.CodeUnauthenticated, "bad token")
		}
		return "alice", nil
	}})
	h := clientHello
	h.Token = "bad"
	if c, err := wire.Dial(ctx, nil, s.addr, h, wire.Options{}); err == nil || !errors.Is(err, op.ErrUnauthenticated) || !strings.Contains(err.Error(), "bad token") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("Dial with a bad token: %v", err)
	}
	s.next(ctx, t)
	h.Token = "good"
	c := dialHello(ctx, t, s.addr, h, wire.Options{})
	if p := s.nextConn(ctx, t).Principal(); p != "alice" {
		t.Fatalf("principal %v", p)
	}
	_ = c
}

func dialHello(ctx context.Context, tb testing.TB, addr string, h wire.Hello, opts wire.Options) *wire.Conn {
	tb.Helper()
	c, err := wire.Dial(ctx, nil, addr, h, opts)
	if err != nil {
		tb.Fatalf("Dial: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func tlsConfigs(t *testing.T) (ca *testcerts.CA, server, client *tls.Config) {
	t.Helper()
	ca, err := testcerts.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ca.Issue("server")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sp.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return ca, &tls.Config{Certificates: []tls.Certificate{sc}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
}

// Calls work over TLS, with and without client certificates; a client that
// does not trust the server's CA, or that has no certificate when one is
// required, is refused.
func TestTLS(t *testing.T) {
	ca, server, client := tlsConfigs(t)
	t.Run("server auth", func(t *testing.T) {
		ctx := testCtx(t)
		c, _ := pair(ctx, t, echo, wire.Options{TLS: server}, wire.Options{TLS: client})
		resp, err := c.Call(ctx, &op.Request{Service: "s", Key: "k", Value: bytes.Repeat([]byte("v"), 1<<20)})
		if err != nil || len(resp.Value) != 1<<20 {
			t.Fatalf("call over TLS: %v", err)
		}
	})
	t.Run("untrusted server", func(t *testing.T) {
		ctx := testCtx(t)
		s := startServer(t, nil, wire.Options{Handler: echo, TLS: server})
		c, err := wire.Dial(ctx, nil, s.addr, clientHello, wire.Options{TLS: &tls.Config{MinVersion: tls.VersionTLS12}})
		if err == nil {
			c.Close()
			t.Fatal("Dial trusted an unknown CA")
		}
		if !errors.Is(err, op.ErrUnauthenticated) {
			t.Errorf("error %v does not wrap op.ErrUnauthenticated", err)
		}
		s.next(ctx, t)
	})
	t.Run("plain client to a TLS server", func(t *testing.T) {
		ctx := testCtx(t)
		s := startServer(t, nil, wire.Options{Handler: echo, TLS: server})
		c, err := wire.Dial(ctx, nil, s.addr, clientHello, wire.Options{})
		if err == nil {
			c.Close()
			t.Fatal("plain Dial succeeded against TLS")
		}
		if r := s.next(ctx, t); r.err == nil {
			t.Fatal("Accept accepted a plain peer")
		}
	})
	t.Run("mutual", func(t *testing.T) {
		ctx := testCtx(t)
		mserver := server.Clone()
		mserver.ClientAuth = tls.RequireAndVerifyClientCert
		mserver.ClientCAs = ca.Pool()
		s := startServer(t, nil, wire.Options{Handler: echo, TLS: mserver})
		c, err := wire.Dial(ctx, nil, s.addr, clientHello, wire.Options{TLS: client})
		if err == nil {
			// TLS 1.3 reports a missing client certificate on the first
			// read, after the handshake.
			_, err = c.Call(ctx, &op.Request{Service: "s"})
			c.Close()
		}
		if err == nil {
			t.Fatal("a client without a certificate was served")
		}
		s.next(ctx, t)
		cp, err := ca.Issue("client")
		if err != nil {
			t.Fatal(err)
		}
		cc, err := cp.TLS()
		if err != nil {
			t.Fatal(err)
		}
		withCert := client.Clone()
		withCert.Certificates = []tls.Certificate{cc}
		c = dialHello(ctx, t, s.addr, clientHello, wire.Options{TLS: withCert})
		if _, err := c.Call(ctx, &op.Request{Service: "s"}); err != nil {
			t.Fatalf("call with a client certificate: %v", err)
		}
		if r := s.next(ctx, t); r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
	})
}
