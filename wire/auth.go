package wire

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"

	"github.com/shoalgrid/shoal/op"
)

// Member authentication in the handshake.
//
// When a Conn's Options carry MemberKeys, a peer that claims the member role
// must prove that it holds one of them, and so must this side:
//
//	dialer   → Hello    {role member, nonce Nd, key ids it holds}
//	acceptor → HelloAck {nonce Na, chosen key id, proof A = MAC(k, "accept", transcript)}
//	dialer   → Auth     {proof D = MAC(k, "dial", transcript)}   (after checking A)
//	acceptor → Auth     {} or {err, code}                       (after checking D)
//
// The transcript holds both nonces (32 bytes from crypto/rand each), both
// names and the cluster name, so a recorded exchange proves nothing on
// another connection, and the two labels keep one side's proof from being
// reflected as the other's. Proofs are compared in constant time. The keys
// are handshake keys (see DeriveKey), never the raw cluster key.

// nonceSize is the size of each side's handshake nonce.
const nonceSize = 32

// keyIDSize is the size of a key's public identifier.
const keyIDSize = 8

// DeriveKey derives a purpose-specific 32-byte key from a cluster key
// (HMAC-SHA256 keyed with the cluster key over the purpose label), so that
// the handshake and the gossip encryption never use the same key.
func DeriveKey(clusterKey []byte, purpose string) []byte {
	h := hmac.New(sha256.New, clusterKey)
	h.Write([]byte("shoal key derivation v1\x00" + purpose))
	return h.Sum(nil)
}

// keyID is a key's public identifier: it lets two members holding several
// keys (during a rotation) pick one they share, and reveals nothing useful.
func keyID(k []byte) string {
	h := hmac.New(sha256.New, k)
	h.Write([]byte("shoal key id"))
	return string(h.Sum(nil)[:keyIDSize])
}

func newNonce() (string, error) {
	b := make([]byte, nonceSize)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("%w: random nonce: %v", op.ErrInternal, err)
	}
	return string(b), nil
}

// proof is the MAC one side sends: label says which side.
func proof(k []byte, label string, dialer, acceptor Hello) string {
	h := hmac.New(sha256.New, k)
	put := func(b []byte) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	put([]byte("shoal handshake v1 " + label))
	put([]byte(dialer.Nonce))
	put([]byte(acceptor.Nonce))
	put([]byte(dialer.Name))
	put([]byte(acceptor.Name))
	put([]byte(dialer.Cluster))
	return string(h.Sum(nil))
}

// chooseKey returns the first of keys whose id is in ids (concatenated
// key ids).
func chooseKey(keys [][]byte, ids string) ([]byte, string) {
	for _, k := range keys {
		id := keyID(k)
		for i := 0; i+keyIDSize <= len(ids); i += keyIDSize {
			if ids[i:i+keyIDSize] == id {
				return k, id
			}
		}
	}
	return nil, ""
}

// macEqual compares two MACs in constant time.
func macEqual(a, b string) bool { return hmac.Equal([]byte(a), []byte(b)) }

// refusal builds the error a refused peer reports, from the code and
// message in a HelloAck or Auth frame.
func refusal(addr net.Addr, h Hello) error {
	code := op.Code(h.Code)
	if code == op.OK || code.Sentinel() == op.ErrInternal && code != op.CodeInternal {
		code = op.CodeBadRequest
	}
	return op.Error(code, fmt.Sprintf("%s refused the connection: %s", addr, h.Err))
}

// acceptorProve runs the acceptor's side of member authentication after the
// peer's hello was checked: it sends the HelloAck carrying local's proof and
// verifies the dialer's. On failure the dialer is told why.
func acceptorProve(nc net.Conn, br *bufio.Reader, peer, local Hello, keys [][]byte) error {
	if len(peer.Nonce) != nonceSize {
		err := op.Errorf(op.CodeUnauthenticated, "this member requires the cluster key (--cluster-key-file) from members; %q sent none", peer.Name)
		refuse(nc, KindHelloAck, local, err)
		return err
	}
	k, id := chooseKey(keys, peer.Keys)
	if k == nil {
		err := op.Errorf(op.CodeUnauthenticated, "member %q holds no cluster key this member knows (different --cluster-key-file)", peer.Name)
		refuse(nc, KindHelloAck, local, err)
		return err
	}
	nonce, err := newNonce()
	if err != nil {
		refuse(nc, KindHelloAck, local, err)
		return err
	}
	local.Nonce, local.Keys = nonce, id
	local.Proof = proof(k, "accept", peer, local)
	if err := writeHello(nc, KindHelloAck, local); err != nil {
		return err
	}
	kind, _, body, err := readFrame(br, nil, 64<<10)
	if err != nil {
		return err
	}
	if kind != KindAuth {
		return malformed(fmt.Sprintf("handshake: got frame kind %d, want auth", kind), nil)
	}
	reply, err := DecodeHello(body)
	if err != nil {
		return err
	}
	if !macEqual(reply.Proof, proof(k, "dial", peer, local)) {
		err := op.Errorf(op.CodeUnauthenticated, "member %q failed the cluster key challenge", peer.Name)
		refuse(nc, KindAuth, Hello{}, err)
		return err
	}
	return writeHello(nc, KindAuth, Hello{Magic: Magic, Proto: ProtocolVersion})
}

// dialerProve runs the dialer's side after the HelloAck arrived: it checks
// the acceptor's proof, sends its own and waits for the verdict.
func dialerProve(nc net.Conn, br *bufio.Reader, local, peer Hello, keys [][]byte) error {
	if len(peer.Proof) == 0 || len(peer.Nonce) != nonceSize || len(peer.Keys) != keyIDSize {
		return op.Errorf(op.CodeUnauthenticated, "member %q at %s did not prove the cluster key (does it run without --cluster-key-file?)", peer.Name, nc.RemoteAddr())
	}
	k, _ := chooseKey(keys, peer.Keys)
	if k == nil || !macEqual(peer.Proof, proof(k, "accept", local, peer)) {
		return op.Errorf(op.CodeUnauthenticated, "member %q at %s failed the cluster key challenge (different --cluster-key-file)", peer.Name, nc.RemoteAddr())
	}
	if err := writeHello(nc, KindAuth, Hello{Magic: Magic, Proto: ProtocolVersion, Proof: proof(k, "dial", local, peer)}); err != nil {
		return err
	}
	kind, _, body, err := readFrame(br, nil, 64<<10)
	if err != nil {
		return err
	}
	if kind != KindAuth {
		return malformed(fmt.Sprintf("handshake: got frame kind %d, want auth", kind), nil)
	}
	verdict, err := DecodeHello(body)
	if err != nil {
		return err
	}
	if verdict.Err != "" {
		return refusal(nc.RemoteAddr(), verdict)
	}
	return nil
}

// refuse tells the peer why the handshake failed (best effort).
func refuse(nc net.Conn, kind Kind, local Hello, err error) {
	local.Magic, local.Proto = Magic, ProtocolVersion
	local.Nonce, local.Keys, local.Proof = "", "", ""
	local.Err = op.Message(err)
	code := op.CodeOf(err)
	if code == op.CodeInternal {
		code = op.CodeBadRequest // a refusal without a code
	}
	local.Code = uint16(code)
	_ = writeHello(nc, kind, local)
}
