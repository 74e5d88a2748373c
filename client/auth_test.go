package client_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/internal/testcerts"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/maps/mapstest"
	"github.com/shoalgrid/shoal/op"
)

const (
	readerToken = "reader-token-0123456789"
	writerToken = "writer-token-0123456789"
	adminToken  = "admin-token-0123456789"
)

func tokenCluster(t *testing.T) *gridtest.Cluster {
	return gridtest.New(t, 2, gridtest.WithConfig(func(c *grid.Config) {
		c.ClusterKeys = [][]byte{bytes.Repeat([]byte("k"), 32)}
		c.Tokens = []grid.Token{
			{Name: "reader", Secret: readerToken, Grants: []grid.Grant{{Pattern: "*", Role: grid.RoleRead}}},
			{Name: "writer", Secret: writerToken, Grants: []grid.Grant{{Pattern: "*", Role: grid.RoleRead}, {Pattern: "orders.*", Role: grid.RoleWrite}}},
			{Name: "admin", Secret: adminToken, Grants: []grid.Grant{{Pattern: "*", Role: grid.RoleAdmin}}},
		}
	}))
}

// Without a valid token a client gets op.ErrUnauthenticated at Dial and no
// data; with one, each operation needs its role on the structure.
func TestTokensAndRoles(t *testing.T) {
	cl := tokenCluster(t)
	addrs := []string{cl.Member(0).Addr()}
	for _, tok := range []string{"", "not-a-token-at-all-0000"} {
		c, err := client.Dial(ctxT(t, 5*time.Second), client.Config{Addrs: addrs, Token: tok})
		if err == nil {
			c.Close()
			t.Fatalf("token %q: Dial succeeded", tok)
		}
		if !errors.Is(err, op.ErrUnauthenticated) {
			t.Errorf("token %q: Dial error %v, want op.ErrUnauthenticated", tok, err)
		}
	}
	ctx := ctxT(t, 20*time.Second)
	reader := dial(t, client.Config{Addrs: addrs, Token: readerToken})
	writer := dial(t, client.Config{Addrs: addrs, Token: writerToken})
	admin := dial(t, client.Config{Addrs: addrs, Token: adminToken})

	if err := maps.New(admin, "orders.eu").Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("admin put: %v", err)
	}
	if v, ok, err := maps.New(reader, "orders.eu").Get(ctx, "k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("reader get: %q %v %v", v, ok, err)
	}
	if err := maps.New(reader, "orders.eu").Put(ctx, "k", []byte("x")); !errors.Is(err, op.ErrForbidden) {
		t.Errorf("reader put: %v, want op.ErrForbidden", err)
	}
	if err := maps.New(writer, "orders.eu").Put(ctx, "k2", []byte("w")); err != nil {
		t.Errorf("writer put on orders.*: %v", err)
	}
	if err := maps.New(writer, "users").Put(ctx, "k", []byte("w")); !errors.Is(err, op.ErrForbidden) {
		t.Errorf("writer put outside orders.*: %v, want op.ErrForbidden", err)
	}
	if err := maps.New(writer, "orders.eu").Clear(ctx); !errors.Is(err, op.ErrForbidden) {
		t.Errorf("writer clear: %v, want op.ErrForbidden", err)
	}
	if n, err := maps.New(reader, "orders.eu").Size(ctx); err != nil || n != 2 {
		t.Fatalf("size after refused clear: %d %v", n, err)
	}
	if err := maps.New(admin, "orders.eu").Clear(ctx); err != nil {
		t.Errorf("admin clear: %v", err)
	}
	// Listening registers on every partition (a replicated write of
	// bookkeeping), yet a reader may listen: it sees the writer's change.
	got := make(chan maps.Event, 4)
	stop, err := maps.New(reader, "orders.eu").Listen(ctx, func(e maps.Event) { got <- e })
	if err != nil {
		t.Fatalf("reader listen: %v", err)
	}
	defer stop()
	if err := maps.New(writer, "orders.eu").Put(ctx, "k3", []byte("w")); err != nil {
		t.Fatalf("writer put: %v", err)
	}
	select {
	case e := <-got:
		if e.Key != "k3" || e.Kind != maps.EventAdded {
			t.Errorf("reader's listener got %+v, want k3 added", e)
		}
	case <-ctx.Done():
		t.Fatal("reader's listener saw nothing")
	}
	// Removing a member needs the admin role on "*"; the admin is then
	// refused only because the member is alive.
	alive := cl.Member(1).Name()
	if _, err := writer.RemoveMember(ctx, alive, false); !errors.Is(err, op.ErrForbidden) {
		t.Errorf("writer removing a member: %v, want op.ErrForbidden", err)
	}
	if _, err := admin.RemoveMember(ctx, alive, false); !errors.Is(err, op.ErrBadRequest) {
		t.Errorf("admin removing a live member: %v, want op.ErrBadRequest", err)
	}
}

// tlsCluster starts members that serve TLS and require client
// certificates from the test CA; it returns the client TLS config.
func tlsCluster(t *testing.T, n int) (*gridtest.Cluster, *tls.Config) {
	t.Helper()
	ca, err := testcerts.NewCA("shoal-test-ca")
	if err != nil {
		t.Fatal(err)
	}
	cert := func(name string) tls.Certificate {
		p, err := ca.Issue(name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := p.TLS()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	member := cert("member")
	cl := gridtest.New(t, n, gridtest.WithConfig(func(c *grid.Config) {
		c.ClusterKeys = [][]byte{bytes.Repeat([]byte("k"), 32)}
		c.TLS = &tls.Config{Certificates: []tls.Certificate{member}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
		c.PeerTLS = &tls.Config{Certificates: []tls.Certificate{member}, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	}))
	return cl, &tls.Config{Certificates: []tls.Certificate{cert("client")}, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
}

func TestMapConformanceClientTLS(t *testing.T) {
	mapstest.Run(t, func(t *testing.T) []op.Invoker {
		cl, tc := tlsCluster(t, 3)
		var invs []op.Invoker
		for _, m := range cl.Live() {
			invs = append(invs, dial(t, client.Config{Addrs: []string{m.Addr()}, TLS: tc}))
		}
		return invs
	})
}

// A client that does not present a certificate from the members' CA is
// refused.
func TestTLSRefusesUntrustedClient(t *testing.T) {
	cl, tc := tlsCluster(t, 1)
	addrs := []string{cl.Member(0).Addr()}
	noCert := tc.Clone()
	noCert.Certificates = nil
	for name, cfg := range map[string]*tls.Config{"no client certificate": noCert, "no TLS": nil, "untrusted CA": {MinVersion: tls.VersionTLS12}} {
		c, err := client.Dial(ctxT(t, time.Second), client.Config{Addrs: addrs, TLS: cfg})
		if err == nil {
			c.Close()
			t.Errorf("%s: Dial succeeded", name)
			continue
		}
		if cfg != nil && !errors.Is(err, op.ErrUnauthenticated) {
			t.Errorf("%s: %v, want op.ErrUnauthenticated", name, err)
		}
	}
}
