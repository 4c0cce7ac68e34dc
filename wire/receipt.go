package wire

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// A receipt is the receiver's signed statement that it stored one
// segment: the box wipes its local copy only after it checked a receipt
// for exactly those bytes against the receipt key pinned at enrollment.
//
// Encoding (all integers big-endian), ReceiptSize = 168 bytes:
//
//	device public key (32) || recording id (16) || sequence (8) ||
//	hash of the segment file (32) || size (8) || committed at, Unix ns (8) ||
//	Ed25519 signature (64) over DOMAIN || the 104 bytes before it
//
// The hash and the domain go together: v2, "uploadbox.receipt.v2" || 0x00,
// for the BLAKE3 segment hash (HashBLAKE3); v1, "uploadbox.receipt.v1" ||
// 0x00, for SHA-256 (HashSHA256), which older boxes commit with. A
// receipt signed under one domain never verifies under the other.
const (
	receiptBody = 32 + 16 + 8 + 32 + 8 + 8
	// ReceiptSize is the length of an encoded receipt.
	ReceiptSize = receiptBody + ed25519.SignatureSize
)

// HashAlg names the hash of a segment file that a commit and its
// receipt carry.
type HashAlg string

const (
	// HashBLAKE3 is the segment hash, BLAKE3-256 of the whole file
	// (docs/format.md §6): receipt v2.
	HashBLAKE3 HashAlg = "blake3"
	// HashSHA256 is SHA-256 of the whole file: receipt v1, for boxes
	// that do not announce HashBLAKE3.
	HashSHA256 HashAlg = "sha256"
)

// receiptDomain is the signing domain of a receipt carrying alg.
func receiptDomain(alg HashAlg) (string, error) {
	switch alg {
	case HashBLAKE3:
		return "uploadbox.receipt.v2\x00", nil
	case HashSHA256:
		return "uploadbox.receipt.v1\x00", nil
	}
	return "", fmt.Errorf("%w: unknown hash %q", ErrInvalidReceipt, alg)
}

// ErrInvalidReceipt marks a receipt that is malformed, not signed by the
// pinned key, or not for the segment it is checked against.
var ErrInvalidReceipt = errors.New("invalid receipt")

// Receipt says: the receiver stored this segment of this device.
type Receipt struct {
	Device      ed25519.PublicKey
	RecordingID [16]byte
	Sequence    uint64
	Alg         HashAlg  // which hash Hash is, and so the receipt's version
	Hash        [32]byte // of the segment file
	Size        int64
	Committed   time.Time
}

// signed is the message r's signature covers: its domain, then the
// receiptBody bytes of its encoding.
func (r *Receipt) signed() ([]byte, error) {
	domain, err := receiptDomain(r.Alg)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(domain)+receiptBody)
	b = append(b, domain...)
	b = append(b, r.Device...)
	b = append(b, r.RecordingID[:]...)
	b = binary.BigEndian.AppendUint64(b, r.Sequence)
	b = append(b, r.Hash[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Committed.UnixNano()))
	return b, nil
}

// SignReceipt encodes and signs r with the receiver's receipt key, under
// the domain of r.Alg.
func SignReceipt(key ed25519.PrivateKey, r Receipt) ([]byte, error) {
	if len(r.Device) != ed25519.PublicKeySize || r.Size < 0 {
		return nil, errors.New("receipt: bad device key or size")
	}
	msg, err := r.signed()
	if err != nil {
		return nil, err
	}
	body := msg[len(msg)-receiptBody:]
	return append(bytes.Clone(body), ed25519.Sign(key, msg)...), nil
}

// VerifyReceipt checks b against the pinned receipt key as a receipt
// carrying the hash alg (the version the caller's commit asked for) and
// returns its content.
func VerifyReceipt(key ed25519.PublicKey, b []byte, alg HashAlg) (*Receipt, error) {
	if len(b) != ReceiptSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidReceipt, len(b), ReceiptSize)
	}
	r := &Receipt{Device: bytes.Clone(b[:32]), Alg: alg}
	p := b[32:]
	copy(r.RecordingID[:], p[:16])
	r.Sequence = binary.BigEndian.Uint64(p[16:])
	copy(r.Hash[:], p[24:56])
	r.Size = int64(binary.BigEndian.Uint64(p[56:]))
	r.Committed = time.Unix(0, int64(binary.BigEndian.Uint64(p[64:]))).UTC()
	if r.Size < 0 {
		return nil, fmt.Errorf("%w: negative size", ErrInvalidReceipt)
	}
	msg, err := r.signed()
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(key, msg, b[receiptBody:]) {
		return nil, fmt.Errorf("%w: signature does not verify with the pinned receipt key as a %s receipt", ErrInvalidReceipt, alg)
	}
	return r, nil
}

// Matches reports whether the receipt is for exactly this segment: its
// file's hash sum of kind alg, and size.
func (r *Receipt) Matches(device ed25519.PublicKey, recording [16]byte, seq uint64, alg HashAlg, sum [32]byte, size int64) error {
	switch {
	case !r.Device.Equal(device):
		return fmt.Errorf("%w: for another device", ErrInvalidReceipt)
	case r.RecordingID != recording || r.Sequence != seq:
		return fmt.Errorf("%w: for recording %x segment %d, not %x segment %d", ErrInvalidReceipt, r.RecordingID, r.Sequence, recording, seq)
	case r.Alg != alg:
		return fmt.Errorf("%w: carries a %s hash, not %s", ErrInvalidReceipt, r.Alg, alg)
	case r.Hash != sum || r.Size != size:
		return fmt.Errorf("%w: for other bytes (size %d), not these (size %d)", ErrInvalidReceipt, r.Size, size)
	}
	return nil
}

// FormatReceiptKey is the receipt public key as the receiver sends it at
// enrollment and the box stores it (receipt.pub): standard base64 of the
// 32-byte Ed25519 key.
func FormatReceiptKey(pub ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub)
}

// ParseReceiptKey reads a receipt public key in FormatReceiptKey's form;
// surrounding white space is ignored.
func ParseReceiptKey(s string) (ed25519.PublicKey, error) {
	k, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(s))
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, errors.New("not a receipt key: want the base64 of a 32-byte Ed25519 public key")
	}
	return k, nil
}
