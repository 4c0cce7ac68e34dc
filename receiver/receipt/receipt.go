// Package receipt is the receiver's name for the signed receipts defined
// in package wire (which the box imports): the encoding, signing and
// verification live there.
package receipt

import (
	"crypto/ed25519"

	"github.com/uploadbox/uploadbox/wire"
)

// Size is the length of an encoded receipt.
const Size = wire.ReceiptSize

// ErrInvalid marks a receipt that is malformed or not signed by the key.
var ErrInvalid = wire.ErrInvalidReceipt

// Receipt says: the receiver stored this segment of this device.
type Receipt = wire.Receipt

// Sign encodes and signs r with the receiver's receipt key.
func Sign(key ed25519.PrivateKey, r Receipt) ([]byte, error) { return wire.SignReceipt(key, r) }

// Verify checks b against the pinned receipt key as a receipt carrying
// the hash alg and returns its content.
func Verify(key ed25519.PublicKey, b []byte, alg wire.HashAlg) (*Receipt, error) {
	return wire.VerifyReceipt(key, b, alg)
}
