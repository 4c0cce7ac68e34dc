package wire

// CommitRequest asks the receiver to take a finished upload
// (POST /v1/commit).
type CommitRequest struct {
	UploadID string `json:"upload_id"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"` // hex
}

// CommitResponse carries the signed receipt.
type CommitResponse struct {
	Receipt  string `json:"receipt"` // base64 of ReceiptSize bytes
	Key      string `json:"key"`
	Outcome  string `json:"outcome"`
	Repeated bool   `json:"repeated"`
}
