//go:build process

package process_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/internal/proctest"
	"github.com/shoalgrid/shoal/internal/testcerts"
	shoalmaps "github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// keyFile writes a fresh cluster key file into dir.
func keyFile(t *testing.T, dir, name string) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A member started with another cluster key, or none, is refused by the
// cluster's gossip and exits 1 with a message naming the key; the cluster
// never lists it.
func TestClusterKeyMismatchExits(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	dir := t.TempDir()
	n1 := proctest.Member(t, "n1", nil, "--cluster-key-file", keyFile(t, dir, "a.key"))
	if err := n1.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"other-key", []string{"--cluster-key-file", keyFile(t, dir, "b.key")}},
		{"no-key", nil},
	} {
		p := proctest.Member(t, tc.name, []*proctest.Proc{n1}, tc.args...)
		code, err := p.Wait(ctx)
		if err != nil || code != 1 {
			t.Fatalf("%s: exit code %d (%v), want 1; output:\n%s", tc.name, code, err, p.Output())
		}
		if out := p.Output(); !strings.Contains(out, "different cluster key") {
			t.Errorf("%s: output lacks a clear reason:\n%s", tc.name, out)
		}
	}
	st, err := n1.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 1 {
		t.Fatalf("the cluster lists %d members, want 1", len(st.Members))
	}
}

// buildGridctl compiles gridctl into dir.
func buildGridctl(t *testing.T, ctx context.Context, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "gridctl")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "github.com/shoalgrid/shoal/cmd/gridctl")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build gridctl: %v\n%s", err, out)
	}
	return path
}

// gridctl runs the binary with env added to the environment (SHOAL_TOKEN
// removed unless env sets it) and returns its exit code and output.
func gridctl(t *testing.T, ctx context.Context, bin string, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHOAL_TOKEN=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	}
	t.Fatalf("gridctl %q: %v", args, err)
	return -1, ""
}

// Tokens and roles with real processes: gridnode with --tokens-file,
// gridctl with --token-file or SHOAL_TOKEN.
func TestTokensWithGridctl(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	dir := t.TempDir()
	bin := buildGridctl(t, ctx, dir)
	tokens := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte(`tokens:
  - name: reader
    token: reader-secret-0123456789
    roles: {"*": read}
  - name: writer
    token: writer-secret-0123456789
    roles: {"orders.*": write, "*": read}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	writerFile := filepath.Join(dir, "writer.token")
	if err := os.WriteFile(writerFile, []byte("writer-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n1 := proctest.Member(t, "n1", nil, "--cluster-key-file", keyFile(t, dir, "k"), "--tokens-file", tokens)
	if err := n1.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	addr := "--addr=" + n1.DataAddr
	reader := []string{"SHOAL_TOKEN=reader-secret-0123456789"}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"no token", nil, []string{addr, "map", "put", "orders.eu", "k", "v"}, 1, "unauthenticated"},
		{"wrong token", []string{"SHOAL_TOKEN=not-the-right-token-000"}, []string{addr, "map", "get", "orders.eu", "k"}, 1, "unknown client token"},
		{"reader cannot write", reader, []string{addr, "map", "put", "orders.eu", "k", "v"}, 1, "forbidden"},
		{"writer writes", nil, []string{addr, "--token-file", writerFile, "map", "put", "orders.eu", "k", "v"}, 0, ""},
		{"writer cannot write elsewhere", nil, []string{addr, "--token-file", writerFile, "map", "put", "users", "k", "v"}, 1, "forbidden"},
		{"reader reads", reader, []string{addr, "map", "get", "orders.eu", "k"}, 0, "v"},
		{"reader status", reader, []string{addr, "status"}, 0, "n1"},
	} {
		code, out := gridctl(t, ctx, bin, tc.env, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, output %q; want exit %d and %q", tc.name, code, out, tc.code, tc.want)
		}
	}
}

// kill -9 of a member of a cluster running mutual TLS and a cluster key:
// every acknowledged write survives, read back over TLS.
func TestKillNineTLS(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	dir := t.TempDir()
	ca, err := testcerts.NewCA("shoal-process-ca")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.Write(dir, "member")
	if err != nil {
		t.Fatal(err)
	}
	procs := startCluster(t, ctx, 3, "--cluster-key-file", keyFile(t, dir, "k"),
		"--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA)
	waitStable(t, ctx, procs...)
	cp, err := ca.Issue("client")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := cp.TLS()
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	c, err := client.Dial(ctx, client.Config{Addrs: []string{procs[0].DataAddr}, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := shoalmaps.New(c, "tls")
	for i := range 300 {
		if err := m.Put(ctx, fmt.Sprint(i), []byte(fmt.Sprint("v", i))); err != nil {
			t.Fatal(err)
		}
	}
	// A client without a certificate gets nothing.
	if nc, err := client.Dial(ctxT(t, 2*time.Second), client.Config{Addrs: []string{procs[0].DataAddr}, TLS: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}); err == nil {
		nc.Close()
		t.Fatal("a client without a certificate connected")
	} else if !errors.Is(err, op.ErrUnauthenticated) {
		t.Errorf("client without a certificate: %v, want op.ErrUnauthenticated", err)
	}
	gone := procs[2]
	if err := gone.Kill(); err != nil {
		t.Fatal(err)
	}
	if code, err := gone.Wait(ctx); err != nil || code != -1 {
		t.Fatalf("after SIGKILL: exit code %d, %v", code, err)
	}
	waitStable(t, ctx, without(procs, gone)...)
	for i := range 300 {
		v, ok, err := m.Get(ctx, fmt.Sprint(i))
		if err != nil || !ok || string(v) != fmt.Sprint("v", i) {
			t.Fatalf("key %d after kill -9: %q %v %v", i, v, ok, err)
		}
	}
}
