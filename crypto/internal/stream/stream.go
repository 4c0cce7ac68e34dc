// Package stream implements Cobblestone-256: c2sp.org/chunked-encryption
// instantiated with HKDF-Expand-SHA-512 and AES-256-GCM, unmodified.
//
// The Writer and Reader keep at most a few chunks in memory whatever the
// message size. The Reader releases only plaintext whose chunk authenticated,
// and once it fails it keeps failing.
package stream

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
)

const (
	// KeySize is the size of the input key and of the AES-256 key.
	KeySize = 32
	// SaltSize is the size of the random salt that starts the ciphertext.
	SaltSize = 24
	// CommitmentSize is the size of the key commitment after the salt.
	CommitmentSize = 32
	// PrefixSize is the fixed overhead before the first chunk.
	PrefixSize = SaltSize + CommitmentSize
	// ChunkSize is the plaintext size of every chunk but the last.
	ChunkSize = 16384
	// TagSize is the AES-GCM tag size.
	TagSize = 16
	// EncChunkSize is the ciphertext size of a full chunk.
	EncChunkSize = ChunkSize + TagSize

	nonceSize = 12
	aeadName  = "AEAD_AES_256_GCM"
	label     = "c2sp.org/chunked-encryption@v1+"
	// maxChunks is the spec's hard limit of 2^38 chunks.
	maxChunks = 1 << 38
)

var (
	// ErrKeySize means the input key is not KeySize bytes.
	ErrKeySize = errors.New("input key must be 32 bytes")
	// ErrCommitment means the key commitment does not match: wrong key,
	// wrong context, or a modified salt or commitment. No chunk was decrypted.
	ErrCommitment = errors.New("key commitment mismatch (wrong key or context, or modified header)")
	// ErrTruncated means the ciphertext ends before its final chunk.
	ErrTruncated = errors.New("ciphertext is truncated")
	// ErrAuth means a chunk failed authentication (modified, reordered or foreign data).
	ErrAuth = errors.New("chunk failed authentication")
	// ErrTrailing means data follows a valid final chunk.
	ErrTrailing = errors.New("data after the final chunk")
	// ErrTerminatorCut means the final chunk authenticated but the outer
	// terminator after it is cut short (see Reader.Cut): a truncation.
	ErrTerminatorCut = fmt.Errorf("%w: the final chunk is followed by a terminator cut short", ErrTruncated)
	// ErrTooLong means the message exceeds 2^38 chunks.
	ErrTooLong = errors.New("message exceeds 2^38 chunks")
)

// keys holds the per-message AEAD and base nonce.
type keys struct {
	aead  cipher.AEAD
	nonce [nonceSize]byte
}

// expand returns key || base nonce || commitment from HKDF-Expand-SHA-512.
func expand(inputKey, salt, context []byte) ([]byte, error) {
	if len(inputKey) != KeySize {
		return nil, fmt.Errorf("%w (got %d)", ErrKeySize, len(inputKey))
	}
	info := make([]byte, 0, len(label)+len(aeadName)+1+len(salt)+len(context))
	info = append(info, label...)
	info = append(info, aeadName...)
	info = append(info, 0)
	info = append(info, salt...)
	info = append(info, context...)
	out, err := hkdf.Expand(sha512.New, inputKey, string(info), KeySize+nonceSize+CommitmentSize)
	if err != nil {
		return nil, fmt.Errorf("derive chunk keys: %w", err)
	}
	return out, nil
}

// derive sets up the per-message AEAD and returns the commitment. The
// derived bytes are zeroed before return; the AEAD keeps its own expanded
// schedule, which Go does not let us clear.
func derive(inputKey, salt, context []byte) (*keys, [CommitmentSize]byte, error) {
	var commitment [CommitmentSize]byte
	out, err := expand(inputKey, salt, context)
	if err != nil {
		return nil, commitment, err
	}
	defer clear(out)
	block, err := aes.NewCipher(out[:KeySize])
	if err != nil {
		return nil, commitment, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, commitment, err
	}
	k := &keys{aead: aead}
	copy(k.nonce[:], out[KeySize:KeySize+nonceSize])
	copy(commitment[:], out[KeySize+nonceSize:])
	return k, commitment, nil
}

// DerivedForTest returns the derived AEAD key and base nonce, which the
// Wycheproof vectors publish. The format never exposes them.
func DerivedForTest(inputKey, salt, context []byte) (aeadKey, baseNonce []byte, err error) {
	out, err := expand(inputKey, salt, context)
	if err != nil {
		return nil, nil, err
	}
	return out[:KeySize], out[KeySize : KeySize+nonceSize], nil
}

func (k *keys) chunkNonce(dst *[nonceSize]byte, index uint64) {
	*dst = k.nonce
	// XOR the chunk number, big-endian, into the last 5 bytes (38 bits).
	for i := 0; i < 5; i++ {
		dst[nonceSize-1-i] ^= byte(index >> (8 * i))
	}
}

func (k *keys) seal(dst, plaintext []byte, index uint64) []byte {
	var n [nonceSize]byte
	k.chunkNonce(&n, index)
	return k.aead.Seal(dst, n[:], plaintext, nil)
}

func (k *keys) open(dst, ciphertext []byte, index uint64) ([]byte, error) {
	var n [nonceSize]byte
	k.chunkNonce(&n, index)
	return k.aead.Open(dst, n[:], ciphertext, nil)
}

func (k *keys) zero() {
	clear(k.nonce[:])
	k.aead = nil
}

func checkCommitment(want [CommitmentSize]byte, got []byte) error {
	if subtle.ConstantTimeCompare(want[:], got) != 1 {
		return ErrCommitment
	}
	return nil
}
