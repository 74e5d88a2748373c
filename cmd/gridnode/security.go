package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/shoalgrid/shoal/grid"
)

// securitySettings are what the security flags' files hold.
type securitySettings struct {
	keys               [][]byte
	tokens             []grid.Token
	serverTLS, peerTLS *tls.Config
	// warnings are logged at start (secret files other users may read).
	warnings []string
}

// loadSecurity reads the files named by the security flags.
func (o options) loadSecurity() (securitySettings, error) {
	var s securitySettings
	if o.clusterKeyFile != "" {
		keys, err := readClusterKeys(o.clusterKeyFile)
		if err != nil {
			return s, usageError{err}
		}
		s.keys = keys
		s.warnings = append(s.warnings, privateFileWarning(o.clusterKeyFile)...)
	}
	if o.tokensFile != "" {
		if len(s.keys) == 0 {
			return s, usagef("--tokens-file needs --cluster-key-file: without a cluster key any client can claim to be a member and skip the tokens")
		}
		tokens, err := readTokens(o.tokensFile)
		if err != nil {
			return s, usageError{err}
		}
		s.tokens = tokens
		s.warnings = append(s.warnings, privateFileWarning(o.tokensFile)...)
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return s, usagef("--tls-cert and --tls-key go together")
	}
	if o.tlsCA != "" && o.tlsCert == "" {
		return s, usagef("--tls-ca needs --tls-cert and --tls-key")
	}
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return s, usagef("--tls-cert/--tls-key: %v", err)
		}
		s.serverTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		s.peerTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if o.tlsCA != "" {
			pool, err := readCAs(o.tlsCA)
			if err != nil {
				return s, usagef("--tls-ca: %v", err)
			}
			s.serverTLS.ClientAuth = tls.RequireAndVerifyClientCert
			s.serverTLS.ClientCAs = pool
			s.peerTLS.RootCAs = pool
		}
	}
	return s, nil
}

// privateFileWarning warns when a secret file is readable by other users.
func privateFileWarning(path string) []string {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	return []string{fmt.Sprintf("%s holds secrets but has mode %v: make it readable by this user only (chmod 600)", path, fi.Mode().Perm())}
}

// readClusterKeys reads base64 keys, one per line ('#' starts a comment).
func readClusterKeys(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--cluster-key-file: %v", err)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			if k, err = base64.RawStdEncoding.DecodeString(line); err != nil {
				return nil, fmt.Errorf("--cluster-key-file %s:%d: not base64 (create a key with: head -c 32 /dev/urandom | base64)", path, i+1)
			}
		}
		if len(k) < grid.MinClusterKeySize {
			return nil, fmt.Errorf("--cluster-key-file %s:%d: key of %d bytes, want at least %d random bytes (head -c 32 /dev/urandom | base64)", path, i+1, len(k), grid.MinClusterKeySize)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("--cluster-key-file %s: no key", path)
	}
	return keys, nil
}

// tokensFileDoc is the tokens file:
//
//	tokens:
//	  - name: app
//	    token: "a long random secret"
//	    roles:
//	      "orders.*": write
//	      "*": read
type tokensFileDoc struct {
	Tokens []struct {
		Name  string            `yaml:"name"`
		Token string            `yaml:"token"`
		Roles map[string]string `yaml:"roles"`
	} `yaml:"tokens"`
}

func readTokens(path string) ([]grid.Token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--tokens-file: %v", err)
	}
	var doc tokensFileDoc
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("--tokens-file %s: %v", path, err)
	}
	if len(doc.Tokens) == 0 {
		return nil, fmt.Errorf("--tokens-file %s: no tokens (want a \"tokens\" list of name, token, roles)", path)
	}
	var out []grid.Token
	for i, t := range doc.Tokens {
		name := t.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		if len(t.Token) < 16 {
			return nil, fmt.Errorf("--tokens-file %s: token %s: want a secret of at least 16 characters", path, name)
		}
		if len(t.Roles) == 0 {
			return nil, fmt.Errorf("--tokens-file %s: token %s: no roles (want roles: {\"pattern\": read|write|admin})", path, name)
		}
		gt := grid.Token{Name: t.Name, Secret: t.Token}
		for pattern, role := range t.Roles {
			r, err := grid.ParseRole(role)
			if err != nil {
				return nil, fmt.Errorf("--tokens-file %s: token %s: %v", path, name, err)
			}
			gt.Grants = append(gt.Grants, grid.Grant{Pattern: pattern, Role: r})
		}
		out = append(out, gt)
	}
	return out, nil
}

func readCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return pool, nil
}

// checkExposure is the protected mode: without a cluster key and without
// TLS, anyone who reaches the data or gossip port can act as a member, so
// gridnode listens only on loopback addresses unless --insecure is given.
func (o options) checkExposure() error {
	if o.insecure || len(o.sec.keys) > 0 || o.sec.serverTLS != nil {
		return nil
	}
	for _, a := range []struct{ flag, addr string }{{"--addr", o.addr}, {"--bind", o.bind}} {
		host, _, err := net.SplitHostPort(a.addr)
		if err != nil || isLoopback(host) {
			continue
		}
		return usagef("refusing to listen on %s (%s) without --cluster-key-file or TLS: anyone who can reach it could join the cluster as a member and read, change or drop every entry. "+
			"Set --cluster-key-file (and --tokens-file, --tls-cert; see docs/security.md), listen on 127.0.0.1, or pass --insecure on a network you trust", a.addr, a.flag)
	}
	return nil
}

// isLoopback reports whether host names only loopback addresses.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}
