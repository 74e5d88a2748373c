package grid

import (
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"path"
	"strings"
	"sync"

	"github.com/hashicorp/memberlist"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// MinClusterKeySize is the smallest cluster key accepted, in bytes.
const MinClusterKeySize = 32

// Role is what a client token may do with the structures a Grant covers.
// Each role includes the ones below it.
type Role uint8

// Roles.
const (
	// RoleNone grants nothing.
	RoleNone Role = iota
	// RoleRead allows the operations that change nothing (Get, Size, ...).
	RoleRead
	// RoleWrite adds the operations that change state (Service.Mutates).
	RoleWrite
	// RoleAdmin adds destructive operations (a map's Clear, force-unlock;
	// see AdminOps).
	RoleAdmin
)

// String names the role as ParseRole reads it.
func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole reads "read", "write" or "admin".
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "read":
		return RoleRead, nil
	case "write":
		return RoleWrite, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("%w: role %q: want read, write or admin", ErrConfig, s)
}

// Grant gives Role on the structures whose names match Pattern (path.Match
// syntax: "*", "orders.*"). A token's role on a structure is the highest
// role of the grants that match its name.
type Grant struct {
	Pattern string
	Role    Role
}

// Token is a client credential: the secret a client presents (client.Config
// Token, gridctl --token-file or SHOAL_TOKEN) and what it may do.
type Token struct {
	// Name identifies the token in logs (never the secret).
	Name string
	// Secret is the token itself; at least 16 bytes.
	Secret string
	// Grants are the token's roles per structure pattern.
	Grants []Grant
}

// AdminOps may be implemented by a Service whose destructive operations
// need RoleAdmin rather than RoleWrite (force-unlock, destroy, ...).
type AdminOps interface {
	// AdminOp reports whether operation op needs RoleAdmin.
	AdminOp(op uint8) bool
}

// ReaderOps may be implemented by a Service with operations that write
// only bookkeeping a reader needs, such as registering or renewing an event
// listener: a token with RoleRead may run them although Mutates reports
// them (they are replicated like any mutation).
type ReaderOps interface {
	// ReaderOp reports whether operation op needs only RoleRead.
	ReaderOp(op uint8) bool
}

// security is a member's resolved authentication settings.
type security struct {
	// handshake holds the keys members prove in the handshake.
	handshake [][]byte
	// tokens maps the SHA-256 of each secret to its principal, so that a
	// lookup's timing says nothing about the secrets.
	tokens map[[32]byte]*principal
	// serverTLS and peerTLS encrypt accepted and dialled connections.
	serverTLS, peerTLS *tls.Config
}

// principal is an authenticated client's identity and grants. Its role per
// structure name is cached (bounded).
type principal struct {
	name   string
	grants []Grant

	mu    sync.Mutex
	cache map[string]Role
}

// maxRoleCache bounds a principal's cache of roles per structure name.
const maxRoleCache = 4096

// role returns the highest role p's grants give on structure name.
func (p *principal) role(name string) Role {
	p.mu.Lock()
	r, ok := p.cache[name]
	p.mu.Unlock()
	if ok {
		return r
	}
	r = RoleNone
	for _, g := range p.grants {
		if g.Role > r {
			if ok, _ := path.Match(g.Pattern, name); ok {
				r = g.Role
			}
		}
	}
	p.mu.Lock()
	if p.cache == nil {
		p.cache = map[string]Role{}
	}
	if len(p.cache) < maxRoleCache {
		p.cache[name] = r
	}
	p.mu.Unlock()
	return r
}

