package wire

// Refusal is the JSON body of every refused commit (and of other refused
// device requests): a human message, a machine-readable reason the box acts
// on, and for an unfinished upload the offset the receiver holds.
type Refusal struct {
	Error  string `json:"error"`
	Reason string `json:"reason,omitempty"`
	Offset *int64 `json:"offset,omitempty"`
}

// The reasons a commit is refused, with the status each comes with. The
// box's uploader decides by reason: resume, start a fresh upload, retry
// later, or quarantine the segment.
const (
	ReasonNotFound       = "not-found"       // 404: no such upload for this device
	ReasonIncomplete     = "incomplete"      // 409: upload not finished; Offset says how far
	ReasonMismatch       = "mismatch"        // 409: the upload's bytes are not the announced size/SHA-256
	ReasonExists         = "exists"          // 409: this segment is stored with other bytes
	ReasonChain          = "chain"           // 409: the segment does not link to its stored neighbours
	ReasonForeignKey     = "foreign-key"     // 403: signed by a key this device is not enrolled with
	ReasonKeyCompromised = "key-compromised" // 403: signed by a key of this device revoked as compromised before the segment arrived
	ReasonDeviceInactive = "device-inactive" // 403: the device is revoked or not active (not the segment's fault)
	ReasonCorrupt        = "corrupt"         // 422: the segment does not verify
	ReasonBadRequest     = "bad-request"     // 400: malformed request
	ReasonNoCertificate  = "no-certificate"  // 401: no device certificate
	ReasonQuota          = "quota"           // 413: the device's unfinished-upload quota is used up
	ReasonBusy           = "busy"            // 503: try again after Retry-After
	ReasonInternal       = "internal"        // 500: the receiver's fault; retry later
)
