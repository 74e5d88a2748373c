package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testcerts"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestSecurityFlags(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	keys := writeFile(t, "key", "# rotation: new key first\n"+k1+"\n\n"+k2+"\n")
	o := mustParse(t, nil, env("SHOAL_CLUSTER_KEY_FILE", keys))
	c := o.gridConfig(nil)
	if len(c.ClusterKeys) != 2 || base64.StdEncoding.EncodeToString(c.ClusterKeys[0]) != k1 {
		t.Fatalf("cluster keys from SHOAL_CLUSTER_KEY_FILE: %d keys", len(c.ClusterKeys))
	}
	tokens := writeFile(t, "tokens.yaml", `tokens:
  - name: app
    token: "app-secret-0123456789"
    roles:
      "orders.*": write
      "*": read
  - name: ops
    token: "ops-secret-0123456789"
    roles: {"*": admin}
`)
	cfg := writeConfig(t, "cluster-key-file: "+keys+"\ntokens-file: "+tokens+"\n")
	c = mustParse(t, []string{"--config", cfg}, env()).gridConfig(nil)
	if len(c.Tokens) != 2 || c.Tokens[0].Name != "app" || len(c.Tokens[0].Grants) != 2 || c.Tokens[1].Grants[0] != (grid.Grant{Pattern: "*", Role: grid.RoleAdmin}) {
		t.Fatalf("tokens from the config file: %+v", c.Tokens)
	}

	ca, err := testcerts.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.Write(t.TempDir(), "member")
	if err != nil {
		t.Fatal(err)
	}
	c = mustParse(t, []string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA}, env()).gridConfig(nil)
	if c.TLS == nil || c.TLS.ClientAuth != tls.RequireAndVerifyClientCert || c.PeerTLS == nil || c.PeerTLS.RootCAs == nil || len(c.PeerTLS.Certificates) != 1 {
		t.Fatalf("TLS config: %+v", c.TLS)
	}

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"short key":               {[]string{"--cluster-key-file", writeFile(t, "k", base64.StdEncoding.EncodeToString([]byte("short")))}, "want at least 32 random bytes"},
		"not base64":              {[]string{"--cluster-key-file", writeFile(t, "k", "!!!")}, "not base64"},
		"empty key file":          {[]string{"--cluster-key-file", writeFile(t, "k", "# nothing\n")}, "no key"},
		"tokens without a key":    {[]string{"--tokens-file", tokens}, "needs --cluster-key-file"},
		"bad role":                {[]string{"--cluster-key-file", keys, "--tokens-file", writeFile(t, "t.yaml", "tokens: [{name: a, token: aaaaaaaaaaaaaaaaaaaa, roles: {'*': root}}]")}, "want read, write or admin"},
		"short token":             {[]string{"--cluster-key-file", keys, "--tokens-file", writeFile(t, "t.yaml", "tokens: [{name: a, token: abc, roles: {'*': read}}]")}, "at least 16"},
		"unknown tokens key":      {[]string{"--cluster-key-file", keys, "--tokens-file", writeFile(t, "t.yaml", "tokens: [{name: a, secret: abc}]")}, "secret"},
		"cert without key":        {[]string{"--tls-cert", f.Cert}, "go together"},
		"ca without cert":         {[]string{"--tls-ca", f.CA}, "needs --tls-cert"},
		"every interface, no key": {[]string{"--addr", "0.0.0.0:5701"}, "refusing to listen on 0.0.0.0:5701 (--addr) without --cluster-key-file or TLS"},
		"gossip on a public IP":   {[]string{"--bind", "10.1.2.3:7946"}, "refusing to listen on 10.1.2.3:7946 (--bind)"},
		"env every interface":     {nil, "refusing to listen"},
	} {
		t.Run(name, func(t *testing.T) {
			getenv := env()
			if name == "env every interface" {
				getenv = env("SHOAL_ADDR", "0.0.0.0:5701", "SHOAL_BIND", "0.0.0.0:7946")
			}
			var stdout, stderr bytes.Buffer
			if code := gridnode(tc.args, getenv, &stdout, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.want)
			}
		})
	}

	// Protected mode is lifted by a key, TLS or --insecure.
	for _, args := range [][]string{
		{"--addr", "0.0.0.0:5701", "--bind", "0.0.0.0:7946", "--insecure"},
		{"--addr", "0.0.0.0:5701", "--bind", "0.0.0.0:7946", "--cluster-key-file", keys},
		{"--addr", "0.0.0.0:5701", "--tls-cert", f.Cert, "--tls-key", f.Key},
		{"--addr", "localhost:5701", "--bind", "[::1]:7946"},
	} {
		if _, err := parseOptions(args, env()); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
}

func TestSecretFileModeWarning(t *testing.T) {
	p := writeFile(t, "key", newKey(t)+"\n")
	if w := privateFileWarning(p); w != nil {
		t.Fatalf("0600 file: %v", w)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	o := mustParse(t, []string{"--cluster-key-file", p}, env())
	if len(o.sec.warnings) != 1 || !strings.Contains(o.sec.warnings[0], "chmod 600") {
		t.Fatalf("warnings %q", o.sec.warnings)
	}
}
