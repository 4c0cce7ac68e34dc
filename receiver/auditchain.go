package receiver

import (
	stdcrypto "crypto"
	"crypto/ed25519"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
)

// auditChain is the receiver's audit chain, as the server, its checkpoint
// runner, the size guard and the audit commands use it: the file in the
// data directory (*audit.Log, with bbolt) or the one chain the receivers
// of a PostgreSQL database share (pgaudit.Chain). Both keep the same
// entries, hashed by the same rule, and verify them through the same code
// (internal/audit).
type auditChain interface {
	// Append writes e as the next entry (seq, time, prev and hash filled
	// in) durably before it returns.
	Append(e audit.Entry) (audit.Entry, error)
	// Entries returns the entries f selects, oldest first.
	Entries(f audit.Filter) ([]audit.Entry, error)
	// Size is the bytes the entries take (what --audit-max-bytes caps).
	Size() (int64, error)
	// Prune removes the entries older than retention, keeping the chain
	// verifiable from the first kept entry (and always the newest).
	Prune(retention time.Duration) (removed int, err error)
	// Checkpoint signs the head with signer, once the chain is verified
	// against the previous checkpoint; written false: the head had not
	// moved.
	Checkpoint(signer stdcrypto.Signer) (c audit.Checkpoint, written bool, err error)
	// VerifyAnchored verifies the chain and that it still holds what the
	// last checkpoint covers (signed by key, when key is not nil).
	VerifyAnchored(key ed25519.PublicKey) (audit.Report, error)
}

var _ auditChain = (*audit.Log)(nil)