// newSecurity checks and resolves c's security settings.
func newSecurity(c Config) (*security, error) {
	s := &security{}
	for i, k := range c.ClusterKeys {
		if len(k) < MinClusterKeySize {
			return nil, fmt.Errorf("%w: cluster key %d is %d bytes, want at least %d random bytes", ErrConfig, i+1, len(k), MinClusterKeySize)
		}
		s.handshake = append(s.handshake, wire.DeriveKey(k, "handshake"))
	}
	if len(c.Tokens) > 0 && len(c.ClusterKeys) == 0 {
		return nil, fmt.Errorf("%w: client tokens need a cluster key: without one any peer can claim to be a member and skip them", ErrConfig)
	}
	if len(c.Tokens) > 0 {
		s.tokens = map[[32]byte]*principal{}
	}
	for i, t := range c.Tokens {
		if len(t.Secret) < 16 {
			return nil, fmt.Errorf("%w: token %d (%q) is shorter than 16 bytes", ErrConfig, i+1, t.Name)
		}
		h := sha256.Sum256([]byte(t.Secret))
		if _, dup := s.tokens[h]; dup {
			return nil, fmt.Errorf("%w: token %d (%q) is listed twice", ErrConfig, i+1, t.Name)
		}
		for _, g := range t.Grants {
			if _, err := path.Match(g.Pattern, ""); err != nil || g.Pattern == "" {
				return nil, fmt.Errorf("%w: token %q: pattern %q is not valid", ErrConfig, t.Name, g.Pattern)
			}
			if g.Role > RoleAdmin {
				return nil, fmt.Errorf("%w: token %q: unknown role %d", ErrConfig, t.Name, g.Role)
			}
		}
		name := t.Name
		if name == "" {
			name = fmt.Sprintf("token-%d", i+1)
		}
		s.tokens[h] = &principal{name: name, grants: t.Grants}
	}
	s.serverTLS, s.peerTLS = c.TLS, c.PeerTLS
	if s.peerTLS == nil && s.serverTLS != nil {
		return nil, fmt.Errorf("%w: TLS needs PeerTLS too (how this member dials the others)", ErrConfig)
	}
	return s, nil
}

// gossipKeyring returns memberlist's keyring: one AES-256 key derived from
// each cluster key, the first one primary (used to encrypt), all accepted.
func gossipKeyring(keys [][]byte) (*memberlist.Keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var derived [][]byte
	for _, k := range keys {
		derived = append(derived, wire.DeriveKey(k, "gossip"))
	}
	return memberlist.NewKeyring(derived, derived[0])
}

// authorize is wire.Options.Authorize of accepted connections: members
// (whose key proof wire checks) need no token; clients need a valid token
// when tokens are configured.
func (s *security) authorize(h wire.Hello) (any, error) {
	if h.Role == wire.RoleMember || s.tokens == nil {
		return nil, nil
	}
	if h.Token == "" {
		return nil, op.Error(op.CodeUnauthenticated, "this cluster requires a client token (--token-file or SHOAL_TOKEN)")
	}
	p := s.tokens[sha256.Sum256([]byte(h.Token))]
	if p == nil {
		return nil, op.Error(op.CodeUnauthenticated, "unknown client token")
	}
	return p, nil
}

// checkAccess refuses req from connection c when c's peer may not run it.
// Members may run anything; clients never run the core's reserved
// operations; a client with a token needs the role the operation requires.
func (m *Member) checkAccess(c *wire.Conn, req *op.Request) error {
	if c.Peer().Role == wire.RoleMember {
		return nil
	}
	if req.Op >= op.OpReservedMin {
		return op.Errorf(op.CodeForbidden, "operation %d is reserved for members", req.Op)
	}
	p, _ := c.Principal().(*principal)
	if p == nil {
		return nil
	}
	need := RoleRead
	var svc op.Service
	if i, ok := m.svcIndex[req.Service]; ok {
		svc = m.services[i]
	} else if ws := m.wideService(req.Service); ws != nil {
		svc = ws.svc
	}
	if svc != nil {
		r, isReader := svc.(ReaderOps)
		switch a, isAdmin := svc.(AdminOps); {
		case isAdmin && a.AdminOp(req.Op):
			need = RoleAdmin
		case svc.Mutates(req.Op) && !(isReader && r.ReaderOp(req.Op)):
			need = RoleWrite
		}
	}
	if got := p.role(req.Name); got < need {
		return op.Errorf(op.CodeForbidden, "token %q has role %s on %q, operation %d of %s needs %s", p.name, got, req.Name, req.Op, req.Service, need)
	}
	return nil
}

// ErrClusterKey is wrapped (with op.ErrUnauthenticated) by Start's error
// when the seeds refuse this member's gossip because it holds another
// cluster key, or none while they have one (or the reverse).
var ErrClusterKey = op.Error(op.CodeUnauthenticated, "the seeds use a different cluster key (or none): check --cluster-key-file on every member")

// isKeyMismatch reports whether a memberlist join error comes from gossip
// encryption that does not match.
func isKeyMismatch(err error) bool {
	if err == nil {
		return false
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "decrypt") || strings.Contains(s, "encrypt")
}
