package uploader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/uploadbox/uploadbox/wire"
)

// action is what the uploader does after the receiver refused a request.
type action int

const (
	// actLater: keep the segment and its upload, back off, try again.
	actLater action = iota
	// actResume: the upload is unfinished; resume it at the receiver's offset.
	actResume
	// actFresh: the upload is unusable (gone, or not the segment's bytes);
	// upload the same local file again under a new upload, at most
	// spool.MaxFreshStarts times, then quarantine.
	actFresh
	// actQuarantine: the receiver refuses the segment itself for good; keep
	// the file, record why, go on with the segments after it.
	actQuarantine
	// actDeviceRefused: the receiver refuses this box (its enrollment),
	// not the segment: keep the segment queued, raise an alert, back off.
	actDeviceRefused
)

func (a action) String() string {
	return [...]string{"retry later", "resume", "fresh upload", "quarantine", "device refused"}[a]
}

// decide maps a refusal to an action: by the receiver's reason when it sent
// one (wire.Refusal), else by the HTTP status. atCommit says whether the
// refusal answered the commit (after the same connection's tus requests
// were accepted) or a tus request.
//
// Without a reason, a 403 at commit quarantines: a receiver that sends no
// reasons refuses a box that is not active at every tus request before
// any commit, so a 403 that reaches the commit is about the segment (signed
// by a key this device is not enrolled with). A 403 on a tus request is
// about the box and is never a reason to quarantine a segment.
func decide(status int, reason string, atCommit bool) action {
	switch reason {
	case wire.ReasonIncomplete:
		return actResume
	case wire.ReasonNotFound, wire.ReasonMismatch:
		return actFresh
	case wire.ReasonExists, wire.ReasonChain, wire.ReasonForeignKey, wire.ReasonKeyCompromised, wire.ReasonCorrupt:
		return actQuarantine
	case wire.ReasonDeviceInactive, wire.ReasonNoCertificate:
		return actDeviceRefused
	case wire.ReasonBusy, wire.ReasonInternal, wire.ReasonQuota, wire.ReasonBadRequest:
		return actLater
	}
	switch status {
	case http.StatusNotFound, http.StatusGone:
		return actFresh
	case http.StatusConflict:
		if atCommit {
			// mismatch (a fresh upload cures it) or exists/chain (it does
			// not): the bound on fresh starts quarantines the latter.
			return actFresh
		}
	case http.StatusUnauthorized:
		return actDeviceRefused
	case http.StatusForbidden:
		if atCommit {
			return actQuarantine
		}
		return actDeviceRefused
	case http.StatusUnprocessableEntity:
		return actQuarantine
	}
	return actLater
}

// ErrDeviceRefused is wrapped by a RefusedError whose cause is the box's
// own enrollment (revoked, not active, no certificate), not a segment.
var ErrDeviceRefused = errors.New("the receiver refuses this box: check its enrollment (uploadbox-receiver devices list)")

// RefusedError is a request the receiver refused and the uploader could
// not cure by itself now.
type RefusedError struct {
	Op      string // "commit", or the tus request's method
	Status  int
	Reason  string // the receiver's reason, if it sent one
	Message string
	Offset  *int64 // for an unfinished upload: the receiver's offset
	action  action
}

func (e *RefusedError) Error() string {
	r := ""
	if e.Reason != "" {
		r = ", " + e.Reason
	}
	msg := fmt.Sprintf("%s refused (HTTP %d%s): %s", e.Op, e.Status, r, e.Message)
	if e.action == actDeviceRefused {
		msg += " (" + ErrDeviceRefused.Error() + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrDeviceRefused) true for a refusal of the box.
func (e *RefusedError) Is(target error) bool {
	return target == ErrDeviceRefused && e.action == actDeviceRefused
}

// refusalOf reads a refusal body: wire.Refusal JSON, or (from a tus
// handler or a proxy) any text, kept as the message.
func refusalOf(op string, status int, body []byte, atCommit bool) *RefusedError {
	e := &RefusedError{Op: op, Status: status}
	var r wire.Refusal
	if err := json.Unmarshal(body, &r); err == nil && (r.Error != "" || r.Reason != "") {
		e.Reason, e.Message, e.Offset = r.Reason, r.Error, r.Offset
	} else {
		e.Message = strings.TrimSpace(string(bytes.ToValidUTF8(body, nil)))
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	e.action = decide(status, e.Reason, atCommit)
	return e
}
