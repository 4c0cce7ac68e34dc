package wire

// EnrollRequest is what a box sends, over TLS pinned to the CA's
// fingerprint and without a client certificate, to enroll
// (POST /v1/enroll). The token names the device.
type EnrollRequest struct {
	Token     string `json:"token"`
	DeviceKey string `json:"device_key"` // ubx-dev-pub-ed25519:…
	// Proof is the device key's Ed25519 signature over EnrollProof(token).
	Proof string `json:"proof"` // base64
}

// EnrollResponse carries what the box stores at enrollment.
type EnrollResponse struct {
	Certificate string   `json:"certificate"` // PEM
	CA          string   `json:"ca"`          // PEM
	ReceiptKey  string   `json:"receipt_key"` // FormatReceiptKey
	Recipients  []string `json:"recipients"`
	// TokenKey verifies viewer tokens: ubx-viewer-token-pub-ed25519:…
	// (absent from receivers older than viewer accounts).
	TokenKey string `json:"token_key,omitempty"`
}

// EnrollProof is the message a box signs to prove it holds its key.
func EnrollProof(token string) []byte { return []byte("uploadbox.enroll.v1\x00" + token) }
