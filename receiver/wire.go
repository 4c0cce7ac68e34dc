package receiver

import "github.com/uploadbox/uploadbox/wire"

// Refusal is the JSON body of every refused device request; it is defined
// in package wire, which the box imports.
type Refusal = wire.Refusal

// The reasons a commit is refused (see package wire).
const (
	ReasonNotFound       = wire.ReasonNotFound
	ReasonIncomplete     = wire.ReasonIncomplete
	ReasonMismatch       = wire.ReasonMismatch
	ReasonExists         = wire.ReasonExists
	ReasonChain          = wire.ReasonChain
	ReasonForeignKey     = wire.ReasonForeignKey
	ReasonKeyCompromised = wire.ReasonKeyCompromised
	ReasonDeviceInactive = wire.ReasonDeviceInactive
	ReasonCorrupt        = wire.ReasonCorrupt
	ReasonBadRequest     = wire.ReasonBadRequest
	ReasonNoCertificate  = wire.ReasonNoCertificate
	ReasonQuota          = wire.ReasonQuota
	ReasonBusy           = wire.ReasonBusy
	ReasonInternal       = wire.ReasonInternal
)

// CommitRequest and CommitResponse are the commit's body and answer (see
// package wire).
type (
	CommitRequest  = wire.CommitRequest
	CommitResponse = wire.CommitResponse
)

// EnrollRequest and EnrollResponse are enrollment's body and answer (see
// package wire).
type (
	EnrollRequest  = wire.EnrollRequest
	EnrollResponse = wire.EnrollResponse
)

// EnrollProof is wire.EnrollProof: the message a box signs to prove it
// holds its key.
func EnrollProof(token string) []byte { return wire.EnrollProof(token) }
