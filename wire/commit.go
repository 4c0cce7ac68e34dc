package wire

import "encoding/hex"

// HashMetadata is the tus Upload-Metadata key with which a box announces
// at upload creation the segment hash its commit will carry: value
// "blake3" (HashBLAKE3). Without it the commit carries SHA-256 (a box of
// an older release).
const HashMetadata = "hash"

// CommitRequest asks the receiver to take a finished upload
// (POST /v1/commit). It carries exactly one hash of the segment file, the
// kind its upload announced: BLAKE3 (HashMetadata "blake3") or else
// SHA-256.
type CommitRequest struct {
	UploadID string `json:"upload_id"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256,omitempty"` // hex
	BLAKE3   string `json:"blake3,omitempty"` // hex: the segment hash (docs/format.md §6)
}

// CommitResponse carries the signed receipt.
type CommitResponse struct {
	Receipt  string `json:"receipt"` // base64 of ReceiptSize bytes
	Key      string `json:"key"`
	Outcome  string `json:"outcome"`
	Repeated bool   `json:"repeated"`
}

// Hash returns the hash the request carries: BLAKE3 when it has one, else
// SHA-256 (hex, as sent).
func (r CommitRequest) Hash() (HashAlg, string) {
	if r.BLAKE3 != "" {
		return HashBLAKE3, r.BLAKE3
	}
	return HashSHA256, r.SHA256
}

// NewCommitRequest is the commit of upload uploadID, size bytes whose
// hash of kind alg is sum.
func NewCommitRequest(uploadID string, size int64, alg HashAlg, sum [32]byte) CommitRequest {
	r := CommitRequest{UploadID: uploadID, Size: size}
	if alg == HashBLAKE3 {
		r.BLAKE3 = hex.EncodeToString(sum[:])
	} else {
		r.SHA256 = hex.EncodeToString(sum[:])
	}
	return r
}
