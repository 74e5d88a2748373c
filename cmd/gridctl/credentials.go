package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
)

// tokenEnv is the environment variable holding the client token when
// --token-file is not given.
const tokenEnv = "SHOAL_TOKEN"

// credentials returns the client token (--token-file, else $SHOAL_TOKEN)
// and the TLS configuration (nil without --tls-ca and --tls-cert).
func (g *globals) credentials() (string, *tls.Config, error) {
	token := os.Getenv(tokenEnv)
	if g.tokenFile != "" {
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return "", nil, usagef("", "--token-file: %v", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return "", nil, usagef("", "--token-file %s is empty", g.tokenFile)
		}
	}
	if (g.tlsCert == "") != (g.tlsKey == "") {
		return "", nil, usagef("", "--tls-cert and --tls-key go together")
	}
	if g.tlsCA == "" && g.tlsCert == "" {
		return token, nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if g.tlsCA != "" {
		b, err := os.ReadFile(g.tlsCA)
		if err != nil {
			return "", nil, usagef("", "--tls-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return "", nil, usagef("", "--tls-ca %s: no PEM certificate", g.tlsCA)
		}
		cfg.RootCAs = pool
	}
	if g.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(g.tlsCert, g.tlsKey)
		if err != nil {
			return "", nil, usagef("", "--tls-cert/--tls-key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return token, cfg, nil
}
