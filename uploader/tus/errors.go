package tus

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/uploadbox/uploadbox/internal/netfail"
)

var (
	// ErrMetadata reports a metadata key that tus cannot carry.
	ErrMetadata = errors.New("tus: invalid metadata")
	// ErrProtocol reports a response that breaks the tus protocol: a missing
	// or malformed header, a foreign Location, an offset that moved backwards.
	ErrProtocol = errors.New("tus: protocol violation")
	// ErrGaveUp reports that Upload stopped retrying (attempts or time budget
	// spent); the wrapped error is the last failure.
	ErrGaveUp = errors.New("tus: giving up")
)

// bodySnippetLen is how much of an error response body StatusError keeps.
const bodySnippetLen = 512

// StatusError is an unexpected HTTP status from the tus server.
type StatusError struct {
	Method     string
	URL        string
	StatusCode int
	// Body is the start of the response body (at most 512 bytes), for logs.
	Body string
	// RetryAfter is the response's Retry-After header, if any.
	RetryAfter string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("tus: %s %s: status %d %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		msg += ": " + fmt.Sprintf("%q", e.Body)
	}
	return msg
}

// Temporary reports whether retrying the request later may succeed: server
// errors, 423 Locked, 409 offset mismatch, 460 checksum mismatch, 408, 429,
// and tusd's 400 ERR_UPLOAD_INTERRUPTED.
func (e *StatusError) Temporary() bool {
	// tusd answers 400 ERR_UPLOAD_INTERRUPTED when another request for the
	// upload took its lock: after a cut, the server-side ghost of the dead
	// request can do that to the live PATCH. Resuming is safe and needed.
	if e.StatusCode == http.StatusBadRequest && strings.HasPrefix(e.Body, "ERR_UPLOAD_INTERRUPTED") {
		return true
	}
	return retryableStatus(e.StatusCode)
}

func retryableStatus(code int) bool {
	switch code {
	case http.StatusLocked, http.StatusConflict, 460, http.StatusTooManyRequests, http.StatusRequestTimeout:
		return true
	}
	return code >= 500
}

// CertificateRefused reports whether the server refused this client's
// certificate in the TLS handshake (a remote alert: bad, revoked, expired
// or unknown certificate, unknown CA, certificate required). Retrying
// does not help until the client's enrollment is fixed. crypto/tls does
// not export the alert type, so its text is matched.
func CertificateRefused(err error) bool { return netfail.CertificateRefused(err) }

func protocolErr(method, url, format string, args ...any) error {
	return fmt.Errorf("%w: %s %s: %s", ErrProtocol, method, url, fmt.Sprintf(format, args...))
}
