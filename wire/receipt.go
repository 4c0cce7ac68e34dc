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
//	SHA-256 of the segment file (32) || size (8) || committed at, Unix ns (8) ||
//	Ed25519 signature (64) over "uploadbox.receipt.v1" || 0x00 || the 104 bytes before it
const (
	receiptDomain = "uploadbox.receipt.v1\x00"
	receiptBody   = 32 + 16 + 8 + 32 + 8 + 8
	// ReceiptSize is the length of an encoded receipt.
	ReceiptSize = receiptBody + ed25519.SignatureSize
)

// ErrInvalidReceipt marks a receipt that is malformed, not signed by the
// pinned key, or not for the segment it is checked against.
var ErrInvalidReceipt = errors.New("invalid receipt")

// Receipt says: the receiver stored this segment of this device.
type Receipt struct {
	Device      ed25519.PublicKey
	RecordingID [16]byte
	Sequence    uint64
	SHA256      [32]byte
	Size        int64
	Committed   time.Time
}

func (r *Receipt) body() []byte {
	b := make([]byte, 0, len(receiptDomain)+receiptBody)
	b = append(b, receiptDomain...)
	b = append(b, r.Device...)
	b = append(b, r.RecordingID[:]...)
	b = binary.BigEndian.AppendUint64(b, r.Sequence)
	b = append(b, r.SHA256[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Committed.UnixNano()))
	return b
}

// SignReceipt encodes and signs r with the receiver's receipt key.
func SignReceipt(key ed25519.PrivateKey, r Receipt) ([]byte, error) {
	if len(r.Device) != ed25519.PublicKeySize || r.Size < 0 {
		return nil, errors.New("receipt: bad device key or size")
	}
	msg := r.body()
	return append(msg[len(receiptDomain):], ed25519.Sign(key, msg)...), nil
}

// VerifyReceipt checks b against the pinned receipt key and returns its
// content.
func VerifyReceipt(key ed25519.PublicKey, b []byte) (*Receipt, error) {
	if len(b) != ReceiptSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidReceipt, len(b), ReceiptSize)
	}
	r := &Receipt{Device: bytes.Clone(b[:32])}
	p := b[32:]
	copy(r.RecordingID[:], p[:16])
	r.Sequence = binary.BigEndian.Uint64(p[16:])
	copy(r.SHA256[:], p[24:56])
	r.Size = int64(binary.BigEndian.Uint64(p[56:]))
	r.Committed = time.Unix(0, int64(binary.BigEndian.Uint64(p[64:]))).UTC()
	if r.Size < 0 {
		return nil, fmt.Errorf("%w: negative size", ErrInvalidReceipt)
	}
	if !ed25519.Verify(key, r.body(), b[receiptBody:]) {
		return nil, fmt.Errorf("%w: signature does not verify with the pinned receipt key", ErrInvalidReceipt)
	}
	return r, nil
}

// Matches reports whether the receipt is for exactly this segment.
func (r *Receipt) Matches(device ed25519.PublicKey, recording [16]byte, seq uint64, sum [32]byte, size int64) error {
	switch {
	case !r.Device.Equal(device):
		return fmt.Errorf("%w: for another device", ErrInvalidReceipt)
	case r.RecordingID != recording || r.Sequence != seq:
		return fmt.Errorf("%w: for recording %x segment %d, not %x segment %d", ErrInvalidReceipt, r.RecordingID, r.Sequence, recording, seq)
	case r.SHA256 != sum || r.Size != size:
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
